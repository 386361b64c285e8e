"""Tables for people (percent) and RESULT.json files for programs (fractions, CONVENTIONS.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.fileio import atomic_path
from evaluate.detection import DetectionResult

__all__ = ["detection_table", "write_json"]


def detection_table(result: DetectionResult, per_class: bool = True) -> str:
    """mAP per tIoU threshold and their average, then AP per class and threshold, in percent."""
    head = "".join(f"{t:>8.2f}" for t in result.thresholds)
    lines = [f"{'tIoU':<22}{head}{'average':>9}",
             f"{'mAP (%)':<22}" + "".join(f"{100 * m:>8.2f}" for m in result.mAP) + f"{100 * result.average_mAP:>9.2f}"]
    if per_class:
        lines.append("")
        lines.append(f"{'AP (%) per class':<22}{head}{'average':>9}")
        for k, name in enumerate(result.classes):
            row = result.ap[:, k]
            lines.append(f"{name[:21]:<22}" + "".join(f"{100 * a:>8.2f}" for a in row) + f"{100 * row.mean():>9.2f}")
    return "\n".join(lines)


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return path
