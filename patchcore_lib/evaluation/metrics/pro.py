"""PRO (per-region overlap) as in the MVTec AD evaluation: the exact curve up to ``max_fpr``, its normalised
area, and the area over the anomalous images only (see the package docstring for the definition)."""
from __future__ import annotations

from typing import Any

import numpy as np

from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics.common import (_anomalous_images, _as_image_stack, _check_max_fpr,
                                                     _undefined)
from patchcore_lib.evaluation.metrics.ranking import descending_order, group_ends, pro_from_ranked, region_labels


def _full_pro_curve(m: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact PRO curve with every distinct score as a threshold.

    m: [N, H, W] bool masks, a: [N, H, W] scores. Returns ``(fpr [K], pro [K])`` starting at
    (0, 0) and ending at (1, 1), fpr and pro non-decreasing; None (after a warning) if undefined.
    """
    labeled, n_regions, inv_size = region_labels(m)
    n_neg = _pro_defined(labeled, n_regions)
    if n_neg is None:
        return None
    scores = a.ravel()
    order = descending_order(scores)  # descending score = decreasing threshold
    return pro_from_ranked(labeled[order], inv_size, group_ends(scores[order]), n_regions, n_neg)


def _pro_defined(labeled: np.ndarray, n_regions: int) -> int | None:
    """The number of normal pixels, or None (after a warning) when PRO is undefined for these region labels."""
    n_neg = int(labeled.size - np.count_nonzero(labeled))
    if n_regions == 0:
        _undefined("PRO is undefined: the ground-truth masks contain no anomalous pixel; returning NaN")
        return None
    if n_neg == 0:
        _undefined("PRO is undefined: the ground-truth masks contain no normal pixel (FPR undefined); returning NaN")
        return None
    return n_neg


def _truncate(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep points with fpr <= max_fpr; if none is exactly at max_fpr, add one by linear interpolation."""
    ins = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:ins] <= max_fpr < fpr[ins:]
    x, y = fpr[:ins], pro[:ins]
    if x[-1] < max_fpr:  # then ins < len(fpr) since fpr[-1] == 1 >= max_fpr
        x0, x1, y0, y1 = fpr[ins - 1], fpr[ins], pro[ins - 1], pro[ins]
        y_at = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x = np.append(x, max_fpr)
        y = np.append(y, y_at)
    return x, y


def pro_curve(
    masks: Any, maps: Any, max_fpr: float = 0.3, num_thresholds: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve (MVTec AD definition) for FPR in [0, max_fpr].

    masks: [N, H, W] bool or 0/1 ground truth; maps: [N, H, W] anomaly maps ([H, W] = one image).
    Returns ``(fpr [K], pro [K])`` with non-decreasing fpr starting at (0, 0) and ending exactly at
    ``max_fpr`` (pro linearly interpolated there). With ``num_thresholds=None`` every distinct score
    is a threshold (exact curve; several points may share fpr 0). With an integer ``num_thresholds``
    (>= 2) the exact curve is resampled at that many evenly spaced FPR values in [0, max_fpr]
    (best PRO at each FPR, linear in between), convenient for plotting and averaging curves.
    Undefined data (no anomalous or no normal pixel) gives empty arrays and a warning.
    """
    max_fpr = _check_max_fpr(max_fpr)
    _check_num_thresholds(num_thresholds)
    m, a = _as_image_stack(masks, maps)
    curve = _full_pro_curve(m, a)
    if curve is None:
        return np.zeros(0), np.zeros(0)
    fpr, pro = _truncate(*curve, max_fpr)
    return (fpr, pro) if num_thresholds is None else _resample(fpr, pro, max_fpr, int(num_thresholds))


def _check_num_thresholds(num_thresholds: Any) -> None:
    if num_thresholds is not None:
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 2:
            raise ConfigError(f"num_thresholds must be None or an integer >= 2, got {num_thresholds!r}")


def _resample(fpr: np.ndarray, pro: np.ndarray, max_fpr: float, num_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """The truncated exact curve evaluated at ``num_thresholds`` evenly spaced FPR values in [0, max_fpr]."""
    # Evaluate the piecewise-linear exact curve on the grid; on a vertical segment (several points
    # with the same fpr) take its top, i.e. the last point with that fpr.
    grid = np.linspace(0.0, max_fpr, num_thresholds)
    grid[-1] = max_fpr
    j = np.searchsorted(fpr, grid, side="right") - 1  # last point with fpr <= x
    k = np.minimum(j + 1, fpr.size - 1)  # first point with fpr > x (when x < max_fpr)
    on_point = (fpr[j] == grid) | (k == j)
    dx = np.where(on_point, 1.0, fpr[k] - fpr[j])
    t = np.where(on_point, 0.0, (grid - fpr[j]) / dx)
    return grid, pro[j] + t * (pro[k] - pro[j])


def _area(x: np.ndarray, y: np.ndarray, max_fpr: float) -> float:
    """Normalised trapezoidal area of a truncated curve (AU-PRO), clipped to [0, 1]."""
    area = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    return min(max(area / max_fpr, 0.0), 1.0)


def pro_score(masks: Any, maps: Any, max_fpr: float = 0.3) -> float:
    """Normalised area under the exact PRO curve for FPR in [0, max_fpr] (AU-PRO), in [0, 1].

    masks: [N, H, W] bool or 0/1; maps: [N, H, W]. Trapezoidal integral of :func:`pro_curve`
    divided by ``max_fpr``, as in the MVTec AD evaluation code. NaN (with a warning) if undefined.
    """
    max_fpr = _check_max_fpr(max_fpr)
    m, a = _as_image_stack(masks, maps)
    curve = _full_pro_curve(m, a)
    if curve is None:
        return float("nan")
    return _area(*_truncate(*curve, max_fpr), max_fpr)


def anomaly_pro_score(labels: Any, masks: Any, maps: Any, max_fpr: float = 0.3) -> float:
    """PRO (as :func:`pro_score`) over the anomalous test images only: the FPR counts only the normal
    pixels of those images (the official results' ``anomaly_pro`` column). labels [N], masks/maps [N, H, W]."""
    m, a = _anomalous_images(labels, masks, maps)
    if not len(m):
        return _undefined("anomaly PRO is undefined (no anomalous image); returning NaN")
    return pro_score(m, a, max_fpr)
