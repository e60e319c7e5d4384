"""Evaluation metrics: image/pixel AUROC, per-defect AUROC, ROC points and the PRO curve, one module each
(``auroc``, ``roc``, ``pro``, ``legacy``; ``common``: input checks and the undefined-metric warning); ``pixel``: every
pixel metric of a test split from one sort of its maps (``ranking``: that sort's shared steps), equal to the
separate functions bit for bit.

All functions accept numpy arrays, torch tensors (any device) or nested lists.
A metric that is mathematically undefined for the given data (for example only
one class present) returns ``float('nan')`` and emits an
:class:`UndefinedMetricWarning` instead of raising, so one degenerate category
does not abort a whole study.  Malformed input (wrong shapes, NaN scores,
non-binary labels, bad options) raises :class:`~patchcore_lib.errors.ConfigError`.

PRO follows the MVTec AD definition (Bergmann et al., IJCV 2021, and the official
MVTec AD evaluation code): ground-truth regions are the 8-connected components of
each mask; at a threshold ``t`` a pixel is predicted anomalous when its score is
``>= t``; PRO(t) is the overlap (fraction of a region's pixels predicted
anomalous) averaged over all regions of all images; FPR(t) is the fraction of all
ground-truth-negative pixels (of all images, defect-free ones included) predicted
anomalous.  Every distinct score value is a threshold (exact curve).
"""
from patchcore_lib.evaluation.metrics.auroc import (anomaly_pixel_auroc, image_auroc, per_defect_image_auroc,
                                                    pixel_auroc)
from patchcore_lib.evaluation.metrics.common import UndefinedMetricWarning
from patchcore_lib.evaluation.metrics.legacy import legacy_pixel_auroc
from patchcore_lib.evaluation.metrics.pixel import PixelMetrics, pixel_metrics
from patchcore_lib.evaluation.metrics.pro import anomaly_pro_score, pro_curve, pro_score
from patchcore_lib.evaluation.metrics.roc import roc_points

__all__ = [
    "UndefinedMetricWarning",
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "pro_score",
    "anomaly_pixel_auroc",
    "anomaly_pro_score",
    "per_defect_image_auroc",
    "roc_points",
    "legacy_pixel_auroc",
    "PixelMetrics",
    "pixel_metrics",
]
