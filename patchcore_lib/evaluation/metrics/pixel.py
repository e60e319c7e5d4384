"""Every pixel metric of a test split from one sort of its anomaly maps: pixel AUROC, PRO, both over the anomalous
images only, and the curves the notebooks plot. Each number equals the one of its own function
(:func:`~.auroc.pixel_auroc`, :func:`~.pro.pro_score`, :func:`~.auroc.anomaly_pixel_auroc`,
:func:`~.pro.anomaly_pro_score`, ``roc_curve`` and :func:`~.pro.pro_curve`) bit for bit; those sort the same
millions of pixels once each.

The anomalous images' ranking is the full ranking with the other images' pixels left out (the order of the rest is
kept). Their AUROC only counts pixels at the end of each run of equal scores, which the order inside a run does not
change. Their PRO sums 1/|region| in ranking order; should a run of equal scores hold pixels of regions of different
sizes (their sum could then round differently in another order inside the run), it is computed by
:func:`~.pro.anomaly_pro_score` itself, with its own sort, as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import auc

from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics.auroc import anomaly_pixel_auroc, pixel_auroc
from patchcore_lib.evaluation.metrics.common import _as_binary, _as_image_stack, _check_max_fpr
from patchcore_lib.evaluation.metrics.pro import (_area, _check_num_thresholds, _resample, _truncate,
                                                  anomaly_pro_score, pro_score)
from patchcore_lib.evaluation.metrics.ranking import (descending_order, group_ends, pro_from_ranked, region_labels,
                                                      roc_from_ranked, ties_mix_regions)

NAN = float("nan")
EMPTY = (np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class PixelMetrics:
    """The pixel metrics of one test split (in [0, 1]; NaN where undefined, the anomalous-images ones also when no
    labels were given), the pixel ROC points (``roc_curve`` with ``drop_intermediate``) and the exact PRO curve up
    to ``max_fpr`` (:func:`~.pro.pro_curve`'s); empty curves where undefined."""

    pixel_auroc: float
    pro: float
    anomaly_pixel_auroc: float
    anomaly_pro: float
    roc: tuple[np.ndarray, np.ndarray]
    pro_points: tuple[np.ndarray, np.ndarray]
    max_fpr: float

    def pro_curve(self, num_thresholds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~.pro.pro_curve` of the same data (``num_thresholds``: resampled, as there)."""
        _check_num_thresholds(num_thresholds)
        if num_thresholds is None or not self.pro_points[0].size:
            return self.pro_points
        return _resample(*self.pro_points, self.max_fpr, int(num_thresholds))


def pixel_metrics(masks: Any, maps: Any, labels: Any = None, max_fpr: float = 0.3) -> PixelMetrics:
    """:class:`PixelMetrics` of masks [N, H, W] (bool or 0/1) and maps [N, H, W]; the anomalous-images metrics need
    the image ``labels`` [N] (0/1). Warnings and errors are those of the separate functions."""
    max_fpr = _check_max_fpr(max_fpr)
    m, a = _as_image_stack(masks, maps)
    y = None if labels is None else _as_binary(labels, "labels", ndim=1)
    if y is not None and len(y) != len(m):
        raise ConfigError(f"labels ({len(y)}) and masks/maps ({len(m)} images) must have the same length")
    positive, scores = m.ravel(), a.ravel()
    n_pos = int(np.count_nonzero(positive))
    if n_pos == 0 or n_pos == positive.size:  # undefined: the separate functions say why (warnings), NaN
        return PixelMetrics(pixel_auroc(m, a), pro_score(m, a, max_fpr),
                            NAN if y is None else anomaly_pixel_auroc(y, m, a),
                            NAN if y is None else anomaly_pro_score(y, m, a, max_fpr), EMPTY, EMPTY, max_fpr)
    order = descending_order(scores)
    sorted_scores, sorted_positive = scores[order], positive[order]
    ends = group_ends(sorted_scores)
    roc = roc_from_ranked(sorted_positive, ends)
    labeled, n_regions, inv_size = region_labels(m)
    sorted_labels = labeled[order]
    keep = None if y is None else np.repeat(y, m[0].size)[order]  # pixels of anomalous images, ranked
    del order, labeled
    points = _truncate(*pro_from_ranked(sorted_labels, inv_size, ends, n_regions, positive.size - n_pos), max_fpr)
    anomaly = (NAN, NAN) if y is None or keep is None else \
        _anomalous(y, m, a, max_fpr, sorted_scores[keep], sorted_positive[keep], sorted_labels[keep], inv_size)
    return PixelMetrics(float(auc(*roc)), _area(*points, max_fpr), *anomaly, roc, points, max_fpr)


def _anomalous(y: np.ndarray, m: np.ndarray, a: np.ndarray, max_fpr: float, sorted_scores: np.ndarray,
               sorted_positive: np.ndarray, sorted_labels: np.ndarray, inv_size: np.ndarray) -> tuple[float, float]:
    """(anomaly pixel AUROC, anomaly PRO) from the pixels of the anomalous images in descending score order
    (scores, positives, region labels of the full set); the separate functions where a metric is undefined or
    where the PRO sum could depend on the order inside a run of equal scores."""
    n_pos = int(np.count_nonzero(sorted_positive))
    if n_pos == 0 or n_pos == sorted_positive.size:  # also no anomalous image: both undefined, as they say
        return anomaly_pixel_auroc(y, m, a), anomaly_pro_score(y, m, a, max_fpr)
    ends = group_ends(sorted_scores)
    auroc = float(auc(*roc_from_ranked(sorted_positive, ends)))
    present = np.zeros(inv_size.size, dtype=bool)
    present[sorted_labels] = True
    if ties_mix_regions(sorted_scores, inv_size[sorted_labels]):
        return auroc, anomaly_pro_score(y, m, a, max_fpr)
    curve = pro_from_ranked(sorted_labels, inv_size, ends, int(np.count_nonzero(present[1:])),
                            sorted_positive.size - n_pos)
    return auroc, _area(*_truncate(*curve, max_fpr), max_fpr)
