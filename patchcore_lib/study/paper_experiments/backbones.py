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
from patchcore_lib.study.paper_experiments.features import (FeatureSet, bank_for, evaluate_bank, extract_feature_set,
                                                            missing_weights, pair_config)
from patchcore_lib.study.display import METRIC_NAMES, metric_range, percent_table


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
                               "coreset_ratio": config.coreset_ratio, **{m: float("nan") for m in PAPER_METRICS}}
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
        rows.append({**row, **{m: result[m] for m in PAPER_METRICS}, "bank_size": len(bank),
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
    columns = ["source", "backbone", "imagesize", "coreset_ratio", *PAPER_METRICS, "status"]
    return percent_table(pd.concat([ours[columns], paper[columns]], ignore_index=True), 1)


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
