"""Score summaries, the ROC curve and its plot (matplotlib, Agg: no display needed), and the
finish every evaluation plot shares (``save_figure``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def score_summary(values: np.ndarray) -> dict[str, float | int]:
    """Count, mean, std, min, max and percentiles of a score array (for calibration later)."""
    if len(values) == 0:
        return {"count": 0}
    summary: dict[str, float | int] = {
        "count": len(values),
        "mean": round(float(np.mean(values)), 5),
        "std": round(float(np.std(values)), 5),
        "min": round(float(np.min(values)), 5),
        "max": round(float(np.max(values)), 5),
    }
    for q, v in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True):
        summary[f"p{q}"] = round(float(v), 5)
    return summary


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, threshold) at every distinct score, thresholds descending: accepting
    ``score >= threshold`` gives that FAR and TAR. Starts at (0, 0, +inf)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_same = scores[order], same[order]
    true_accepts = np.cumsum(sorted_same)
    false_accepts = np.cumsum(~sorted_same)
    # the last index of each run of equal scores: ties are accepted together
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    positives, negatives = max(int(same.sum()), 1), max(int((~same).sum()), 1)
    far = np.r_[0.0, false_accepts[last] / negatives]
    tar = np.r_[0.0, true_accepts[last] / positives]
    thresholds = np.r_[np.inf, sorted_scores[last]]
    return far, tar, thresholds


@dataclass(frozen=True)
class CurveMark:
    """A labelled point on the ROC plot."""

    label: str
    far: float
    tar: float


def plot_roc(
    path: Path,
    scores: np.ndarray,
    same: np.ndarray,
    marks: Sequence[CurveMark] = (),
    *,
    title: str = "ROC",
    far_lines: Sequence[float] = (1e-2, 1e-3),
) -> None:
    """ROC with a log-scale FAR axis, dotted lines at ``far_lines`` and the ``marks``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = roc_curve(scores, same)
    negatives = max(int((~same).sum()), 1)
    floor = 0.5 / negatives  # FAR 0 cannot sit on a log axis: draw it at half of one impostor
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    try:
        ax.step(np.maximum(far, floor), tar, where="post", color="tab:blue", lw=1.5)
        for line in far_lines:
            ax.axvline(line, color="grey", ls=":", lw=1)
        colours = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown")
        for mark, colour in zip(marks, colours * (len(marks) // len(colours) + 1), strict=False):
            ax.plot([max(mark.far, floor)], [mark.tar], "o", color=colour, ms=6, label=mark.label)
        low = float(tar[np.searchsorted(far, min(far_lines, default=1e-3), side="right") - 1])
        ax.set_xscale("log")
        ax.set_xlim(min([floor, *(0.5 * line for line in far_lines)]), 1.0)
        ax.set_ylim(max(0.0, np.floor(low * 20) / 20 - 0.05), 1.002)
        ax.set_xlabel("false accept rate (impostor pairs accepted)")
        ax.set_ylabel("true accept rate (genuine pairs accepted)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if marks:
            ax.legend(loc="lower right", fontsize=8)
        save_figure(fig, path)
    finally:
        plt.close(fig)


def save_figure(fig: Figure, path: Path, *, title: str | None = None) -> None:
    """Title ``fig`` (if given), lay it out and write it to ``path``, its folder made."""
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
