"""Figure helpers shared by every package that draws: a display-free figure and an atomic PNG writer.

Every figure is a :class:`matplotlib.figure.Figure` rendered by the Agg canvas (no pyplot, no
global backend or state, safe without a display and in threads). :func:`save_figure` writes it
atomically: a PNG that exists is whole.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "GT_COLOR", "PRED_COLOR", "new_figure", "save_figure"]

DPI = 120
GT_COLOR = "#2b7a3d"     # ground truth, in every figure
PRED_COLOR = "#2c5d9e"   # predictions, in every figure


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches (constrained layout) on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a new temporary file in the same folder, created
    with the usual permissions, then renamed over ``path``); on failure ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
