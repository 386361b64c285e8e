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
    """Optimisation and sampling (paper §4.1: Adam, lr 1e-3; 20 epochs), and validation.

    Attributes:
        epochs: training epochs.
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay.
        batch_size: windows per step (per process under torchrun).
        window: training window, snippets.
        overlap: overlap of consecutive training windows (fraction).
        seed: seed of the initialisation and of every random stream.
        subset: training subset (THUMOS14: validation; ActivityNet: training).
        device: cpu, cuda, cuda:N.
        gamma: weight of the end-boundary loss.
        actionness_weight: BSN's actionness loss weight (0: the paper's L_P).
        lambda_com: weight of the completeness loss in L_D.
        lambda_reg: weight of the regression loss in L_D.
        proposals_per_window: head samples per window, split by ``ratio``.
        ratio: foreground : incomplete : background head samples.
        jitter_per_instance: jittered copies of each ground-truth instance in the candidate pool.
        random_per_window: random segments in the candidate pool of a window.
        model_proposals: the model's own proposals in the candidate pool of a window.
        pair_batch: RefactorNet (action, coupling) pairs per step (stage 2 only).
        val_subset: evaluate average mAP on this subset's feature files during training and keep the
            best checkpoint (None: no validation).
        val_every: validate every this many epochs (and after the last).
        val_tiou: tIoU thresholds of the validation mAP (start:stop:step or a comma list).
        context_folds: front "context" only: train on cross-fitted scores, each training video scored by
            scorers learnt (with the context-score checkpoints' settings) without its fold of this many folds
            (:func:`refactor.context.crossfit_scorers`), so the detector learns how far to trust the scores
            on videos the scorer did not see; the checkpoints' scorers, learnt on all training videos, stay
            in the model for validation and ``detect run``. 0: train on the checkpoints' own scores.
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
    val_subset: str | None = None
    val_every: int = 1
    val_tiou: str = "0.3:0.7:0.1"
    context_folds: int = 0

    def __post_init__(self) -> None:
        self.ratio = tuple(int(r) for r in self.ratio)
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.window < 2:
            raise ValueError(f"bad training configuration: {self}")
        if self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {self.val_every}")
        if self.context_folds < 0 or self.context_folds == 1:
            raise ValueError(f"context_folds must be 0 (off) or >= 2, got {self.context_folds}")


@dataclass
class InferenceConfig:
    """Post-processing.

    Attributes:
        mode: "thumos" (per-class detections) or "anet" (class-agnostic proposals fused with
            video-level classification scores).
        sigma: Gaussian Soft-NMS parameter.
        top_k: detections kept per video (none: 200 for thumos, 100 for anet).
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
