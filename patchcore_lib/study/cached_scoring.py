"""Scoring on cached patch features: what notebooks 01-03 and 07 share.

Everything here works on the features kept in the store (:func:`~patchcore_lib.study.cached_features.load_features`),
so varying the sampler, the coreset ratio, k, the image score, the distance or the blur never re-runs the
backbone. Scoring variants re-use the library's own path: ``PatchCore.with_bank(bank, **changes)`` is a copy
that shares the feature extractor, has a re-validated config and indexes exactly ``bank``; scores and maps
then come from ``PatchCore.score_features`` exactly as in ``predict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.detectors import PatchCore
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics import image_auroc, pixel_auroc, pro_score


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
