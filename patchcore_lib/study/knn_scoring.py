"""Notebook 03 (kNN and scoring): one memory bank scored in several ways, one factor at a time around the
default (k, image score, distance, blur), score histograms and an anomaly-map gallery.

Repeated over seeds (:func:`knn_scoring_over_seeds`): per seed a memory bank selected with that seed (the only
random part), every variant scored on it; the table reports the mean over the seeds and its sample sd."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator
import torch

from patchcore_lib.detectors import PatchCore, PatchCoreConfig
from patchcore_lib.errors import ConfigError
from patchcore_lib.study.cached_scoring import SplitTargets, evaluate_scores, mean_sd, score_split, summarise_seeds
from patchcore_lib.study.display import METRIC_NAMES, draw_contour, method_colour, metric_range, score_text

DEFAULT_SCORING = {"num_nn": 1, "score": "max", "reweight_neighbourhood": 3, "distance": "sqeuclidean", "sigma": 4.0}


# ============================================================================ variants
def scoring_defaults(config: PatchCoreConfig) -> dict[str, Any]:
    """The scoring fields of ``config`` (the centre of the one-factor-at-a-time study)."""
    return {name: getattr(config, name) for name in DEFAULT_SCORING}


def scoring_variants(k_values: Sequence[int], b_values: Sequence[int], distances: Sequence[str],
                     sigmas: Sequence[float], default: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One-factor-at-a-time variants around ``default``: dicts with factor, value, changes (config fields)."""
    base = dict(DEFAULT_SCORING if default is None else default)
    out: list[dict[str, Any]] = []
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
            scorer = model.with_bank(bank, **item["changes"])
            start = time.perf_counter()
            scores, maps = score_split(scorer, test_features, grid, targets.image_size)
            seconds = time.perf_counter() - start
            metrics = {**evaluate_scores(targets, scores, maps), "scoring_seconds": seconds}
            done[key] = (metrics, scores, maps if want_maps else None)
            if log is not None:
                log(f"{label:>32}: image AUROC {metrics['image_auroc']:.2%}, pixel AUROC "
                    f"{metrics['pixel_auroc']:.2%}, PRO {metrics['pro']:.2%} ({seconds:.1f}s)")
        metrics, scores, kept_maps = done[key]
        scores_by[label] = scores
        if want_maps and kept_maps is not None:  # kept when wanted (computed again above otherwise)
            maps_by["default" if item["is_default"] and "default" in keep_maps else label] = kept_maps
        c = item["changes"]
        rows.append({"factor": item["factor"], "value": item["value"], "default": item["is_default"],
                     "k": c["num_nn"], "score": c["score"],
                     "b": c["reweight_neighbourhood"] if c["score"] == "reweighted" else pd.NA,
                     "distance": c["distance"], "sigma": c["sigma"], **metrics})
    table = pd.DataFrame(rows)
    table["b"] = table["b"].astype("Int64")
    return table, scores_by, maps_by


#: the columns of a variant's row averaged over seeds (``<column>_sd``: sample sd)
SEED_COLUMNS = (*METRIC_NAMES, "scoring_seconds")


def knn_scoring_over_seeds(model: PatchCore, train_features: torch.Tensor, test_features: torch.Tensor,
                           grid: tuple[int, int], targets: SplitTargets, variants: list[dict[str, Any]],
                           seeds: Sequence[int], keep_maps: Sequence[str] = (),
                           log: Callable[[str], None] | None = print) -> tuple[Any, ...]:
    """:func:`knn_scoring_ablation` once per seed, each on the memory bank ``model``'s sampler selects from
    ``train_features`` [N, h*w, D] with that seed. Returns (one row per variant: :data:`SEED_COLUMNS` as the mean
    over the seeds and ``<column>_sd``; one row per variant and seed; the first seed's scores and maps; the model
    fitted with the first seed)."""
    flat = train_features.reshape(-1, train_features.shape[-1])
    tables, first = [], None
    for seed in seeds:
        fitted = model.with_bank(seed=int(seed)).fit(flat, show_progress=False)
        bank = fitted.memory_bank
        if bank is None:  # fit() sets it
            raise ConfigError(f"seed {seed}: fitting left no memory bank")
        if log is not None:
            log(f"seed {seed}: memory bank {tuple(bank.shape)}, selected in "
                f"{fitted.timings['coreset_seconds']:.1f}s")
        table, scores, maps = knn_scoring_ablation(fitted, bank, test_features, grid, targets, variants,
                                                   keep_maps=keep_maps if first is None else (), log=log)
        tables.append(table.assign(seed=int(seed)))
        first = first or (scores, maps, fitted)
    if first is None:
        raise ConfigError("knn_scoring_over_seeds needs at least one seed")
    per_seed = pd.concat(tables, ignore_index=True)
    summary = summarise_seeds(per_seed, ["factor", "value"], SEED_COLUMNS)
    summary["b"] = summary["b"].astype("Int64")
    return summary, per_seed, *first


