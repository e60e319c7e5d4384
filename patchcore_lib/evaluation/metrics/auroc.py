"""Image and pixel AUROC (scikit-learn's ``roc_auc_score``): over all images, per defect type, and pooled over the
anomalous images only."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics.common import (_anomalous_images, _as_image_stack, _as_labels_scores,
                                                     _undefined)
from patchcore_lib.evaluation.metrics.ranking import auroc_from_ranked, descending_order, group_ends


def _auroc(y: np.ndarray, s: np.ndarray, what: str, ranked: bool = False) -> float:
    """AUROC of labels ``y`` and scores ``s`` (1-D): ``roc_auc_score``, or with ``ranked`` the same number from
    one ``argsort`` (:mod:`.ranking`: bit for bit equal, about twice as fast on the millions of pixels of a
    test split); NaN with a warning when one class is missing."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        present = "no samples" if y.size == 0 else ("only negatives" if n_pos == 0 else "only positives")
        return _undefined(f"{what} is undefined ({present}: both classes are needed); returning NaN")
    if ranked:
        order = descending_order(s)
        return auroc_from_ranked(y[order], group_ends(s[order]))
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
    return _auroc(m.ravel(), a.ravel(), "pixel AUROC", ranked=True)


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


def anomaly_pixel_auroc(labels: Any, masks: Any, maps: Any) -> float:
    """Pixel AUROC pooled over the anomalous test images only (the official code's ``anomaly_pixel_auroc``).

    labels: [N] 0/1 image labels; masks: [N, H, W] 0/1; maps: [N, H, W]. NaN (with a warning) if undefined.
    """
    m, a = _anomalous_images(labels, masks, maps)
    return _auroc(m.ravel(), a.ravel(), "anomaly pixel AUROC", ranked=True)
