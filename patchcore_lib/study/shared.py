"""What notebooks 01-03 share: cached features, test targets and scoring on cached features.

Everything here works on cached patch features (:func:`patchcore_lib.study.cache.cached_split_features`),
so varying the sampler, the coreset ratio, k, the image score, the distance or the blur never re-runs the
backbone.

Scoring variants re-use the library's own path: :func:`variant` makes a shallow copy of a fitted
:class:`~patchcore_lib.detectors.PatchCore` that shares its feature extractor but has a re-validated
config (``dataclasses.replace``) and a fresh nearest-neighbour index, and :func:`fit_bank` indexes an
already-selected memory bank with the identity sampler. Scores and maps then come from
``PatchCore.score_features`` exactly as in ``predict``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.detectors import PatchCore
from patchcore_lib.detectors.patchcore import make_search
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics import image_auroc, pixel_auroc, pro_score
from patchcore_lib.study.cached_features import cached_split_features

#: metric key -> axis label of the study's plots
METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO (FPR <= 0.3)"}


def load_features(model: PatchCore, params: dict[str, Any], split: str,
                  show_progress: bool = False) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """Cached patch features of ``split``: ([N_images, h*w, D] on CPU, grid, was_cached)."""
    return cached_split_features(model, params["data_root"], params["category"], split,
                                 cache_dir=params.get("cache_dir"), show_progress=show_progress)


# ============================================================================ test targets
@dataclass
class SplitTargets:
    """Ground truth of a test split: labels [N], masks [N, S, S] uint8, defect types, paths."""

    labels: np.ndarray
    masks: np.ndarray
    defect_types: list[str]
    paths: list[str]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[-2:])


def split_targets(dataset: Any) -> SplitTargets:
    """Labels, preprocessed masks, defect types and paths of a test dataset (no images kept)."""
    masks = np.stack([dataset[i]["mask"][0].numpy().astype(np.uint8) for i in range(len(dataset))])
    return SplitTargets(dataset.labels, masks, dataset.defect_types, [str(s.path) for s in dataset.samples])


# ============================================================================ scoring on cached features
def variant(model: PatchCore, **changes: Any) -> PatchCore:
    """An unfitted copy of ``model`` with some config fields changed; shares the feature extractor.

    The config is re-validated (``dataclasses.replace`` runs ``__post_init__``); the copy gets its own
    nearest-neighbour index (exact or IVF-PQ, as its config says), so fitting it leaves ``model`` untouched.
    """
    return model.with_bank(**changes)


def fit_bank(model: PatchCore, bank: torch.Tensor, **changes: Any) -> PatchCore:
    """A copy of ``model`` (with ``changes``) whose memory bank is exactly ``bank`` [M, D] (identity sampler)."""
    return model.with_bank(bank, **changes)


def score_split(model: PatchCore, features: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int],
                batch_images: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Image scores [N] and anomaly maps [N, H, W] (float32 numpy) of cached features [N, h*w, D]."""
    n = len(features)
    scores = np.empty(n, dtype=np.float32)
    maps = np.empty((n, *image_size), dtype=np.float32)
    for start in range(0, n, batch_images):
        chunk = features[start:start + batch_images].to(model.device)
        s, m = model.score_features(chunk, grid, image_size)
        scores[start:start + len(s)] = s.numpy()
        maps[start:start + len(s)] = m.numpy()
    return scores, maps


def evaluate_scores(targets: SplitTargets, scores: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Image AUROC, pixel AUROC and PRO (FPR <= 0.3), in [0, 1]; NaN where undefined."""
    has_defects = bool(targets.masks.any())
    return {
        "image_auroc": image_auroc(targets.labels, scores),
        "pixel_auroc": pixel_auroc(targets.masks, maps) if has_defects else float("nan"),
        "pro": pro_score(targets.masks, maps) if has_defects else float("nan"),
    }


def coverage_radius(features: torch.Tensor, bank: torch.Tensor, backend: str = "auto") -> float:
    """max over ``features`` [N, D] of the Euclidean distance to the nearest row of ``bank`` [M, D].

    The quantity the greedy coreset minimises (approximately): every training feature lies within this
    radius of some memory-bank feature.
    """
    if features.ndim != 2 or bank.ndim != 2 or features.shape[1] != bank.shape[1]:
        raise ConfigError(f"coverage_radius needs [N, D] and [M, D] matrices, got {tuple(features.shape)} "
                          f"and {tuple(bank.shape)}")
    search = NearestNeighbourSearch(1, "euclidean", backend).fit(bank)
    worst = 0.0
    for start in range(0, len(features), 65536):
        distances, _ = search.query(features[start:start + 65536])
        worst = max(worst, float(distances.max()))
    return worst


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
