"""Notebook 07 (paper experiments), section 1: backbone x image size, beside the paper's Table S6."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from tqdm.auto import tqdm

from patchcore_lib.detectors import PatchCoreConfig
from patchcore_lib.errors import WeightsNotFoundError
from patchcore_lib.paper.ablations import BACKBONES_S6
from patchcore_lib.paper.reference import PAPER_METRICS
from patchcore_lib.study.cached_scoring import mean_sd, seed_statistics, summarise_seeds
from patchcore_lib.study.paper_experiments.features import (FeatureSet, evaluate_seeds, extract_feature_set,
                                                            missing_weights, pair_config)
from patchcore_lib.study.display import METRIC_NAMES, metric_range
from patchcore_lib.study.paper_experiments.paper_rows import paper_frame


def backbone_size_table(params: dict[str, Any], backbones: Sequence[str], imagesizes: Sequence[int],
                        seeds: Sequence[int] | None = None, keep: PatchCoreConfig | None = None,
                        log: Callable[[str], None] | None = print) -> tuple[pd.DataFrame, FeatureSet | None]:
    """Fit on train / evaluate test for every (backbone, image size) and coreset seed of ``seeds`` (None: the
    config's seed): one row per seed (features extracted once per pair; a 100 % bank evaluated once, its row
    repeated per seed with a note); backbones without weights on disk give one ``weights not present`` row (seed
    NA). Returns the per-seed table (:func:`backbone_summary`: mean ± sd) and the FeatureSet (with its banks) of
    the pair whose features are those of ``keep`` (same backbone, layers, resize, image size, ...), None when none
    is."""
    rows: list[dict[str, Any]] = []
    kept: FeatureSet | None = None
    targets: dict[Any, Any] = {}
    pairs = [(b, int(s)) for b in backbones for s in imagesizes]
    for backbone, size in tqdm(pairs, desc="backbone x image size"):
        config = pair_config(params, backbone, size)
        row: dict[str, Any] = {"backbone": backbone, "imagesize": size, "seed": pd.NA, "resize": config.resize,
                               "crop": config.crop, "coreset_ratio": config.coreset_ratio,
                               **{m: float("nan") for m in PAPER_METRICS},
                               **{c: float("nan") for c in ("bank_size", "fit_seconds", "seconds_per_test_image")},
                               "timing": ""}
        problem = missing_weights(backbone, config.weights)
        try:
            fs = None if problem else extract_feature_set(config, params, targets)
        except WeightsNotFoundError as exc:
            problem = f"weights not present: {exc}"
        if fs is None:
            rows.append({**row, "status": problem, "note": ""})
            if log:
                log(f"{backbone} @ {size}: {problem}")
            continue
        train_seconds = fs.seconds_per_image["train"] * len(fs.train)
        runs = evaluate_seeds(fs, config.coreset_ratio, [config.seed] if seeds is None else seeds)
        for seed, bank, select_seconds, result in runs:
            rows.append({**row, "seed": seed, **{m: result[m] for m in PAPER_METRICS}, "bank_size": len(bank),
                         "fit_seconds": train_seconds + select_seconds + result["index_seconds"],
                         "seconds_per_test_image": fs.seconds_per_image["test"] + result["search_seconds_per_image"],
                         "timing": fs.timing, "status": "ok", "note": result["note"]})
        if log:
            image, pro = (mean_sd(*seed_statistics([r[m] for *_, r in runs])) for m in ("image_auroc", "pro"))
            log(f"{backbone} @ {size}: image AUROC {image}%, PRO {pro}% ({len(runs)} seeds)")
        if keep is not None and config.feature_key() == keep.feature_key():
            kept = fs
    return pd.DataFrame(rows).astype({"seed": "Int64"}), kept


#: the columns of a per-seed row that vary with the seed: mean and ``<column>_sd`` in :func:`backbone_summary`
SEED_COLUMNS = (*PAPER_METRICS, "bank_size", "fit_seconds", "seconds_per_test_image")


def backbone_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, image size) of :func:`backbone_size_table`'s per-seed rows: every
    :data:`SEED_COLUMNS` value as the mean over the seeds followed by ``<column>_sd`` (sample sd, ddof=1; NaN
    for one seed; 0 for a 100 % bank, the same for every seed), ``seeds`` (0 for a pair that did not run)."""
    summary = summarise_seeds(per_seed, ["backbone", "imagesize"], SEED_COLUMNS)
    summary.loc[summary.status != "ok", "seeds"] = 0
    return summary


