"""How the study shows metrics: axis labels, percent tables, y-ranges, mask contours."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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
