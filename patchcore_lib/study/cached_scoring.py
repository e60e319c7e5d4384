"""Scoring on cached patch features: what notebooks 01-03 and 07 share.

Everything here works on the features kept in the store (:func:`~patchcore_lib.study.cached_features.load_features`),
so varying the sampler, the coreset ratio, k, the image score, the distance or the blur never re-runs the
backbone. Scoring variants re-use the library's own path: ``PatchCore.with_bank(bank, **changes)`` is a copy
that shares the feature extractor, has a re-validated config and indexes exactly ``bank``; scores and maps
then come from ``PatchCore.score_features`` exactly as in ``predict``.

Seeds (notebooks 02-04, parameter ``seeds``): only the coreset selection is random (the approximate greedy's
random projection and start points, the exact greedy's projection, the random sampler's subset; the identity
sampler, a 100 % bank, is not). Features are extracted once; every seed repeats selection and scoring, and a
number is reported as the mean over the seeds with its sample standard deviation (ddof=1):
:func:`summarise_seeds`, :func:`mean_sd`, :func:`evaluate_over_seeds`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.data import make_loader, open_split, resolve_layout
from patchcore_lib.detectors import Detector, PatchCore, Predictions, make_detector
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation import evaluate_category
from patchcore_lib.evaluation.metrics import PixelMetrics, image_auroc, pixel_metrics
from patchcore_lib.evaluation.options import EvaluationOptions
from patchcore_lib.evaluation.runner import NO_MASKS_NOTE, method_name, prediction_metrics


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
    image = image_auroc(targets.labels, scores)
    pixel = pixel_metrics(targets.masks, maps) if targets.masks.any() else None  # one sort for both
    return {"image_auroc": image, "pixel_auroc": pixel.pixel_auroc if pixel else float("nan"),
            "pro": pixel.pro if pixel else float("nan")}


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


# =========================================================================== repeated over seeds
def seed_statistics(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1) of per-seed values; sd NaN for a single value."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else float("nan")


def summarise_seeds(per_seed: pd.DataFrame, by: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """One row per group of ``by`` (first-appearance order) of a table with one row per seed and group: every
    column of ``columns`` as its mean over the seeds followed by ``<column>_sd`` (sample sd, ddof=1; NaN for one
    seed), the other columns from the group's first row, and ``seeds`` (how many rows the group has)."""
    by, columns = list(by), [c for c in columns if c in per_seed]
    groups = per_seed.groupby(by, sort=False, dropna=False)
    numeric = per_seed[by + columns].astype({c: float for c in columns}).groupby(by, sort=False, dropna=False)
    parts = {"first": groups.first(), "mean": numeric.mean(), "sd": numeric.std(ddof=1)}
    out = parts["first"].copy()
    order = []
    for name in per_seed.columns:
        if name in by or name == "seed":
            continue
        if name in columns:
            out[name], out[f"{name}_sd"] = parts["mean"][name], parts["sd"][name]
            order += [name, f"{name}_sd"]
        else:
            order.append(name)
    out["seeds"] = groups.size()
    return out[order + ["seeds"]].reset_index()


def mean_sd(mean: Any, sd: Any = None, percent: bool = True, decimals: int = 1) -> str:
    """``"97.3 ± 0.4"``: a mean over seeds and its sd (in percent of 1 when ``percent``); ``"n/a"`` for a
    missing mean, the mean alone when the sd is missing (one seed)."""
    if mean is None or pd.isna(mean):
        return "n/a"
    scale = 100.0 if percent else 1.0
    text = f"{scale * float(mean):.{decimals}f}"
    return text if sd is None or pd.isna(sd) else f"{text} ± {scale * float(sd):.{decimals}f}"


