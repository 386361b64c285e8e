"""Dataset conventions, chosen by name (``--dataset``): a small registry.

A dataset is a class with a ``name`` and the settings its community uses (:attr:`Dataset.settings`,
field name -> value; :func:`common.config.resolve_settings` applies them to every section of a
command that has a field of that name, below config files and flags). Adding one is one subclass
and one :func:`register_dataset`.

Registered: ``thumos14`` (train on ``validation``, test on ``test``, per-class detections) and
``activitynet`` (v1.3: train on ``training``, test on ``validation``, class-agnostic proposals
fused with video-level classes, every video rescaled to 100 positions, proposals up to 100 long).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = ["Dataset", "Thumos14", "ActivityNet", "register_dataset", "get_dataset", "dataset_names",
           "detect_dataset"]


class Dataset:
    """Conventions of one dataset.

    Attributes:
        name: what ``--dataset`` calls it.
        train_subset, test_subset: subsets trained and tested on.
        settings: field name -> value the dataset's practice uses (the training subset included).
    """

    name: ClassVar[str] = ""
    train_subset: ClassVar[str] = "validation"
    test_subset: ClassVar[str] = "test"
    settings: ClassVar[dict[str, Any]] = {}

    @classmethod
    def matches(cls, subsets: Iterable[str]) -> bool:
        """Whether annotations with these subset names look like this dataset's."""
        return False

    @classmethod
    def presets(cls) -> dict[str, Any]:
        """The settings with the training subset (field ``subset``)."""
        return {"subset": cls.train_subset} | dict(cls.settings)


_REGISTRY: dict[str, type[Dataset]] = {}


def register_dataset(cls: type[Dataset]) -> type[Dataset]:
    """Add a dataset (usable as a class decorator); a name registered twice is an error."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"dataset name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def dataset_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_dataset(name: str) -> type[Dataset]:
    """The dataset called ``name`` (any case); ValueError naming the known ones otherwise."""
    found = _REGISTRY.get(str(name).casefold())
    if found is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)}")
    return found


def detect_dataset(subsets: Iterable[str]) -> type[Dataset]:
    """The registered dataset whose subset names these are (the last registered that matches wins;
    THUMOS14 when none does)."""
    subsets = [str(s) for s in subsets]
    for cls in reversed(list(_REGISTRY.values())):
        if cls.matches(subsets):
            return cls
    return Thumos14


@register_dataset
class Thumos14(Dataset):
    """THUMOS14: 20 classes; train on the validation videos, test on the test videos."""

    name = "thumos14"
    train_subset = "validation"
    test_subset = "test"
    settings = {"mode": "thumos"}


@register_dataset
class ActivityNet(Dataset):
    """ActivityNet v1.3: train on training, test on validation; BMN/BSN practice of a fixed temporal
    scale of 100 and class-agnostic proposals fused with video-level classification."""

    name = "activitynet"
    train_subset = "training"
    test_subset = "validation"
    settings = {"mode": "anet", "temporal_scale": 100, "max_duration": 100}

    @classmethod
    def matches(cls, subsets: Iterable[str]) -> bool:
        return "training" in {s.casefold() for s in subsets}
