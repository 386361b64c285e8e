"""The README starts with exactly two set-up commands, and CI runs the second one verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_two_setup_commands():
    first, second = setup_commands()
    assert "python -m detect.demo" in first and "-e ." in first
    assert "python -m pytest" in second and ".[test]" in second


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [setup_commands()[1]]


def test_every_package_runs_as_a_module():
    import subprocess
    import sys

    names = ("extract", "weights", "evaluate", "refactor", "detect")
    procs = {name: subprocess.Popen([sys.executable, "-m", name, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name in names}   # side by side: 2x faster
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "usage: python -m " + name in out, err
