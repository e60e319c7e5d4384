"""A decision threshold from normal images only, and the F1-optimal one when labelled defects exist.

Out-of-fold calibration: the training images are split into k folds (a seeded permutation). Each fold gets
its own coreset, at the model's ratio and sampler, of its images' patch features (already extracted for the
fit: nothing is extracted twice). The images of fold j are scored against the union of the other folds'
coresets, a memory bank that never saw them. This costs about 1/k of the full coreset (the selection is
roughly quadratic in the number of patches) plus one kNN pass over the training patches.

The threshold is a conformal quantile of the n out-of-fold scores: the k-th smallest with
k = ceil((n + 1) * (1 - rate)). For a new normal image exchangeable with the training images, the chance
that its score exceeds this threshold is at most ``rate`` (Vovk et al.; finite-sample, no distribution
assumption). That needs n >= 1 / rate - 1 images (99 at 1%); with fewer, the largest score is used and the
guarantee is reported as not met. The out-of-fold banks hold (k-1)/k of the training images and are a union
of per-fold coresets, so they cover normal variation slightly worse than the full model's bank: out-of-fold
scores run a little high, which makes the threshold conservative (fewer false alarms than the target, a
few more misses). An image is anomalous when its score is strictly above the threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.components.sampling import make_sampler
from patchcore_lib.components.scoring import image_and_patch_scores
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.utils.schema import check_fields, option

METHOD = "out-of-fold conformal quantile"


@dataclass
class ThresholdOptions:
    """How ``patchcore fit`` calibrates the stored threshold (CLI options generated from these fields)."""

    false_alarm_rate: float = option(0.01, "target false-alarm rate of the threshold on normal images",
                                     exclusive_minimum=0.0, maximum=0.5)
    calibration_folds: int = option(10, "folds of the out-of-fold threshold calibration (0: no threshold)",
                                    minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.calibration_folds == 1:
            raise ConfigError("calibration_folds must be 0 (no threshold) or at least 2, got 1")


def conformal_quantile(scores: np.ndarray, rate: float) -> tuple[float, bool]:
    """(threshold, guaranteed): the ceil((n+1)(1-rate))-th smallest score; the largest when n is too small."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(ordered)
    if n == 0:
        raise ConfigError("no scores to calibrate a threshold from")
    rank = math.ceil((n + 1) * (1.0 - rate) - 1e-9)
    if rank > n:
        return float(ordered[-1]), False
    return float(ordered[rank - 1]), True


def fold_assignment(num_images: int, folds: int, seed: int) -> np.ndarray:
    """Fold index [num_images] of each image: a seeded permutation dealt round-robin (sizes differ by <= 1)."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).numpy()
    assignment = np.empty(num_images, dtype=np.int64)
    assignment[order] = np.arange(num_images) % folds
    return assignment


@torch.no_grad()
def out_of_fold_scores(model: Any, features: torch.Tensor, grid: tuple[int, int], folds: int,
                       show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Image scores [N] of every training image against a bank built without its fold, and the folds [N].

    ``model``: a PatchCore (its config's sampler, ratio, seed, kNN and score settings are used);
    ``features``: its training patch features [N, h*w, D] in image order.
    """
    num_images = features.shape[0]
    if num_images < 2:
        raise ConfigError("threshold calibration needs at least 2 training images (or calibration_folds 0)")
    folds = min(folds, num_images)
    config = model.config
    assignment = fold_assignment(num_images, folds, config.seed)
    banks = []
    for fold in tqdm(range(folds), desc="Calibration coresets", disable=not show_progress, leave=False):
        members = torch.from_numpy(np.flatnonzero(assignment == fold)).to(features.device)
        flat = features[members].reshape(-1, features.shape[-1])
        sampler = make_sampler(config.sampler, config.coreset_ratio, seed=config.seed + 1 + fold,
                               device=flat.device, show_progress=False)
        banks.append(flat[sampler.select(flat).to(flat.device)].contiguous())
    scores = np.empty(num_images, dtype=np.float64)
    for fold in tqdm(range(folds), desc="Calibration scores", disable=not show_progress, leave=False):
        search = NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend).fit(
            torch.cat([b for i, b in enumerate(banks) if i != fold]))
        held_out = np.flatnonzero(assignment == fold)
        # batches of batch_size images, as predict scores them: a FAISS distance depends (by float rounding) on
        # the other queries of its call, so these batches are part of the result. Image scores only, no maps.
        for start in range(0, len(held_out), config.batch_size):
            chunk = held_out[start:start + config.batch_size]
            batch_scores, _ = image_and_patch_scores(search, features[torch.from_numpy(chunk).to(features.device)],
                                                     config.score, config.distance, config.reweight_neighbourhood)
            scores[chunk] = batch_scores.float().cpu().double().numpy()
    return scores, assignment


def calibrate(model: Any, features: torch.Tensor, grid: tuple[int, int], options: ThresholdOptions,
              show_progress: bool = False) -> dict[str, Any]:
    """The threshold record a model stores: threshold, target rate, folds, out-of-fold scores, guarantee."""
    scores, _ = out_of_fold_scores(model, features, grid, options.calibration_folds, show_progress)
    threshold, guaranteed = conformal_quantile(scores, options.false_alarm_rate)
    return {"threshold": threshold, "method": METHOD, "false_alarm_rate": options.false_alarm_rate,
            "folds": min(options.calibration_folds, len(scores)), "num_images": int(len(scores)),
            "guaranteed": guaranteed, "out_of_fold_scores": [float(s) for s in scores],
            "out_of_fold_false_alarm_rate": float(np.mean(scores > threshold))}


def f1_optimal_threshold(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The threshold (``score > threshold`` = anomalous) of the best F1 on labelled images, with its
    precision and recall; thresholds are midpoints between consecutive distinct scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ConfigError("the F1-optimal threshold needs both normal and anomalous labelled images")
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[1:] + distinct[:-1]) / 2])
    best: dict[str, float] = {}
    for threshold in candidates:
        flagged = scores > threshold
        tp = float(np.sum(flagged & labels))
        precision = tp / max(1.0, float(flagged.sum()))
        recall = tp / float(labels.sum())
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        if not best or f1 > best["f1"]:
            best = {"threshold": float(threshold), "f1": f1, "precision": precision, "recall": recall}
    return best


def threshold_rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """False-alarm rate (normal images above ``threshold``) and miss rate (anomalous ones not above it)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    flagged = scores > threshold
    normal, anomalous = int((~labels).sum()), int(labels.sum())
    return {"false_alarm_rate": float(flagged[~labels].mean()) if normal else float("nan"),
            "miss_rate": float((~flagged[labels]).mean()) if anomalous else float("nan"),
            "false_alarms": int(flagged[~labels].sum()), "misses": int((~flagged[labels]).sum()),
            "num_normal": normal, "num_anomalous": anomalous}


def checked_threshold_record(record: Any, path: Path | str) -> dict[str, Any] | None:
    """A model file's threshold record (None, or a dict whose ``threshold`` and ``f1.threshold`` are finite numbers);
    ModelFileError naming the file otherwise (a NaN threshold would mark every image normal)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ModelFileError(f"model file {path}: the threshold record is a {type(record).__name__}, not a mapping")
    values = [("threshold", record.get("threshold"))]
    if record.get("f1") is not None:
        if not isinstance(record["f1"], dict):
            raise ModelFileError(f"model file {path}: the F1 record is a {type(record['f1']).__name__}, not a mapping")
        values.append(("F1-optimal threshold", record["f1"].get("threshold")))
    for where, value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelFileError(f"model file {path}: the {where} is {value!r}, not a finite number; re-fit the model")
    return record
