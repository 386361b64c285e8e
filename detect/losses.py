"""The detector's training losses, and the proposals its heads are trained on.

One step on a batch of windows (:func:`detect.train.train_detector` runs them):

1. ``model.encode``: f' and the boundary logits; ``L_P = L_bl^s + γ L_bl^e + λ_a L_bl^a`` against
   BSN's boundary targets (γ = 1; the actionness term is BSN's, λ_a = 1, 0 gives the paper's
   ``L_P`` literally).
2. Proposals for the heads, per window (:func:`sample_head_proposals`): the model's own current
   proposals (no gradient; what the heads will see at inference), ground-truth instances with small
   random shifts and rescalings, and random segments; labelled by SSN's rules
   (:func:`detect.labels.assign_proposals`) and sampled foreground : incomplete : background = 1 : 6 : 1 (SSN).
3. ``L_D = L_cls + λ1 L_com + λ2 L_reg`` (λ1 = λ2 = 0.5, :func:`detector_losses`): cross-entropy over
   K + 1 classes on foreground and background proposals; hinge loss ``max(0, 1 - y s)`` on the
   completeness score of the instance's class, y = +1 for foreground and -1 for incomplete proposals;
   smooth-L1 on the regression targets of foreground proposals. Where one segment is annotated with
   several classes (THUMOS14's every CliffDiving instance is also a Diving instance) the
   classification target is uniform over them and the completeness hinge applies to each, so both
   classes are detected.

Coordinates are snippet indices of the window (:mod:`detect.labels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from detect.config import TrainConfig
from detect.labels import BACKGROUND, FOREGROUND, INCOMPLETE, assign_proposals, balanced_bce, encode_regression

__all__ = ["HeadSamples", "sample_head_proposals", "detector_losses"]


@dataclass
class HeadSamples:
    """Proposals sampled for the heads in one batch.

    Attributes:
        rois (ndarray[P, 3]): (window index, start, end), snippet-index coordinates of the window.
        kind (ndarray[P]): FOREGROUND / INCOMPLETE / BACKGROUND.
        label (ndarray[P]): class index (0-based), -1 for background.
        target (ndarray[P, 2]): matched instance (foreground, incomplete), NaN for background.
        classes (ndarray[P, K] bool | None): every class annotated on the matched instance's exact
            segment (THUMOS14 annotates each CliffDiving instance a second time as Diving); None:
            just ``label``.
    """

    rois: np.ndarray
    kind: np.ndarray
    label: np.ndarray
    target: np.ndarray
    classes: np.ndarray | None = None

    def class_sets(self, num_classes: int) -> np.ndarray:
        """ndarray[P, K] bool: the classes of each row (``classes``, or one-hot ``label``)."""
        if self.classes is not None:
            return self.classes
        out = np.zeros((len(self.label), num_classes), dtype=bool)
        rows = np.flatnonzero(self.label >= 0)
        out[rows, self.label[rows]] = True
        return out


def _jitter(segments: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random shifts (±10% of the duration) and rescalings (x e^±0.2) of each segment."""
    if len(segments) == 0 or n == 0:
        return np.zeros((0, 2))
    seg = np.repeat(segments, n, axis=0)
    c, d = seg.mean(axis=1), seg[:, 1] - seg[:, 0]
    c = c + rng.uniform(-0.1, 0.1, len(seg)) * d
    d = d * np.exp(rng.uniform(-0.2, 0.2, len(seg)))
    return np.stack([c - d / 2, c + d / 2], axis=1)


