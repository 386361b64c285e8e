"""benchmarks/world_ablation.py's world flags: any WorldConfig field but the seed, over the demo's world, each
world in its own work folder."""

import argparse

import pytest

from benchmarks.world_ablation import WORLD_SECTION, main, world_settings
from common.config import add_section_arguments
from detect.demo import DEMO_WORLD


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_section_arguments(p, WORLD_SECTION)
    return p.parse_args(argv)


def test_no_flags_is_the_demo_world_in_the_demo_folder():
    assert world_settings(_parse([])) == (DEMO_WORLD, "demo")
    # a flag equal to the demo's value changes nothing either (the folder is the demo's)
    assert world_settings(_parse(["--test-videos", str(DEMO_WORLD.test_videos)])) == (DEMO_WORLD, "demo")


def test_flags_set_fields_over_the_demo_world_and_name_a_folder_of_their_own():
    world, folder = world_settings(_parse(["--train-videos", "48", "--num-classes", "6", "--context", "2,5"]))
    assert (world.train_videos, world.num_classes, world.context) == (48, 6, (2.0, 5.0))
    assert world.test_videos == DEMO_WORLD.test_videos == 12 and world.seed == DEMO_WORLD.seed   # the demo's, kept
    assert folder.startswith("world-") and folder != "demo"
    # the same settings in another order: the same folder; other settings: another
    assert world_settings(_parse(["--num-classes", "6", "--context", "2,5", "--train-videos", "48"]))[1] == folder
    assert world_settings(_parse(["--train-videos", "48", "--num-classes", "5"]))[1] not in (folder, "demo")


def test_a_bad_world_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--num-classes", "9", "--seeds", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "num_classes must be in [1, 8], got 9" in err
    with pytest.raises(SystemExit):
        main(["--seed", "3"])                          # the seed is --seeds', not a world flag
