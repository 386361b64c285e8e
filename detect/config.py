"""Settings of detector training and inference, and the error both raise.

Kept apart from the code that uses them so that the checkpoint module (which records both) sits
below training and inference: :mod:`detect.checkpoint` imports this module, :mod:`detect.train`
and :mod:`detect.infer` import both, and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DetectorError", "TrainConfig", "InferenceConfig", "MODES"]

MODES = ("thumos", "anet")


class DetectorError(ValueError):
    """Unusable input for training or running the detector; the message says why in one line."""


@dataclass
class TrainConfig:
    """Optimisation and sampling (paper §4.1: Adam, lr 1e-3; 20 epochs).

    Attributes:
        window, overlap: training windows (snippets) and their overlap.
        batch_size: windows per step.
        gamma: weight of the end-boundary loss; actionness_weight: BSN's actionness term.
        lambda_com, lambda_reg: weights in L_D.
        proposals_per_window: head samples per window, split by ``ratio`` (fg : incomplete : bg).
        jitter_per_instance, random_per_window, model_proposals: candidate pool per window.
        pair_batch: RefactorNet (action, coupling) pairs per step (stage 2 only).
    """

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    window: int = 256
    overlap: float = 0.5
    seed: int = 0
    subset: str = "validation"
    device: str = "cpu"
    gamma: float = 1.0
    actionness_weight: float = 1.0
    lambda_com: float = 0.5
    lambda_reg: float = 0.5
    proposals_per_window: int = 32
    ratio: tuple[int, int, int] = (1, 6, 1)
    jitter_per_instance: int = 4
    random_per_window: int = 64
    model_proposals: int = 200
    pair_batch: int = 256

    def __post_init__(self) -> None:
        self.ratio = tuple(int(r) for r in self.ratio)
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.window < 2:
            raise ValueError(f"bad training configuration: {self}")


@dataclass
class InferenceConfig:
    """Post-processing.

    Attributes:
        mode: "thumos" (per-class detections) or "anet" (class-agnostic proposals fused with
            video-level classification scores).
        sigma: Gaussian Soft-NMS parameter.
        top_k: detections kept per video (None: 200 for thumos, 100 for anet).
        top_classes: anet mode, video-level classes per video.
        regress: refine proposal boundaries with the regression head.
        min_score: drop detections scoring at or below this before Soft-NMS.
        batch_size: videos per forward pass.
    """

    mode: str = "thumos"
    sigma: float = 0.5
    top_k: int | None = None
    top_classes: int = 2
    regress: bool = True
    min_score: float = 0.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        bad_top_k = self.top_k is not None and self.top_k < 1
        if self.sigma <= 0 or self.top_classes < 1 or self.batch_size < 1 or bad_top_k:
            raise ValueError(f"bad inference configuration: {self}")

    @property
    def keep(self) -> int:
        return self.top_k if self.top_k is not None else (200 if self.mode == "thumos" else 100)

    @classmethod
    def from_dict(cls, d: dict) -> InferenceConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