def seed_record(records: Sequence[dict[str, Any]], seeds: Sequence[int], keys: Sequence[str],
                nested: Sequence[str] = ()) -> dict[str, Any]:
    """One record from one per seed (same keys): the first seed's, with every key of ``keys`` it has replaced by
    the mean over the seeds and ``<key>_sd`` (sample sd, ddof=1; NaN for one seed) added, ``seeds`` (in order)
    and ``per_seed`` ({key: values in seed order}); each key of ``nested`` (a dict of numbers, e.g. per defect
    type) becomes the dict of means beside a ``<key>_sd`` dict."""
    record = dict(records[0], seeds=[int(s) for s in seeds], per_seed={})
    for key in (k for k in keys if k in records[0]):
        record["per_seed"][key] = [float(r[key]) for r in records]
        record[key], record[f"{key}_sd"] = seed_statistics(record["per_seed"][key])
    for key in (k for k in nested if k in records[0]):
        stats = {name: seed_statistics([r[key][name] for r in records]) for name in records[0][key]}
        record[key], record[f"{key}_sd"] = ({n: v[i] for n, v in stats.items()} for i in (0, 1))
    return record


def draw_seed_band(ax: Any, curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray, color: str,
                   label: str) -> None:
    """Curves (x ascending, y) of the seeds on ``ax``: their mean on ``grid`` as a line and mean ± sd as a band
    (no band for one seed)."""
    values = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = values.mean(axis=0)
    ax.plot(grid, mean, color=color, lw=2, label=label)
    if len(values) > 1:
        sd = values.std(axis=0, ddof=1)
        ax.fill_between(grid, mean - sd, mean + sd, color=color, alpha=0.25, lw=0, label="± sd over seeds")


@dataclass
class SeedRun:
    """One seed of notebook 04: the seed, the evaluation row (as the runner's), predictions, fitted detector, and
    the pixel metrics with their curves (None without masks, or for an ensemble), reused by the figures."""

    seed: int
    row: dict[str, Any]
    predictions: Predictions
    detector: Detector
    pixel: PixelMetrics | None = None


def seed_pixel_metrics(runs: Sequence[Any], max_fpr: float = 0.3) -> list[PixelMetrics] | None:
    """Per seed (a :class:`SeedRun` or its predictions) the :class:`PixelMetrics` the run holds, else computed (one
    sort of the maps); None when the masks (the same for every seed) hold one class only: no pixel curve."""
    masks = runs[0].predictions.masks if isinstance(runs[0], SeedRun) else runs[0].masks
    if not 0 < int(np.count_nonzero(masks)) < np.size(masks):
        return None
    return [run.pixel if isinstance(run, SeedRun) and run.pixel is not None and run.pixel.max_fpr == max_fpr else
            pixel_metrics(masks, getattr(run, "predictions", run).maps, max_fpr=max_fpr) for run in runs]


@torch.no_grad()
def _test_features(model: PatchCore, dataset: Any, show_progress: bool
                   ) -> tuple[torch.Tensor, tuple[int, int], SplitTargets]:
    """Patch features [N, h*w, D] (CPU) of a test split, the grid and its targets, batched as ``predict``."""
    chunks, masks, labels, defects, paths, grid = [], [], [], [], [], (0, 0)
    for batch in tqdm(make_loader(dataset, model.config.batch_size), desc="Extracting test features",
                      disable=not show_progress, leave=False):
        features, grid = model.embed(batch["image"])
        chunks.append(features.cpu())
        masks.append(batch["mask"][:, 0].numpy().astype(np.uint8))
        labels.extend(batch["label"].tolist())
        defects.extend(batch["defect_type"])
        paths.extend(batch["path"])
    return torch.cat(chunks), (int(grid[0]), int(grid[1])), SplitTargets(np.asarray(labels), np.concatenate(masks), defects, paths)


def reseeded(config: Any, seed: int) -> Any:
    """``config`` (a PatchCore or ensemble config) with ``seed`` (every member's, for an ensemble)."""
    if hasattr(config, "members"):
        return dataclasses.replace(config, members=tuple(dataclasses.replace(m, seed=int(seed))
                                                         for m in config.members))
    return dataclasses.replace(config, seed=int(seed))


