"""Curves as PNG files: precision-recall (evaluate) and validation mask AP over training time (bench).

matplotlib's object API on an Agg canvas: no pyplot global state, no display needed, and matplotlib
is imported only when a curve is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Save precision/recall curves (e.g. ``CocoEvaluator.precision_recall``) as a PNG.

    The legend gives each curve's AP, the mean precision over its recall points (COCO's AP
    when the points are COCOeval's 101 recall thresholds).
    """
    fig, ax = new_axes((5, 4.5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=f"{name} (AP {np.nanmean(precision):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    return save(fig, ax, Path(path), legend_at="lower left")


def plot_learning_curves(curves: dict[str, list[tuple[float, float]]], path: str | Path) -> Path:
    """Validation mask AP against training time (minutes), one line per run."""
    fig, ax = new_axes((6, 4))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set(xlabel="training time (min)", ylabel="validation mask AP", title="Learning curves")
    return save(fig, ax, Path(path), legend_at="center right")


def new_axes(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save(fig, ax, path: Path, legend_at: str) -> Path:
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc=legend_at, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