def sample_head_proposals(model_props: list[np.ndarray], gts: list[tuple[np.ndarray, np.ndarray]],
                          lengths: list[int], cfg: TrainConfig, max_duration: int,
                          rng: np.random.Generator, num_classes: int | None = None) -> HeadSamples:
    """Candidate pool per window (model proposals, jittered ground truth, the ground truth itself,
    random segments), clipped to the window, labelled by SSN's rules and sampled 1 : 6 : 1.

    Args:
        model_props: per window, (P_w, 2) proposals from the current boundary probabilities.
        gts: per window, (segments (G, 2) in window coordinates, labels (G,)).
        lengths: valid snippets per window.
        num_classes: K; given, ``classes`` lists every label annotated on a row's matched segment.
    """
    total = sum(cfg.ratio)
    quota = {FOREGROUND: cfg.proposals_per_window * cfg.ratio[0] // total,
             INCOMPLETE: cfg.proposals_per_window * cfg.ratio[1] // total,
             BACKGROUND: cfg.proposals_per_window * cfg.ratio[2] // total}
    rois, kinds, labels, targets, sets = [], [], [], [], []
    for w, (props, (segs, labs), n) in enumerate(zip(model_props, gts, lengths)):
        hi = max(n - 1, 1)
        starts = rng.uniform(0, hi, cfg.random_per_window)
        durs = np.exp(rng.uniform(0, np.log(max(max_duration, 1) + 1), cfg.random_per_window)) - 1 + 1e-3
        rand = np.stack([starts, starts + durs], axis=1)
        cand = np.concatenate([props.reshape(-1, 2).astype(np.float64), segs,
                               _jitter(segs, cfg.jitter_per_instance, rng), rand])
        cand = np.clip(cand, 0, hi)
        cand = cand[cand[:, 1] - cand[:, 0] > 1e-3]
        a = assign_proposals(cand, segs, labs, num_classes=num_classes)
        for kind, q in quota.items():
            idx = np.flatnonzero(a.kind == kind)
            if len(idx) > q:
                idx = rng.choice(idx, q, replace=False)
            rois.append(np.concatenate([np.full((len(idx), 1), w, dtype=np.float64), cand[idx]], axis=1))
            kinds.append(np.full(len(idx), kind))
            labels.append(a.label[idx])
            targets.append(a.segment[idx])
            if num_classes is not None:
                sets.append(a.classes[idx])
    return HeadSamples(np.concatenate(rois).reshape(-1, 3), np.concatenate(kinds), np.concatenate(labels),
                       np.concatenate(targets).reshape(-1, 2),
                       np.concatenate(sets) if num_classes is not None else None)


def detector_losses(enc, heads, samples: HeadSamples, boundary: torch.Tensor,
                    cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """L_P and L_D of one batch.

    Args:
        enc (Encoded), heads (HeadOutput): the model's outputs (heads on ``samples.rois``).
        boundary (Tensor[B, 3, T]): BSN targets (actionness, start, end) of the windows.

    Returns:
        dict of scalars: ``proposal`` (L_P), ``detection`` (L_D) and their parts ``start``,
        ``end``, ``actionness``, ``cls``, ``com``, ``reg``.
    """
    logits = enc.boundary_logits
    t = logits.shape[-1]
    mask = torch.arange(t, device=logits.device)[None, :] < enc.lengths[:, None]
    parts = {"actionness": balanced_bce(logits[:, 0], boundary[:, 0], mask),
             "start": balanced_bce(logits[:, 1], boundary[:, 1], mask),
             "end": balanced_bce(logits[:, 2], boundary[:, 2], mask)}
    parts["proposal"] = parts["start"] + cfg.gamma * parts["end"] + cfg.actionness_weight * parts["actionness"]
    dev = logits.device
    kind = torch.as_tensor(samples.kind, device=dev)
    zero = logits.new_zeros(())
    k = heads.completeness.shape[1]
    sets = torch.as_tensor(samples.class_sets(k), device=dev)                     # (P, K) bool
    cls_rows = (kind == FOREGROUND) | (kind == BACKGROUND)
    if cls_rows.any():
        # target distribution over K + 1: background, or uniform over the instance's classes
        target = torch.cat([(kind == BACKGROUND)[:, None], sets & (kind == FOREGROUND)[:, None]], dim=1)[cls_rows]
        target = target.to(heads.class_logits.dtype)
        parts["cls"] = F.cross_entropy(heads.class_logits[cls_rows], target / target.sum(dim=1, keepdim=True))
    else:
        parts["cls"] = zero
    com_rows = (kind == FOREGROUND) | (kind == INCOMPLETE)
    if com_rows.any():
        y = torch.where(kind[com_rows] == FOREGROUND, 1.0, -1.0).to(heads.completeness.dtype)[:, None]
        hinge = torch.clamp(1 - y * heads.completeness[com_rows], min=0)              # (P', K)
        mask = sets[com_rows]
        parts["com"] = (hinge * mask).sum() / mask.sum().clamp(min=1)
    else:
        parts["com"] = zero
    fg = kind == FOREGROUND
    if fg.any():
        rois = torch.as_tensor(samples.rois, dtype=logits.dtype, device=dev)[fg, 1:]
        target = encode_regression(rois, torch.as_tensor(samples.target, dtype=logits.dtype, device=dev)[fg])
        parts["reg"] = F.smooth_l1_loss(heads.regression[fg], target)
    else:
        parts["reg"] = zero
    parts["detection"] = parts["cls"] + cfg.lambda_com * parts["com"] + cfg.lambda_reg * parts["reg"]
    return parts
