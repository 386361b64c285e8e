"""The settings sections of ``detect train`` / ``run`` / ``video`` (:mod:`common.config`): which
dataclass each is, which fields the program fills in itself, and the historical flag names.

``detect train --config FILE`` reads ``{model: {...}, train: {...}, inference: {...}}``:

* ``model``: :class:`detect.model.DetectorConfig` (``in_dim``, ``num_classes``, ``refactor`` and
  ``context_scores`` come from the data, the stage-1 checkpoint and the context-score checkpoints);
* ``train``: :class:`detect.config.TrainConfig`;
* ``inference``: :class:`detect.config.InferenceConfig` (recorded in the checkpoint; used by
  validation; its ``batch_size`` is ``--inference-batch-size`` under ``train``, ``--batch-size``
  under ``run`` and ``video``).
"""

from __future__ import annotations

from common.config import Section, effective_settings
from detect.config import MODES, InferenceConfig, TrainConfig
from detect.fronts import front_names
from detect.model import DetectorConfig

__all__ = ["model_section", "TRAIN", "train_inference_section", "RUN_INFERENCE", "train_sections",
           "detector_settings"]

TRAIN = Section("train", TrainConfig)
RUN_INFERENCE = Section("inference", InferenceConfig, choices={"mode": MODES})


def model_section() -> Section:
    """The ``model`` section (its ``front`` choices: the fronts registered now)."""
    return Section("model", DetectorConfig, exclude=("in_dim", "num_classes", "refactor", "context_scores"),
                   choices={"front": front_names()})


def train_inference_section() -> Section:
    return Section("inference", InferenceConfig, flags={"batch_size": "--inference-batch-size"},
                   choices={"mode": MODES})


def train_sections() -> list[Section]:
    return [model_section(), TRAIN, train_inference_section()]


def detector_settings(config: DetectorConfig, train: TrainConfig, inference: InferenceConfig) -> dict[str, dict]:
    """``{model, train, inference}`` of a training run (every settable field): the effective settings a
    checkpoint stores and ``--print-config`` prints."""
    model, _, infer = train_sections()
    return effective_settings([(model, config), (TRAIN, train), (infer, inference)])
