"""PRO (per-region overlap) as in the MVTec AD evaluation: the exact curve up to ``max_fpr``, its normalised
area, and the area over the anomalous images only (see the package docstring for the definition)."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics.common import (_anomalous_images, _as_image_stack, _check_max_fpr,
                                                     _undefined)

# 8-connectivity inside each image, no connection between images of the stack.
_STRUCTURE_2D_IN_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_2D_IN_3D[1] = True


def _full_pro_curve(m: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact PRO curve with every distinct score as a threshold.

    m: [N, H, W] bool masks, a: [N, H, W] scores. Returns ``(fpr [K], pro [K])`` starting at
    (0, 0) and ending at (1, 1), fpr and pro non-decreasing; None (after a warning) if undefined.
    """
    labeled, n_regions = ndimage.label(m, structure=_STRUCTURE_2D_IN_3D)
    labeled = labeled.ravel()
    n_neg = int(labeled.size - np.count_nonzero(labeled))
    if n_regions == 0:
        _undefined("PRO is undefined: the ground-truth masks contain no anomalous pixel; returning NaN")
        return None
    if n_neg == 0:
        _undefined("PRO is undefined: the ground-truth masks contain no normal pixel (FPR undefined); returning NaN")
        return None

    # Per-pixel increments when the pixel becomes "predicted anomalous":
    # a normal pixel adds 1 to the false-positive count, a pixel of region r adds 1/|r| to the
    # summed region overlap (later divided by the number of regions).
    sizes = np.bincount(labeled, minlength=n_regions + 1).astype(np.float64)
    inv_size = np.zeros(n_regions + 1)
    inv_size[1:] = 1.0 / sizes[1:]

    scores = a.ravel()
    order = np.argsort(scores)[::-1]  # descending score = decreasing threshold
    sorted_scores = scores[order]
    sorted_labels = labeled[order]
    del order

    fp_count = np.cumsum(sorted_labels == 0, dtype=np.int64)
    overlap_sum = np.cumsum(inv_size[sorted_labels])
    del sorted_labels

    # Pixels with identical scores form one threshold: keep only the last index of each tie group.
    last_of_group = np.empty(sorted_scores.size, dtype=bool)
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=last_of_group[:-1])
    last_of_group[-1] = True

    fpr = fp_count[last_of_group] / n_neg
    pro = np.minimum(overlap_sum[last_of_group] / n_regions, 1.0)  # clip float round-off
    # The last point (threshold = min score) is exactly (1, 1).
    fpr[-1] = 1.0
    pro[-1] = 1.0
    return np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))


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
    if num_thresholds is not None:
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 2:
            raise ConfigError(f"num_thresholds must be None or an integer >= 2, got {num_thresholds!r}")
    m, a = _as_image_stack(masks, maps)
    curve = _full_pro_curve(m, a)
    if curve is None:
        return np.zeros(0), np.zeros(0)
    fpr, pro = _truncate(*curve, max_fpr)
    if num_thresholds is None:
        return fpr, pro
    # Evaluate the piecewise-linear exact curve on the grid; on a vertical segment (several points
    # with the same fpr) take its top, i.e. the last point with that fpr.
    grid = np.linspace(0.0, max_fpr, int(num_thresholds))
    grid[-1] = max_fpr
    j = np.searchsorted(fpr, grid, side="right") - 1  # last point with fpr <= x
    k = np.minimum(j + 1, fpr.size - 1)  # first point with fpr > x (when x < max_fpr)
    on_point = (fpr[j] == grid) | (k == j)
    dx = np.where(on_point, 1.0, fpr[k] - fpr[j])
    t = np.where(on_point, 0.0, (grid - fpr[j]) / dx)
    return grid, pro[j] + t * (pro[k] - pro[j])


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
    x, y = _truncate(*curve, max_fpr)
    area = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    return min(max(area / max_fpr, 0.0), 1.0)


def anomaly_pro_score(labels: Any, masks: Any, maps: Any, max_fpr: float = 0.3) -> float:
    """PRO (as :func:`pro_score`) over the anomalous test images only: the FPR counts only the normal
    pixels of those images (the official results' ``anomaly_pro`` column). labels [N], masks/maps [N, H, W]."""
    m, a = _anomalous_images(labels, masks, maps)
    if not len(m):
        return _undefined("anomaly PRO is undefined (no anomalous image); returning NaN")
    return pro_score(m, a, max_fpr)
