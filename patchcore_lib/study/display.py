"""How the study shows metrics: axis labels, percent tables, y-ranges, mask contours."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullLocator

#: metric key -> axis label of the study's plots
METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO (FPR <= 0.3)"}


def percent_table(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """A copy of ``table`` with its metric columns (:data:`METRIC_NAMES`) in percent, ``decimals`` decimals."""
    shown = table.copy()
    for metric in METRIC_NAMES:
        if metric in shown:
            shown[metric] = (100 * shown[metric].astype(float)).round(decimals)
    return shown


def draw_contour(ax: Any, mask: np.ndarray | None, color: str = "red") -> None:
    """The 0.5 contour of a ground-truth mask on ``ax`` (nothing for an empty mask)."""
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2)


def metric_range(values: pd.Series) -> tuple[float, float]:
    """(low, high) y-limits in percent for metric values in [0, 1]: the values with a margin of at least
    half a point, capped at 100.5% (constant panels get a readable range, not one above 100%)."""
    finite = 100 * values.astype(float).dropna().to_numpy()
    if not len(finite):
        return 0.0, 100.5
    low, high = float(finite.min()), float(finite.max())
    pad = max(0.5, 0.15 * (high - low))
    return max(0.0, low - pad), min(100.5, high + pad)


#: the one colour of each method in every figure of the study (report, baselines, paper experiments): ours and
#: the published values of a method share its colour; what a value is (ours, paper, official) is its hatch/marker
METHOD_COLOURS = {"PatchCore": "#1f77b4", "PaDiM": "#2ca02c", "OrthoAD": "#ff7f0e", "other": "#7f7f7f"}
#: the bar hatch of each kind of value: ours plain, the paper, the official published runs, the official code here
SOURCE_HATCHES = {"ours": "", "paper": "//", "official": "..", "anchor": "xx"}
#: the marker of each kind of value in scatter and line plots
SOURCE_MARKERS = {"ours": "o", "paper": "*", "official": "s", "anchor": "X"}


def method_key(method: str) -> str:
    """The :data:`METHOD_COLOURS` key of a method name as the study writes it (``patchcore``, ``PaDiM d=100``,
    ``PatchCore-1%``, ``orthoad``...); ``other`` for an unknown one."""
    text = str(method).lower()
    return next((key for key in METHOD_COLOURS if key != "other" and text.startswith(key.lower())), "other")


def method_colour(method: str) -> str:
    """The colour of ``method`` in every figure (:data:`METHOD_COLOURS`)."""
    return METHOD_COLOURS[method_key(method)]


def mean_sd_text(mean: float, sd: float | None = None, decimals: int = 1) -> str:
    """``"99.3 ± 0.2"`` (values already in percent); the mean alone when there is no sd, ``-`` for NaN."""
    if mean is None or not np.isfinite(float(mean)):
        return "-"
    text = f"{float(mean):.{decimals}f}"
    if sd is not None and np.isfinite(float(sd)):
        text += f" ± {float(sd):.{decimals}f}"
    return text


def place_labels(ax: Any, points: list[tuple[float, float]], texts: list[str], colours: list[str] | None = None,
                 fontsize: float = 8) -> list[Any]:
    """Annotate ``points`` (data coordinates) with ``texts`` so that no two labels overlap: each label takes the
    first of a ring of offsets around its point whose box clears the labels placed before it. Call after the
    axis limits and scales are final."""
    offsets = [(5, 4), (5, -11), (-5, 4), (-5, -11), (5, 14), (5, -21), (-5, 14), (-5, -21), (5, 24), (5, -31),
               (-5, 24), (-5, -31), (5, 34), (5, -41)]
    renderer = ax.figure.canvas.get_renderer()
    placed: list[Any] = []
    boxes: list[Any] = []
    for i, ((x, y), text) in enumerate(zip(points, texts)):
        for dx, dy in offsets:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                                ha="left" if dx >= 0 else "right", color=(colours or ["black"] * len(texts))[i])
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in boxes) or (dx, dy) == offsets[-1]:
                break
            label.remove()
        boxes.append(box)
        placed.append(label)
    return placed


def percent_axis(ax: Any, ratios: Any) -> None:
    """Log x axis with ticks at the given ratios (fractions), labelled in percent (0.1%, 1%, 10%, ...)."""
    ax.set_xscale("log")
    ticks = sorted({100 * float(r) for r in ratios})
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def plain_log_axis(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (10, 100, 1000), not powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def score_text(score: float) -> str:
    """An anomaly score as a reader reads it: three significant digits, thousands separated, never 4.61e+04
    (squared distances run to 10^5; Euclidean ones and normalised scores stay small)."""
    value = float(score)
    if abs(value) >= 999.5:
        return f"{round(value, 3 - len(str(int(round(abs(value)))))):,.0f}"
    return f"{value:.3g}"
