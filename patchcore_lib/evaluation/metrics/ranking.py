"""The pixel metrics' shared step: pixels ranked by descending score (one argsort), the tie groups of that ranking,
and from them the ROC curve / AUROC (scikit-learn's ``roc_curve`` / ``roc_auc_score``, bit for bit) and the exact
PRO curve. Every number here is a count or a running sum taken at the end of a tie group, so one ranking serves
pixel AUROC, PRO and their anomalous-images variants (a subset of a ranking, kept in order, is the subset's ranking).

Why the AUROC equals scikit-learn's bit for bit: ``roc_curve`` sorts stably, takes the last index of each run of
equal scores, counts positives up to it (float64 cumulative sum of 0/1, exact integers) and derives the negatives
from the index; these integers do not depend on the order inside a tie, so any descending ranking gives the same
``tps`` / ``fps``. The points it drops (``drop_intermediate``), the division and the trapezoid (``sklearn.metrics.auc``)
are then the same operations on the same arrays.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

# 8-connectivity inside each image, no connection between images of the stack.
_STRUCTURE_2D_IN_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_2D_IN_3D[1] = True


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` (1-D) by descending score: the reversed ``np.argsort`` (the PRO curve's order since it
    was written; its order inside ties is the one the PRO sums have always used)."""
    return np.argsort(scores)[::-1]


def group_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Index of the last element of every run of equal values of descending ``sorted_scores`` (scikit-learn's
    ``threshold_idxs``): one threshold per distinct score."""
    return np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [sorted_scores.size - 1]])


def roc_from_ranked(positive: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.metrics.roc_curve(y, s)`` (``drop_intermediate=True``) from the labels ``positive`` (bool) in
    descending score order and the :func:`group_ends` of the scores: ``(fpr, tpr)``, both classes present."""
    tps = np.cumsum(positive, dtype=np.float64)[ends]
    fps = 1 + ends.astype(np.float64) - tps
    if fps.shape[0] > 2:
        optimal = np.flatnonzero(np.concatenate([[True], (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), [True]]))
        fps, tps = fps[optimal], tps[optimal]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    return fps / fps[-1], tps / tps[-1]


def auroc_from_ranked(positive: np.ndarray, ends: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score`` from a ranking (see :func:`roc_from_ranked`)."""
    return float(auc(*roc_from_ranked(positive, ends)))


def region_labels(masks: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """(flat region label of every pixel [N*H*W] (0: normal), number of regions, 1 / region size per label
    (index 0: 0.0)) of bool masks [N, H, W]: 8-connected regions inside each image."""
    labeled, n_regions = ndimage.label(masks, structure=_STRUCTURE_2D_IN_3D)
    labeled = labeled.ravel()
    sizes = np.bincount(labeled, minlength=n_regions + 1).astype(np.float64)
    inv_size = np.zeros(n_regions + 1)
    inv_size[1:] = 1.0 / sizes[1:]
    return labeled, int(n_regions), inv_size


def pro_from_ranked(sorted_labels: np.ndarray, inv_size: np.ndarray, ends: np.ndarray, n_regions: int,
                    n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve ``(fpr, pro)`` from (0, 0) to (1, 1), one point per threshold, from the region labels
    in descending score order: a normal pixel adds 1 to the false-positive count, a pixel of region r adds 1/|r|
    to the summed region overlap (divided by the number of regions)."""
    fp_count = np.cumsum(sorted_labels == 0, dtype=np.int64)[ends]
    overlap_sum = np.cumsum(inv_size[sorted_labels])[ends]
    fpr = fp_count / n_neg
    pro = np.minimum(overlap_sum / n_regions, 1.0)  # clip float round-off
    fpr[-1] = 1.0  # the last point (threshold = min score) is exactly (1, 1)
    pro[-1] = 1.0
    return np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))


def ties_mix_regions(sorted_scores: np.ndarray, increments: np.ndarray) -> bool:
    """Whether some run of equal scores holds pixels of regions with different 1/|r| (``increments`` in the same
    descending order, 0 for normal pixels). Only then can the PRO sum at the run's end depend on the order inside
    the run (adding 0 is exact; adding the same value k times gives the same sum in any order)."""
    region = np.flatnonzero(increments)
    scores, values = sorted_scores[region], increments[region]
    return bool(np.any((scores[1:] == scores[:-1]) & (values[1:] != values[:-1])))
