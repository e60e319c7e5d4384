"""Notebook 03 (kNN and scoring): one memory bank scored in several ways, one factor at a time around the
default (k, image score, distance, blur), score histograms and an anomaly-map gallery."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from patchcore_lib.detectors import PatchCore, PatchCoreConfig
from patchcore_lib.study.shared import (METRIC_NAMES, SplitTargets, draw_contour, evaluate_scores, fit_bank,
                                        score_split)

DEFAULT_SCORING = {"num_nn": 1, "score": "max", "reweight_neighbourhood": 3, "distance": "sqeuclidean", "sigma": 4.0}


# ============================================================================ variants
def scoring_defaults(config: PatchCoreConfig) -> dict[str, Any]:
    """The scoring fields of ``config`` (the centre of the one-factor-at-a-time study)."""
    return {name: getattr(config, name) for name in DEFAULT_SCORING}


def scoring_variants(k_values: Sequence[int], b_values: Sequence[int], distances: Sequence[str],
                     sigmas: Sequence[float], default: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One-factor-at-a-time variants around ``default``: dicts with factor, value, changes (config fields)."""
    base = dict(DEFAULT_SCORING if default is None else default)
    out = []
    for k in k_values:
        out.append({"factor": "k (neighbours)", "value": f"k={k}", "changes": {**base, "num_nn": int(k)}})
    out.append({"factor": "image score", "value": "max", "changes": {**base, "score": "max"}})
    for b in b_values:
        out.append({"factor": "image score", "value": f"reweighted b={b}",
                    "changes": {**base, "score": "reweighted", "reweight_neighbourhood": int(b)}})
    for distance in distances:
        out.append({"factor": "distance", "value": distance, "changes": {**base, "distance": distance}})
    for sigma in sigmas:
        out.append({"factor": "Gaussian sigma", "value": f"sigma={sigma:g}", "changes": {**base, "sigma": float(sigma)}})
    for item in out:
        item["is_default"] = item["changes"] == base
    return out


def variant_label(item: dict[str, Any]) -> str:
    """``"<factor>: <value>"``, the key of a variant in the score and map dicts."""
    return f"{item['factor']}: {item['value']}"


def default_label(variants: Sequence[dict[str, Any]]) -> str:
    """The label of the first variant that equals the default."""
    return next(variant_label(v) for v in variants if v["is_default"])


def _changes_key(changes: dict[str, Any]) -> tuple:
    c = dict(changes)
    if c.get("score") == "max":
        c.pop("reweight_neighbourhood", None)  # b is unused by the max score
    return tuple(sorted(c.items()))


def knn_scoring_ablation(model: PatchCore, bank: torch.Tensor, test_features: torch.Tensor, grid: tuple[int, int],
                         targets: SplitTargets, variants: list[dict[str, Any]], keep_maps: Sequence[str] = (),
                         log: Callable[[str], None] | None = print
                         ) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score the test features with every variant on the same memory bank.

    Returns (table, scores by variant label, maps for the labels in ``keep_maps``). Identical configs
    (e.g. the default repeated in each factor) are computed once.
    """
    done: dict[tuple, tuple[dict[str, float], np.ndarray, np.ndarray | None]] = {}
    rows, scores_by, maps_by = [], {}, {}
    for item in variants:
        label = variant_label(item)
        key = _changes_key(item["changes"])
        want_maps = label in keep_maps or (item["is_default"] and "default" in keep_maps)
        if key not in done or (want_maps and done[key][2] is None):
            scorer = fit_bank(model, bank, **item["changes"])
            start = time.perf_counter()
            scores, maps = score_split(scorer, test_features, grid, targets.image_size)
            seconds = time.perf_counter() - start
            metrics = {**evaluate_scores(targets, scores, maps), "scoring_seconds": seconds}
            done[key] = (metrics, scores, maps if want_maps else None)
            if log is not None:
                log(f"{label:>32}: image AUROC {metrics['image_auroc']:.4f}, pixel AUROC "
                    f"{metrics['pixel_auroc']:.4f}, PRO {metrics['pro']:.4f} ({seconds:.1f}s)")
        metrics, scores, maps = done[key]
        scores_by[label] = scores
        if want_maps:
            maps_by["default" if item["is_default"] and "default" in keep_maps else label] = maps
        c = item["changes"]
        rows.append({"factor": item["factor"], "value": item["value"], "default": item["is_default"],
                     "k": c["num_nn"], "score": c["score"],
                     "b": c["reweight_neighbourhood"] if c["score"] == "reweighted" else pd.NA,
                     "distance": c["distance"], "sigma": c["sigma"], **metrics})
    table = pd.DataFrame(rows)
    table["b"] = table["b"].astype("Int64")
    return table, scores_by, maps_by


def percent_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with the metrics in percent, 2 decimals (for display)."""
    shown = table.copy()
    shown[list(METRIC_NAMES)] = (100 * shown[list(METRIC_NAMES)]).round(2)
    return shown


