"""The legacy pixel AUROC of the original OrthoAD code, for comparison with its published numbers only."""
from __future__ import annotations

from typing import Any

import numpy as np

from patchcore_lib.errors import ConfigError


def legacy_pixel_auroc(masks: Any, maps: Any, num_samples: int = 1000, at_fpr: float = 1.0) -> float:
    """LEGACY metric, for comparison only: the pixel AUROC of the original OrthoAD code.

    Re-implements ``metric.evaluate(pred, gt, method='auroc', at_fpr, num_samples)`` of
    github.com/jnhwkim/orthoad (``get_thresholds`` + ``get_batch_auc`` + ``calc_slope_area``):

    * thresholds: ``num_samples`` quantiles of the map of the single image with the highest maximum,
      from its maximum down to its 1/num_samples quantile (a coarse, data-dependent grid);
    * at each threshold the FPR is the mean over images of each image's own FPR, and the TPR the mean
      over anomalous images of each image's own recall (per-image macro averages, not pooled pixels);
      points with equal FPR overwrite each other;
    * area: a triangle from (0, 0) to the first point, trapezoids between points, and for the last
      segment a trapezoid from the second-to-last FPR to ``at_fpr`` whose right height is the mean of the
      last two TPRs.

    Everything else in this project uses :func:`patchcore_lib.evaluation.metrics.pixel_auroc` (scikit-learn).
    masks, maps: [N, H, W]. Returns a float in [0, 1].
    """
    pred = np.asarray(maps, dtype=np.float32)
    gt = np.asarray(masks) > 0
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ConfigError(f"masks {gt.shape} and maps {pred.shape} must both be [N, H, W]")
    flat, flat_gt = pred.reshape(len(pred), -1), gt.reshape(len(gt), -1)
    reference = np.sort(flat[int(np.argmax(flat.max(1)))])  # the image with the highest maximum
    numel = reference.size
    thresholds = np.array([reference[max(1, int(np.floor(numel * i / num_samples))) - 1]
                           for i in range(num_samples, 0, -1)])
    # count of values > t in each image via sorted arrays (equal to thresholding the maps, much faster)
    fpr_sum, tpr_sum = np.zeros(len(thresholds)), np.zeros(len(thresholds))
    n_neg_images = n_pos_images = 0
    for scores, truth in zip(flat, flat_gt):
        for values, sums in ((scores[~truth], fpr_sum), (scores[truth], tpr_sum)):
            if values.size:
                values = np.sort(values)
                sums += (values.size - np.searchsorted(values, thresholds, side="right")) / values.size
        n_neg_images += int((~truth).any())
        n_pos_images += int(truth.any())
    if n_pos_images == 0:
        return float("nan")
    fpr_all = fpr_sum / max(n_neg_images, 1)
    tpr_all = tpr_sum / n_pos_images
    curve: dict[float, float] = {}
    for fpr, tpr in zip(fpr_all.tolist(), tpr_all.tolist()):
        curve[fpr] = tpr  # equal FPRs overwrite each other, as in the original dict
        if fpr > at_fpr:
            break
    fprs = sorted(curve)
    tprs = [curve[f] for f in fprs]
    if len(fprs) < 2:
        raise ConfigError("legacy_pixel_auroc needs at least two distinct FPR values")
    area = 0.0
    for i in range(len(fprs)):
        if i == 0:
            area += fprs[i] * tprs[i] / 2
        elif i == len(fprs) - 1:
            mid = (tprs[i] + tprs[i - 1]) / 2
            area += (at_fpr - fprs[i - 1]) * (mid + tprs[i - 1]) / 2
        else:
            area += (fprs[i] - fprs[i - 1]) * (tprs[i] + tprs[i - 1]) / 2
    return float(area / at_fpr)