def backbone_comparison(summary: pd.DataFrame, label: str, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ours (source ``label``: mean ± sd over the seeds, :func:`backbone_summary`) above the paper's Table S6
    rows (single values; ``paper``: :func:`~patchcore_lib.study.paper_experiments.paper_values`' rows with their
    ``scope``, None: Table S6 as printed), metrics in percent (1 decimal); ``fit_seconds``: our mean over the seeds."""
    rows = []
    for _, r in summary.iterrows():
        rows.append({"source": label, "backbone": r.backbone, "imagesize": int(r.imagesize),
                     "coreset_ratio": r.coreset_ratio, **{m: mean_sd(r[m], r.get(f"{m}_sd")) for m in PAPER_METRICS},
                     "fit_seconds": round(float(r.fit_seconds), 2), "seeds": int(r.seeds), "status": r.status,
                     "note": r.get("note", "")})
    if paper is None:
        paper = paper_frame(BACKBONES_S6)
    paper = paper.assign(backbone=lambda t: t.backbone.fillna(t.paper_backbone))
    for _, r in paper.iterrows():
        rows.append({"source": r.source, "backbone": r.backbone, "imagesize": int(r.imagesize),
                     "coreset_ratio": r.coreset_ratio, **{m: mean_sd(r[m]) for m in PAPER_METRICS},
                     "fit_seconds": float("nan"), "seeds": pd.NA, "status": "reference", "note": r.scope})
    return pd.DataFrame(rows).astype({"seeds": "Int64"})


def plot_backbone_sizes(summary: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Image AUROC, pixel AUROC and PRO per backbone, one line per image size: the mean over the seeds with
    ± 1 sd error bars (:func:`backbone_summary`); the paper's Table S6 (``paper``, see :func:`paper_values`) as
    stars where the backbone, the image size and the coreset ratio match, and its WideResNet-50 row at the same
    ratio (the paper's setting) as a dotted line; a panel where every run has the same value says so."""
    ran = summary[summary.status == "ok"]
    names = list(dict.fromkeys(ran.backbone))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    for ax, metric in zip(axes, ("image_auroc", "pixel_auroc", "pro")):
        sd = ran[f"{metric}_sd"].astype(float).fillna(0.0) if f"{metric}_sd" in ran else 0.0 * ran[metric]
        for size, frame in ran.groupby("imagesize"):
            x = [names.index(b) for b in frame.backbone]
            ax.errorbar(x, 100 * frame[metric], yerr=100 * sd[frame.index], marker="o", capsize=4,
                        label=f"ours, {size} px (mean ± sd, {int(frame.seeds.max())} seeds)")
        match = ran.iloc[:0] if paper is None else paper[
            paper.backbone.isin(names) & paper.coreset_ratio.isin(ran.coreset_ratio.unique())
            & paper.imagesize.isin(ran.imagesize.unique())]
        if len(match):
            ax.scatter([names.index(b) for b in match.backbone], 100 * match[metric], marker="*", s=140,
                       color="black", zorder=5, label="paper Table S6 (mean of 15, backbone as in the row)")
        reference = ran.iloc[:0] if paper is None else paper[
            (paper.backbone == "wide_resnet50_2") & paper.coreset_ratio.isin(ran.coreset_ratio.unique())
            & (paper.imagesize == 224)]
        for _, row in reference.dropna(subset=[metric]).iterrows():
            ax.axhline(100 * row[metric], ls=":", color="black", lw=1.2,
                       label=f"paper: WideResNet-50, 224 px, {100 * row.coreset_ratio:g}% ("
                             f"{'per class' if metric in str(row.get('per_class', '')).split(',') else 'mean of 15'})")
        ours = pd.concat([ran[metric] - sd, ran[metric] + sd])
        shown = [ours, match[metric], reference[metric]]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right")
        ax.set_ylim(*metric_range(pd.concat([v for v in shown if len(v)]).dropna()))
        ax.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        ax.set_title(METRIC_NAMES[metric])
        if len(ran) > 1 and ran[metric].astype(float).round(6).nunique() == 1:
            ax.text(0.5, 0.06, f"every run {100 * float(ran[metric].iloc[0]):.1f}%: saturated, no difference to show",
                    ha="center", transform=ax.transAxes, fontsize=8, color="dimgrey")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "Backbone x image size")
    return fig