def default_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The metrics of the default variant."""
    row = table[table.default].iloc[0]
    return {m: float(row[m]) for m in METRIC_NAMES}


def histogram_variants(scores: dict[str, np.ndarray], variants: Sequence[dict[str, Any]], config: PatchCoreConfig,
                       k_values: Sequence[int]) -> dict[str, np.ndarray]:
    """The scores shown as histograms: the default, the re-weighted score with the config's b, the largest k
    and the Euclidean distance."""
    default = default_label(variants)
    shown = [default] + [label for label in scores if label != default and (
        label.endswith(f"reweighted b={config.reweight_neighbourhood}") or label.endswith(f"k={max(k_values)}")
        or label.endswith(": euclidean"))]
    return {label: scores[label] for label in shown}


# ============================================================================ plots
def plot_variant_metrics(table: pd.DataFrame, title: str = "") -> Any:
    """Grid of panels: rows = image AUROC / pixel AUROC / PRO (%), columns = factors; default circled."""
    factors = list(dict.fromkeys(table.factor))
    metrics = list(METRIC_NAMES.items())
    fig, axes = plt.subplots(len(metrics), len(factors), figsize=(3.6 * len(factors), 2.6 * len(metrics)),
                             squeeze=False, layout="constrained")
    colors = ("tab:blue", "tab:orange", "tab:green")
    for col, factor in enumerate(factors):
        frame = table[table.factor == factor]
        x = np.arange(len(frame))
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            y = 100 * frame[metric].astype(float).to_numpy()
            ax.plot(x, y, marker="o", color=colors[row], label=label)
            is_default = frame.default.to_numpy(bool)
            ax.scatter(x[is_default], y[is_default], s=90, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=5, label="default" if row == 0 and col == 0 else None)
            ax.set_xticks(x)
            ax.set_xticklabels(frame.value if row == len(metrics) - 1 else [""] * len(x), rotation=30,
                               ha="right", fontsize=8)
            ax.margins(x=0.15, y=0.25)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"{label} (%)", fontsize=9)
            if row == 0:
                ax.set_title(factor)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "Scoring variants, one factor at a time around the default (circled)")
    return fig


def plot_score_histograms(scores_by: dict[str, np.ndarray], labels: np.ndarray, bins: int = 20) -> Any:
    """Histograms of image scores, good vs defective images, one panel per variant."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(scores_by), figsize=(4.8 * len(scores_by), 3.8), squeeze=False)
    for ax, (name, scores) in zip(axes[0], scores_by.items()):
        edges = np.histogram_bin_edges(scores, bins=bins)
        ax.hist(scores[labels == 0], bins=edges, alpha=0.6, color="tab:blue", label=f"good (n={(labels == 0).sum()})")
        ax.hist(scores[labels == 1], bins=edges, alpha=0.6, color="tab:red", label=f"defect (n={(labels == 1).sum()})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("image anomaly score")
        ax.set_ylabel("number of test images")
        ax.legend(fontsize=8)
    fig.suptitle("Image score distributions, good vs defective test images")
    fig.tight_layout()
    return fig


def gallery_indices(targets: SplitTargets, scores: np.ndarray, size: int = 8) -> list[int]:
    """Defective images with the highest and lowest scores per type, plus the highest-scored good images."""
    scores = np.asarray(scores)
    defect_types = sorted(set(t for t in targets.defect_types if t != "good"))
    chosen: list[int] = []
    for defect in defect_types:
        idx = [i for i, t in enumerate(targets.defect_types) if t == defect]
        chosen.append(max(idx, key=lambda i: scores[i]))
    good = sorted((i for i, t in enumerate(targets.defect_types) if t == "good"), key=lambda i: -scores[i])
    chosen += good[:max(1, size - len(chosen))]
    remaining = sorted((i for i in range(len(scores)) if i not in chosen and targets.labels[i] == 1),
                       key=lambda i: scores[i])
    while len(chosen) < size and remaining:
        chosen.append(remaining.pop(0))  # hardest defects (lowest score)
    return chosen[:size]


def plot_anomaly_gallery(dataset: Any, maps: np.ndarray, scores: np.ndarray, indices: Sequence[int],
                         threshold: float | None = None, columns: int = 4) -> Any:
    """Images with their anomaly map overlaid (shared colour scale) and ground-truth mask contours."""
    rows = max(1, math.ceil(len(indices) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.4 * rows), squeeze=False, layout="constrained")
    vmin, vmax = float(np.min(maps)), float(np.percentile(maps, 99.9))
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices):
        item = dataset[index]
        ax.imshow(dataset.preprocess.denormalise(item["image"]))
        im = ax.imshow(maps[index], cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
        draw_contour(ax, item["mask"][0].numpy(), color="white")
        ax.set_title(f"{item['defect_type']}  score {scores[index]:.3g}", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="anomaly map (patch score)")
    fig.suptitle("Anomaly maps (overlay) with ground-truth contours (white)")
    return fig
