"""Refactored feature files: a stage-1 checkpoint applied to every feature file of a folder.

A refactored file keeps the feature-file layout of CONVENTIONS.md (written by
:func:`extract.features.write_features`) with two datasets in place of the streams: ``action``
(T, action_dim) and ``cooccurrence`` (T, cooc_dim) (only ``action`` for the action-only ablation);
:func:`extract.read_features` concatenates them in that order, so a consumer reads f' exactly as it
reads raw features. All attributes are copied, plus ``refactor`` (JSON: checkpoint path and sha256).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.fileio import sha256_file
from extract.features import FeatureFileError, read_features, write_features
from refactor.errors import RefactorError, check_feature_folder
from refactor.train import load_refactor

__all__ = ["apply_refactor"]


def _read_input(path: Path, streams: tuple[str, ...], in_dim: int):
    """The feature file ``path`` as the checkpoint reads it; :class:`RefactorError` or
    :class:`~extract.features.FeatureFileError` saying why not."""
    ff = read_features(path, streams)
    if ff.features.shape[1] != in_dim:
        raise RefactorError(f"{path.name}: {ff.features.shape[1]}-d features, the checkpoint expects {in_dim}")
    if not np.all(np.isfinite(ff.features)):
        raise RefactorError(f"{path.name}: features contain NaN or inf")
    return ff


@torch.no_grad()
def apply_refactor(checkpoint: str | os.PathLike, feature_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   overwrite: bool = False, progress: bool | None = None,
                   failures: dict[Path, str] | None = None) -> list[Path]:
    """Write f' feature files for every ``*.h5`` in ``feature_dir`` (skips existing unless ``overwrite``).

    Args:
        failures: if given, a file that cannot be used (unreadable, another feature dimension, NaN)
            is recorded here (path -> reason, one line) and the other files are still written;
            otherwise the first one raises :class:`RefactorError`.

    Returns:
        the files written, in name order.

    Raises:
        RefactorError: ``feature_dir`` is not an existing folder or holds no ``*.h5``, or an unusable
            checkpoint (and, without ``failures``, an unusable feature file).
    """
    files = sorted(check_feature_folder(feature_dir).glob("*.h5"))
    if not files:
        raise RefactorError(f"no feature files (*.h5) in {feature_dir}")
    model, ckpt = load_refactor(checkpoint)
    streams = tuple(ckpt["feature_layout"]["streams"])
    in_dim = model.config.in_dim
    record = json.dumps({"checkpoint": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint)})
    out_dir = Path(out_dir)
    written = []
    for path in tqdm(files, desc="refactor apply", unit="video",
                     disable=(progress is False) or (progress is None and not sys.stderr.isatty())):
        dest = out_dir / path.name
        if dest.exists() and not overwrite:
            continue
        try:
            ff = _read_input(path, streams, in_dim)
        except (RefactorError, FeatureFileError) as exc:
            if failures is None:
                raise
            failures[path] = str(exc)
            continue
        out = model(torch.from_numpy(ff.features).T[None])                 # (1, C, T) in, components (1, D, T)
        components = {"action": out.action[0].T.numpy()}
        if not model.config.action_only:
            components["cooccurrence"] = out.cooccurrence[0].T.numpy()
        attrs = {"weights": {}, **ff.attrs, "refactor": record}
        write_features(dest, components, attrs)
        written.append(dest)
    return written