def evaluate_over_seeds(detector: Detector, data_root: str | Path, category: str, seeds: Sequence[int],
                        show_progress: bool = True, layout: str = "auto",
                        options: EvaluationOptions | None = None) -> tuple[list[SeedRun], torch.Tensor | None]:
    """:func:`~patchcore_lib.evaluation.evaluate_category` once per seed, each run's row equal to the runner's
    with ``seed`` = that seed. A PatchCore extracts the train and test features once; per seed it selects the
    coreset, builds the index and scores the test features (``fit_seconds`` / ``predict_seconds`` of a seed:
    the shared extraction time plus that seed's own selection + index / scoring time). An ensemble is evaluated
    from the images for every seed. Returns (one :class:`SeedRun` per seed, the train features [N*h*w, D] of
    a PatchCore for the calibration, else None)."""
    options = options or EvaluationOptions()
    if not isinstance(detector, PatchCore):
        runs = []
        for seed in seeds:
            seeded = make_detector(method_name(detector), reseeded(detector.config, seed))
            row, predictions = evaluate_category(seeded, data_root, category, show_progress=show_progress,
                                                 layout=layout, options=options)
            runs.append(SeedRun(int(seed), row, predictions, seeded))
        return runs, None
    config = detector.config
    layout = resolve_layout(data_root, category, layout)
    train = open_split(data_root, category, "train", config.resize, config.imagesize, layout=layout,
                       shots=options.train_shots, shots_seed=options.shots_seed, crop=config.crop)
    test = open_split(data_root, category, "test", config.resize, config.imagesize, layout=layout,
                      mask_convention=options.mask_convention, crop=config.crop)
    start = time.perf_counter()
    train_features = detector.extract_features(train, show_progress, desc="Extracting train features")
    extract_train = time.perf_counter() - start
    test_features, grid, targets = _test_features(detector, test, show_progress)
    extract_test = time.perf_counter() - start - extract_train
    has_masks = bool(getattr(test, "has_masks", True))
    runs = []
    for seed in seeds:
        model = detector.with_bank(seed=int(seed)).fit(train_features, show_progress=show_progress)
        start = time.perf_counter()
        scores, maps = score_split(model, test_features, grid, targets.image_size, config.batch_size)
        seconds = extract_test + time.perf_counter() - start
        predictions = Predictions(scores, maps, targets.masks, targets.labels, list(targets.defect_types),
                                  list(targets.paths), seconds)
        score_seconds = seconds - extract_test
        model.timings.update(extract_seconds=extract_train, fit_seconds=extract_train + model.timings["fit_seconds"],
                             predict_seconds=seconds)
        start = time.perf_counter()
        pixel = pixel_metrics(predictions.masks, predictions.maps, predictions.labels) if has_masks else None
        metrics = prediction_metrics(predictions, has_masks, pixel)
        metrics_seconds = time.perf_counter() - start
        row = {"category": category, **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "pro",
                                                                "anomaly_pixel_auroc", "anomaly_pro")},
               "fit_seconds": model.timings["fit_seconds"], "predict_seconds": seconds,
               "predict_seconds_per_image": seconds / len(test), "memory_bank_size": model.memory_bank_size,
               "num_train": len(train), "num_test": len(test),
               "anomalous_pixels": int(targets.masks.astype(bool).sum()) if has_masks else "",
               "method": method_name(model), "mask_convention": options.mask_convention, "layout": layout,
               "note": "" if has_masks else NO_MASKS_NOTE,
               # stage times (s): the extraction is shared by the seeds, the rest is this seed's own
               "extract_train_seconds": extract_train, "extract_test_seconds": extract_test,
               "coreset_seconds": model.timings.get("coreset_seconds", 0.0),
               "index_seconds": model.timings.get("index_seconds", 0.0), "score_seconds": score_seconds,
               "metrics_seconds": metrics_seconds}
        runs.append(SeedRun(int(seed), row, predictions, model, pixel))
    return runs, train_features
