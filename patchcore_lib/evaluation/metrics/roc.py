"""ROC curve points for plotting (scikit-learn's ``roc_curve``)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from patchcore_lib.evaluation.metrics.common import _as_labels_scores, _undefined


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
