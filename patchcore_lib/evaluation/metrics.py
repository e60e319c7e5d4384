"""Evaluation metrics: image/pixel AUROC, per-defect AUROC, ROC points and the PRO curve.

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
from __future__ import annotations

import sys
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from patchcore_lib.errors import ConfigError

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
]


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined for the given data (e.g. one class only) and was reported as NaN."""


# --------------------------------------------------------------------------- input helpers


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _tensor_to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.element_size() < 4:  # float16 / bfloat16 (no numpy bfloat16)
        t = t.float()
    return t.numpy()


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor (any device/dtype) or list of them to a numpy array."""
    if _is_torch_tensor(x):
        return _tensor_to_numpy(x)
    if isinstance(x, (list, tuple)) and any(_is_torch_tensor(e) for e in x):
        x = [_tensor_to_numpy(e) if _is_torch_tensor(e) else e for e in x]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.VisibleDeprecationWarning)
            arr = np.asarray(x)
    except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning) as exc:
        raise ConfigError(f"{name} cannot be converted to an array (ragged or invalid input): {exc}") from exc
    if arr.dtype == object:
        raise ConfigError(f"{name} cannot be converted to a numeric array (ragged or mixed input)")
    return arr


def _as_scores(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Real-valued, finite scores; float16/int/bool are promoted to float64, float32/64 kept."""
    arr = _to_numpy(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return arr


def _as_binary(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Binary labels/masks (bool, or numbers equal to 0/1) as a bool array."""
    arr = _to_numpy(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"{name} must be boolean or 0/1, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ConfigError(f"{name} must contain only 0/1 (or bool), found values such as {bad.tolist()}")
    return arr.astype(bool)


def _as_image_stack(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate masks/maps: same shape, [N,H,W] (a single [H,W] image is accepted)."""
    m = _to_numpy(masks, "masks")
    a = _to_numpy(maps, "maps")
    if m.shape != a.shape:
        raise ConfigError(f"masks and maps must have the same shape, got masks {m.shape} and maps {a.shape}")
    if m.ndim == 2:
        m, a = m[None], a[None]
    if m.ndim != 3:
        raise ConfigError(f"masks and maps must have shape [N, H, W] (or [H, W]), got {m.shape}")
    return _as_binary(m, "masks"), _as_scores(a, "maps")


def _as_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_binary(labels, "labels", ndim=1)
    s = _as_scores(scores, "scores", ndim=1)
    if y.shape != s.shape:
        raise ConfigError(f"labels and scores must have the same length, got labels {y.shape} and scores {s.shape}")
    return y, s


def _undefined(message: str) -> float:
    """Warn that a metric is undefined (attributed to the first caller outside this module); return NaN."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UndefinedMetricWarning, stacklevel=level)
    return float("nan")


def _check_max_fpr(max_fpr: float) -> float:
    try:
        value = float(max_fpr)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"max_fpr must be a number in (0, 1], got {max_fpr!r}") from exc
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    return value


# --------------------------------------------------------------------------- AUROC


def _auroc(y: np.ndarray, s: np.ndarray, what: str) -> float:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        present = "no samples" if y.size == 0 else ("only negatives" if n_pos == 0 else "only positives")
        return _undefined(f"{what} is undefined ({present}: both classes are needed); returning NaN")
    return float(roc_auc_score(y, s))


def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level AUROC.

    labels: [N] 0/1 (1 = anomalous); scores: [N] real-valued image scores.
    Returns NaN (with a warning) when only one class is present.
    """
    y, s = _as_labels_scores(labels, scores)
    return _auroc(y, s, "image AUROC")


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level AUROC over all pixels of all images.

    masks: [N, H, W] bool or 0/1 ground truth; maps: [N, H, W] anomaly maps.
    Returns NaN (with a warning) when the masks contain only one class.
    """
    m, a = _as_image_stack(masks, maps)
    return _auroc(m.ravel(), a.ravel(), "pixel AUROC")


def roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points for plotting (``sklearn.metrics.roc_curve``).

    labels: [N] 0/1; scores: [N]. Returns ``(fpr [K], tpr [K])``, fpr increasing.
    With only one class present the undefined coordinate is NaN and a warning is emitted.
    """
    y, s = _as_labels_scores(labels, scores)
    if y.size == 0:
        _undefined("ROC curve is undefined for zero samples; returning empty arrays")
        return np.zeros(0), np.zeros(0)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        which = "negatives" if n_pos == 0 else "positives"
        _undefined(f"ROC curve is undefined (only {which} present); the undefined rate is NaN")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's own warning for the one-class case, reported above
        fpr, tpr, _ = roc_curve(y, s)
    return np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)


def per_defect_image_auroc(
    defect_types: Sequence[str], labels: Any, scores: Any, good_name: str = "good"
) -> dict[str, float]:
    """Image AUROC per defect type, each on (all good images + that defect's images).

    defect_types: [N] names (``good_name`` for defect-free images); labels: [N] 0/1; scores: [N].
    Good images must have label 0 and the others label 1 (ConfigError otherwise).
    Returns ``{defect_type: auroc}`` in sorted order; NaN (with a warning) when there are no good images.
    """
    y, s = _as_labels_scores(labels, scores)
    types = np.asarray([str(t) for t in defect_types], dtype=object)
    if types.shape != y.shape:
        raise ConfigError(
            f"defect_types, labels and scores must have the same length, got {len(types)}, {y.size} and {s.size}"
        )
    is_good = types == good_name
    if (y & is_good).any():
        raise ConfigError(f"images of type {good_name!r} must have label 0, some have label 1")
    if (~y & ~is_good).any():
        bad = sorted(set(types[~y & ~is_good]))
        raise ConfigError(f"images of defect types {bad} must have label 1, some have label 0")
    result: dict[str, float] = {}
    for defect in sorted(set(types[~is_good])):
        keep = is_good | (types == defect)
        result[defect] = _auroc(y[keep], s[keep], f"image AUROC of defect type {defect!r}")
    return result


# --------------------------------------------------------------------------- PRO

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


def _anomalous_images(labels: Any, masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """masks/maps [N, H, W] of the images with label 1 (labels [N] 0/1)."""
    y = _as_binary(labels, "labels", ndim=1)
    m, a = _as_image_stack(masks, maps)
    if len(y) != len(m):
        raise ConfigError(f"labels ({len(y)}) and masks/maps ({len(m)} images) must have the same length")
    return m[y], a[y]


def anomaly_pixel_auroc(labels: Any, masks: Any, maps: Any) -> float:
    """Pixel AUROC pooled over the anomalous test images only (the official code's ``anomaly_pixel_auroc``).

    labels: [N] 0/1 image labels; masks: [N, H, W] 0/1; maps: [N, H, W]. NaN (with a warning) if undefined.
    """
    m, a = _anomalous_images(labels, masks, maps)
    return _auroc(m.ravel(), a.ravel(), "anomaly pixel AUROC")


def anomaly_pro_score(labels: Any, masks: Any, maps: Any, max_fpr: float = 0.3) -> float:
    """PRO (as :func:`pro_score`) over the anomalous test images only: the FPR counts only the normal
    pixels of those images (the official results' ``anomaly_pro`` column). labels [N], masks/maps [N, H, W]."""
    m, a = _anomalous_images(labels, masks, maps)
    if not len(m):
        return _undefined("anomaly PRO is undefined (no anomalous image); returning NaN")
    return pro_score(m, a, max_fpr)


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