def variant_display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The variants to read: metrics as "mean ± sd" over the seeds in percent (1 decimal), seconds as mean."""
    shown = table[["factor", "value", "default"]].copy()
    for metric, label in METRIC_NAMES.items():
        shown[f"{label} (%)"] = [mean_sd(v, table[f"{metric}_sd"].iloc[i] if f"{metric}_sd" in table else None)
                                 for i, v in enumerate(table[metric])]
    shown["score (s)"] = table["scoring_seconds"].map(lambda v: f"{v:.2f}")
    return shown


def default_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The metrics of the default variant (and their sd over seeds, ``<metric>_sd``, where the table has it)."""
    row = table[table.default].iloc[0]
    return {m: float(row[m]) for m in (*METRIC_NAMES, *(f"{m}_sd" for m in METRIC_NAMES)) if m in row}


def histogram_variants(scores: dict[str, np.ndarray], variants: Sequence[dict[str, Any]], config: PatchCoreConfig,
                       k_values: Sequence[int]) -> dict[str, np.ndarray]:
    """The scores shown as histograms: the default, the re-weighted score with the config's b, the largest k
    and the Euclidean distance."""
    default = default_label(variants)
    shown = [default] + [label for label in scores if label != default and (
        label.endswith(f"reweighted b={config.reweight_neighbourhood}") or label.endswith(f"k={max(k_values)}")
        or label.endswith(": euclidean"))]
    return {label: scores[label] for label in shown}


# ============================================================================ Eq. 7 re-weighting
def _ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every score (highest = 0; ties broken by index)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ranks = np.empty(len(order), dtype=int)
    ranks[order] = np.arange(len(order))
    return ranks


def _pair_flips(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> tuple[int, int, int]:
    """(good/defect pairs, pairs put in the right order, pairs put in the wrong order) between two scorings."""
    good, bad = labels == 0, labels == 1
    right_before = before[bad][None, :] > before[good][:, None]  # [n_good, n_defect]
    right_after = after[bad][None, :] > after[good][:, None]
    return int(right_before.size), int((~right_before & right_after).sum()), int((right_before & ~right_after).sum())


def reweighting_effect(scores_by: dict[str, np.ndarray], variants: Sequence[dict[str, Any]], labels: np.ndarray
                       ) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """What Eq. 7 does to the image scores, per b: the weights w = s / s* and how many images change rank.

    ``scores_by``/``variants`` as returned by / given to :func:`knn_scoring_ablation` (it needs the "image
    score: max" variant and the re-weighted ones). s* is the max score as a Euclidean distance (square root
    of the squared distance; only defined for k = 1, else the weights are left out). Per b: the weight
    quantiles and their lower bound 1 - 1/(b+1); the images whose rank changes; the good/defect pairs the
    re-weighting puts in the right and in the wrong order (their difference / all pairs = the change of image
    AUROC, ties aside). Returns (table, {b: weights [N]}).
    """
    labels = np.asarray(labels)
    by_label = {variant_label(v): v for v in variants}
    max_item = next(v for v in variants if v["factor"] == "image score" and v["changes"]["score"] == "max")
    base = max_item["changes"]
    s_max = np.asarray(scores_by[variant_label(max_item)], dtype=float)
    s_star = np.sqrt(np.clip(s_max, 0, None)) if base["distance"] == "sqeuclidean" else s_max
    rows, weights = [], {}
    for label, item in by_label.items():
        if item["changes"]["score"] != "reweighted" or item["factor"] != "image score":
            continue
        b = int(item["changes"]["reweight_neighbourhood"])
        s_rew = np.asarray(scores_by[label], dtype=float)
        pairs, to_right, to_wrong = _pair_flips(s_max, s_rew, labels)
        row = {"b": b, "weight_lower_bound": 1 - 1 / (b + 1),
               "images_changing_rank": int((_ranks(s_max) != _ranks(s_rew)).sum()), "images": len(s_rew),
               "pairs_to_right_order": to_right, "pairs_to_wrong_order": to_wrong, "good_defect_pairs": pairs,
               "auroc_change_from_flips": (to_right - to_wrong) / pairs if pairs else float("nan")}
        if base["num_nn"] == 1:
            w = np.divide(s_rew, s_star, out=np.full_like(s_rew, np.nan), where=s_star > 0)
            weights[b] = w
            row.update({f"weight_{q}": float(np.nanquantile(w, p)) for q, p in
                        (("min", 0.0), ("median", 0.5), ("max", 1.0))})
        rows.append(row)
    return pd.DataFrame(rows), weights


def plot_reweighting(weights: dict[int, np.ndarray], scores_by: dict[str, np.ndarray],
                     variants: Sequence[dict[str, Any]], labels: np.ndarray, b_shown: int, bins: int = 25) -> Any:
    """One panel per b: the Eq. 7 weights of good vs defective images with the lower bound 1 - 1/(b+1); last
    panel: each image's rank under the max score vs under the re-weighted score with b = ``b_shown``."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(weights) + 1, figsize=(4.4 * (len(weights) + 1), 3.9), squeeze=False)
    for ax, (b, w) in zip(axes[0], sorted(weights.items())):
        # fixed bins from the lower bound to 1 (w ~ 1 up to float rounding must not make invisible bins)
        w = np.clip(w, 1 - 1 / (b + 1), 1.0)
        edges = np.linspace(1 - 1 / (b + 1), 1.0, bins + 1)
        ax.hist(w[labels == 0], bins=edges, alpha=0.6, color="tab:blue", label="good")
        ax.hist(w[labels == 1], bins=edges, alpha=0.6, color="tab:red", label="defect")
        ax.axvline(1 - 1 / (b + 1), color="black", ls="--", lw=1, label="lower bound 1 - 1/(b+1)")
        ax.set(title=f"Eq. 7 weight w = s / s*, b = {b}", xlabel="w", ylabel="number of test images")
        ax.legend(fontsize=7)
    ax = axes[0, -1]
    max_item = next(v for v in variants if v["factor"] == "image score" and v["changes"]["score"] == "max")
    rew_item = next((v for v in variants if v["factor"] == "image score" and v["changes"]["score"] == "reweighted"
                     and v["changes"]["reweight_neighbourhood"] == b_shown), None)
    if rew_item is not None:
        r_max = _ranks(scores_by[variant_label(max_item)])
        r_rew = _ranks(scores_by[variant_label(rew_item)])
        for value, color, name in ((0, "tab:blue", "good"), (1, "tab:red", "defect")):
            ax.scatter(r_max[labels == value], r_rew[labels == value], s=10, color=color, alpha=0.7, label=name)
        ax.plot([0, len(r_max)], [0, len(r_max)], color="grey", lw=0.8)
        ax.set(title=f"rank under max vs re-weighted (b = {b_shown})", xlabel="rank, max score (0 = highest)",
               ylabel="rank, re-weighted score")
        ax.legend(fontsize=7)
    fig.suptitle("What the paper's re-weighting (Eq. 7) changes")
    fig.tight_layout()
    return fig


# ============================================================================ plots
def plot_variant_metrics(table: pd.DataFrame, title: str = "") -> Any:
    """Grid of panels: rows = image AUROC / pixel AUROC / PRO (%), columns = factors; default circled."""
    factors = list(dict.fromkeys(table.factor))
    metrics = list(METRIC_NAMES.items())
    fig, axes = plt.subplots(len(metrics), len(factors), figsize=(3.6 * len(factors), 2.6 * len(metrics)),
                             squeeze=False, layout="constrained")
    colour = method_colour("PatchCore")  # every variant is PatchCore: its one colour (rows are told apart by label)
    for col, factor in enumerate(factors):
        frame = table[table.factor == factor]
        x = np.arange(len(frame))
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            y = 100 * frame[metric].astype(float).to_numpy()
            sd = 100 * frame[f"{metric}_sd"].astype(float).fillna(0).to_numpy() if f"{metric}_sd" in frame else None
            ax.errorbar(x, y, yerr=sd, marker="o", color=colour, capsize=3,
                        label=label + (" (± sd over seeds)" if sd is not None else ""))
            is_default = frame.default.to_numpy(bool)
            ax.scatter(x[is_default], y[is_default], s=90, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=5, label="default" if row == 0 and col == 0 else None)
            ax.set_xticks(x)
            ax.set_xticklabels(frame.value if row == len(metrics) - 1 else [""] * len(x), rotation=30,
                               ha="right", fontsize=8)
            ax.margins(x=0.15)
            spread = table[f"{metric}_sd"].astype(float).fillna(0) if f"{metric}_sd" in table else 0.0 * table[metric]
            bars = pd.concat([table[metric] - spread, table[metric] + spread])
            ax.set_ylim(*metric_range(bars))  # one y-range per metric row holding every ± sd bar, never above 100%
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
        ax.xaxis.set_major_locator(MaxNLocator(5))  # scores run to 10^5: few ticks, thousands separated
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: score_text(value)))
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
        ax.set_title(f"{item['defect_type']}  score {score_text(scores[index])}", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="anomaly map (patch score)")
    fig.suptitle("Anomaly maps (overlay) with ground-truth contours (white)")
    return fig
