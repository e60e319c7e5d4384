"""Notebook 02 (coreset ablation): every sampler x coreset ratio x seed on cached features (reported as the mean
over the seeds with its sample sd), the seed spread, and the paper's values for the same dataset beside ours.

A seed changes the selection only: the projection of the greedy samplers, the approximate greedy's start
points, the random sampler's subset. A 100 % bank is the same for every seed (sd 0)."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from patchcore_lib.components.sampling import SAMPLERS, make_sampler
from patchcore_lib.detectors import PatchCore
from patchcore_lib.errors import ConfigError
from patchcore_lib.paper.ablations import CORESET_VS_RANDOM
from patchcore_lib.paper.anchors import paper_other_datasets
from patchcore_lib.paper.reference import is_mvtec_category
from patchcore_lib.study.cached_features import content_digest, feature_store
from patchcore_lib.study.cached_scoring import (SplitTargets, coverage_radius, evaluate_scores, mean_sd, score_split,
                                                summarise_seeds)
from patchcore_lib.study.display import METRIC_NAMES, method_colour, percent_axis
from patchcore_lib.utils.source_fingerprint import code_fingerprint
from patchcore_lib.utils.store import content_key

#: The paper's own values per sampler and coreset ratio in % (MVTec AD means, WideResNet-50; ``approximate``:
#: read off a plot; ``source``: the table or figure), from :data:`~patchcore_lib.paper.ablations.
#: CORESET_VS_RANDOM`. Our runs are single categories: markers for orientation, not targets.
PAPER_CORESET = (CORESET_VS_RANDOM.frame().drop(columns=["source", "scope"]).rename(columns={"from": "source"})
                 .astype({m: float for m in METRIC_NAMES}))
PAPER_CORESET[list(METRIC_NAMES)] = (100 * PAPER_CORESET[list(METRIC_NAMES)]).round(2)


def paper_markers(category: str) -> pd.DataFrame | None:
    """The paper's values to draw beside a run on ``category``, only where the dataset matches (percent; columns
    ``sampler, ratio, approximate, source`` and the metrics): the MVTec AD random-vs-coreset means
    (:data:`PAPER_CORESET`) for an MVTec AD category; the paper's PatchCore result on another dataset (e.g. MTD,
    image AUROC at its one coreset ratio) for that dataset's category; None where the paper has nothing."""
    if is_mvtec_category(category):
        return PAPER_CORESET
    rows = [{"sampler": "approx_greedy", "ratio": float(hit["coreset_ratio"]), "approximate": False,
             "source": f"{hit['method']} on {hit['dataset']}", **{m: float(hit[m]) for m in METRIC_NAMES}}
            for _, hit in paper_other_datasets().query("category == @category").iterrows()]
    return pd.DataFrame(rows) if rows else None


#: plot styles (colour, marker) of the samplers known when the plots were designed; any other registered
#: sampler gets one from the fallback cycles, so adding a sampler needs no edit here
#: the store kind of finished ablation rows
ROWS = "coreset_row"

SAMPLER_STYLE = {"approx_greedy": (method_colour("PatchCore"), "s"),  # PatchCore's own sampler: its colour
                 "random": ("tab:grey", "o"), "greedy": ("tab:purple", "^"), "identity": ("tab:brown", "D")}
_FALLBACK_COLOURS = ("tab:red", "tab:pink", "tab:olive", "tab:cyan")  # none of the methods' colours
_FALLBACK_MARKERS = ("v", "P", "X", "*", "h", "<", ">", "p")


def sampler_style(name: str) -> tuple[str, str]:
    """(colour, marker) of a sampler in the plots: fixed for the known ones, else from a cycle in
    registration order (names not registered: from a hash of the name)."""
    if name in SAMPLER_STYLE:
        return SAMPLER_STYLE[name]
    others = [n for n in SAMPLERS if n not in SAMPLER_STYLE]
    if name in others:
        index = others.index(name)
    else:
        index = int(hashlib.sha256(str(name).encode()).hexdigest(), 16)
    return _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)], _FALLBACK_MARKERS[index % len(_FALLBACK_MARKERS)]


# ============================================================================ sampler x ratio
def _bank_key(indices: torch.Tensor) -> str:
    return hashlib.sha256(np.sort(indices.cpu().numpy()).tobytes()).hexdigest()


def coreset_ablation(model: PatchCore, train_features: torch.Tensor, test_features: torch.Tensor,
                     grid: tuple[int, int], targets: SplitTargets, samplers: Sequence[str], ratios: Sequence[float],
                     max_exact_greedy: int = 20000, show_progress: bool = False,
                     log: Callable[[str], None] | None = print, rows: str | Path | None = None,
                     seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Every sampler x ratio x seed (``seeds``; None: the model's seed): one row each with the seed, bank size,
    selection seconds, coverage radius, image/pixel AUROC, PRO (:func:`seed_summary`: mean and sd over seeds).

    ``train_features``/``test_features`` are cached [N, h*w, D]. Exact greedy is skipped (status
    ``n/a``) when N > ``max_exact_greedy`` or when the sampler refuses (matrix too big). Selections that
    give the same bank (e.g. every sampler at ratio 1) are scored once. ``rows``: the store of finished rows
    (:func:`~patchcore_lib.study.cached_features.feature_store`; a row's key is the inputs' content, the row's
    options, the model config and this code): a row found there is reused (column ``reused``), every new one is stored, so
    an interrupted or extended ablation computes only what it lacks.
    """
    flat = train_features.reshape(-1, train_features.shape[-1])
    n = len(flat)
    store = feature_store(rows) if rows is not None else None
    inputs = content_digest(train_features, test_features, targets.labels, targets.masks, np.asarray(grid)) \
        if store is not None else ""
    code = code_fingerprint((__name__,))
    seen: dict[str, dict[str, Any]] = {}
    table = []
    for sampler_name, ratio, seed in ((s, r, int(e)) for s in samplers for r in ratios
                                      for e in (seeds if seeds is not None else [model.config.seed])):
        row: dict[str, Any] = {"sampler": sampler_name, "ratio": float(ratio), "seed": seed, "train_features": n}
        if sampler_name == "greedy" and ratio < 1 and n > max_exact_greedy:
            row.update(status=f"n/a (N={n} > max_exact_greedy={max_exact_greedy})")
            table.append(row)
            continue
        key = content_key(ROWS, code=code, data=inputs, params={"sampler": sampler_name, "ratio": float(ratio),
                                                                "seed": seed, "config": model.config.to_dict()})
        stored = store.lookup(ROWS, key) if store is not None else None
        row["reused"] = stored is not None
        if stored is None:
            try:
                stored = _select_and_score(model, flat, grid, targets, test_features, sampler_name, ratio, seed,
                                           seen, show_progress)
            except ConfigError as exc:
                row.update(status=f"n/a ({exc})")
                table.append(row)
                continue
            if store is not None:
                store.save(ROWS, key, stored)
        same = stored["bank_key"] in seen
        result = seen.setdefault(stored["bank_key"], stored["result"])
        row.update(selection_seconds=stored["selection_seconds"], bank_features=stored["bank_features"],
                   **result, status="ok (same bank as above)" if same else "ok")
        table.append(row)
        if log is not None:
            log(f"{sampler_name:>13} {100 * ratio:6.2f}% seed {seed}: bank {row['bank_features']:7d}, select "
                f"{row['selection_seconds']:.2f}s, image AUROC {result['image_auroc']:.2%}, "
                f"pixel AUROC {result['pixel_auroc']:.2%}, PRO {result['pro']:.2%}"
                + (" (stored row)" if row["reused"] else ""))
    columns = ["sampler", "ratio", "seed", "train_features", "bank_features", "selection_seconds", "coverage_radius",
               "image_auroc", "pixel_auroc", "pro", "scoring_seconds", "status", "reused"]
    return pd.DataFrame(table).reindex(columns=columns)


def _select_and_score(model: PatchCore, flat: torch.Tensor, grid: tuple[int, int], targets: SplitTargets,
                      test_features: torch.Tensor, sampler_name: str, ratio: float, seed: int,
                      seen: dict[str, dict[str, Any]], show_progress: bool) -> dict[str, Any]:
    """One row's selection (timed) and, for a bank not in ``seen``, its coverage radius and test metrics."""
    sampler = make_sampler(sampler_name, ratio, seed=seed, device=model.device,
                           show_progress=show_progress)
    start = time.perf_counter()
    indices = sampler.select(flat)  # ConfigError: the sampler refuses (e.g. a matrix too big)
    selection_seconds = time.perf_counter() - start
    bank_key = _bank_key(indices)
    if bank_key in seen:
        result = seen[bank_key]
    else:
        bank = flat[indices]
        radius = 0.0 if len(indices) == len(flat) else coverage_radius(flat, bank, model.config.knn_backend)
        scorer = model.with_bank(bank)
        start = time.perf_counter()
        scores, maps = score_split(scorer, test_features, grid, targets.image_size)
        scoring_seconds = time.perf_counter() - start
        result = {"coverage_radius": radius, "scoring_seconds": scoring_seconds,
                  **evaluate_scores(targets, scores, maps)}
    return {"selection_seconds": selection_seconds, "bank_features": int(len(indices)), "bank_key": bank_key,
            "result": {k: float(v) for k, v in result.items()}}


#: the columns of a row that vary with the seed: averaged by :func:`seed_summary` (``<column>_sd``: sample sd)
SEED_COLUMNS = ("selection_seconds", "coverage_radius", "image_auroc", "pixel_auroc", "pro", "scoring_seconds")


def seed_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per sampler x ratio of :func:`coreset_ablation`'s per-seed rows: every :data:`SEED_COLUMNS` value
    as the mean over the seeds followed by ``<column>_sd`` (sample sd, ddof=1; NaN for one seed), ``seeds``."""
    return summarise_seeds(per_seed, ["sampler", "ratio"], SEED_COLUMNS)


#: headers of the display table (metrics in percent; the number of training patches, the same in every row,
#: is left out)
DISPLAY_HEADERS = {"sampler": "sampler", "ratio": "ratio", "bank_features": "bank", "selection_seconds": "select (s)",
                   "coverage_radius": "coverage radius", "image_auroc": "image AUROC (%)",
                   "pixel_auroc": "pixel AUROC (%)", "pro": "PRO (%)", "scoring_seconds": "score (s)",
                   "status": "status"}


def ablation_display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table to read (and its CSV next to the raw one): ratios in percent, metrics as "mean ± sd" over the
    seeds in percent (1 decimal; a table without ``_sd`` columns: the value), 'n/a' for skipped cells, short
    headers (:data:`DISPLAY_HEADERS`)."""
    shown = table.copy()
    shown["ratio"] = (100 * shown["ratio"]).map(lambda r: f"{r:g}%")
    for name in SEED_COLUMNS:
        sds = shown[f"{name}_sd"] if f"{name}_sd" in shown else [None] * len(shown)
        shown[name] = [mean_sd(v, sd, percent=name in METRIC_NAMES, decimals=1 if name in METRIC_NAMES else 3)
                       for v, sd in zip(shown[name], sds)]
    shown["bank_features"] = shown["bank_features"].map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    return shown[list(DISPLAY_HEADERS)].rename(columns=DISPLAY_HEADERS)


def best_run(table: pd.DataFrame) -> dict[str, Any] | None:
    """sampler, ratio and image AUROC of the run with the best image AUROC (None when no run succeeded)."""
    ok = table[table.status.str.startswith("ok")]
    return ok.loc[ok.image_auroc.idxmax()][["sampler", "ratio", "image_auroc"]].to_dict() if len(ok) else None


def paper_comparison(table: pd.DataFrame, paper: pd.DataFrame | None = PAPER_CORESET) -> pd.DataFrame:
    """The paper's values per sampler and coreset ratio beside ours (percent, 2 decimals, ``ours_<metric>_sd``: sd
    over seeds where the table has it; ``approximate``:
    read off a plot; ours empty where that sampler/ratio was not run; no rows when ``paper`` is None)."""
    if paper is None:
        paper = PAPER_CORESET.iloc[:0]
    reference = paper.rename(columns={m: f"paper_{m}" for m in METRIC_NAMES})
    values = [c for m in METRIC_NAMES for c in (m, f"{m}_sd") if c in table]  # _sd: over seeds
    ours = table[["sampler", "ratio", *values]].copy()
    ours[values] = (100 * ours[values]).round(2)
    merged = reference.merge(ours.rename(columns={m: f"ours_{m}" for m in values}), on=["sampler", "ratio"],
                             how="left")
    merged.insert(1, "ratio (%)", (100 * merged.pop("ratio")).map(lambda r: f"{r:g}%"))
    return merged


# ============================================================================ plots
def plot_coreset_metrics(table: pd.DataFrame, paper: pd.DataFrame | None = PAPER_CORESET, title: str = "") -> Any:
    """Image AUROC / pixel AUROC / PRO (%) vs coreset ratio (log x, in percent), one line per sampler, one
    y-range for the three panels; the paper's values per sampler (``paper``, e.g. :func:`paper_markers`; None:
    none) as markers in the sampler's colour (hollow: read off a plot)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    shown = [100 * table[m].astype(float) for m in METRIC_NAMES]
    if paper is not None:
        shown += [paper[m].astype(float) for m in METRIC_NAMES if m in paper]
    values = pd.concat(shown).dropna()
    low = float(values.min()) if len(values) else 0.0
    high = float(values.max()) if len(values) else 100.0
    pad = max(0.5, 0.05 * (high - low))
    for ax, (metric, label) in zip(axes, METRIC_NAMES.items()):
        for sampler_name, frame in table.groupby("sampler", sort=False):
            frame = frame.dropna(subset=[metric]).sort_values("ratio")
            color, marker = sampler_style(sampler_name)
            if frame.empty:
                ax.plot([], [], color=color, label=f"{sampler_name} (n/a)")
                continue
            sd = 100 * frame[f"{metric}_sd"].fillna(0) if f"{metric}_sd" in frame else None  # ± sd over seeds
            ax.errorbar(100 * frame.ratio, 100 * frame[metric], yerr=sd, marker=marker, color=color, capsize=3,
                        label=sampler_name + (" (mean ± sd over seeds)" if sd is not None else ""))
        if paper is not None and metric in paper:
            for (sampler_name, approximate), points in paper.dropna(subset=[metric]).groupby(
                    ["sampler", "approximate"], sort=False):
                color, _ = sampler_style(sampler_name)
                sources = ", ".join(dict.fromkeys(points.source))
                ax.scatter(100 * points.ratio, points[metric], marker="D", s=70, zorder=6, linewidths=1.8,
                           facecolors="none" if approximate else color, edgecolors=color if approximate else "black",
                           label=f"paper, {sampler_name}: {sources}")
        percent_axis(ax, list(table.ratio) + (list(paper.ratio) if paper is not None else []))
        ax.set_xlabel("coreset ratio (% of training patches, log scale)")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(label)
        ax.set_ylim(max(0.0, low - pad), min(100.5, high + pad))
        ax.tick_params(labelleft=True)  # shared range, but each panel is a different metric: label every axis
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = [], []
    for ax in axes:  # one legend below the panels (paper markers may exist for some metrics only)
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8.5, frameon=False)
    fig.suptitle(title or "Coreset subsampling: detection and localisation vs memory-bank size")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
    return fig


def plot_coverage(table: pd.DataFrame, title: str = "") -> Any:
    """Coverage radius and selection time vs coreset ratio (log x), one line per sampler."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for ax, metric, label in ((axes[0], "coverage_radius", "coverage radius (max NN distance, L2)"),
                              (axes[1], "selection_seconds", "selection time (s, log)")):
        for sampler_name, frame in table.groupby("sampler", sort=False):
            frame = frame.dropna(subset=[metric]).sort_values("ratio")
            color, marker = sampler_style(sampler_name)
            if metric == "selection_seconds":
                frame = frame[frame[metric] > 0]
            ax.errorbar(100 * frame.ratio, frame[metric], marker=marker, color=color, capsize=3,
                        yerr=frame[f"{metric}_sd"].fillna(0) if f"{metric}_sd" in frame else None,
                        label=sampler_name if not frame.empty else f"{sampler_name} (n/a)")
        percent_axis(ax, table.ratio)
        ax.set_xlabel("coreset ratio (% of training patches, log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[0].set_title("How far is the worst-covered training patch from the bank?")
    axes[1].set_title("Selection time")
    fig.suptitle(title or "Coreset coverage and cost")
    fig.tight_layout()
    return fig


# ============================================================================ seed spread
def seed_spread(model: PatchCore, train_features: torch.Tensor, test_features: torch.Tensor,
                grid: tuple[int, int], targets: SplitTargets, seeds: Sequence[int], sampler: str = "approx_greedy",
                ratio: float = 0.1, known: pd.DataFrame | None = None
                ) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The same run with different seeds (only the random parts change: projection, start points,
    random subsets). Returns (one row per seed, ``{metric: {mean, std, min, max, range}}``). ``known``: the
    per-seed rows of :func:`coreset_ablation`; a seed it already ran at this sampler and ratio is taken from it."""
    flat = train_features.reshape(-1, train_features.shape[-1])
    rows = []
    for seed in seeds:
        done = known[(known.sampler == sampler) & np.isclose(known.ratio, ratio) & (known.seed == int(seed))
                     & known.status.str.startswith("ok")] if known is not None else None
        if done is not None and len(done):
            rows.append({"seed": int(seed), "sampler": sampler, "ratio": float(ratio),
                         **done.iloc[0][["bank_features", "selection_seconds", *METRIC_NAMES]].to_dict()})
            continue
        sampler_obj = make_sampler(sampler, ratio, seed=int(seed), device=model.device, show_progress=False)
        start = time.perf_counter()
        indices = sampler_obj.select(flat)
        selection_seconds = time.perf_counter() - start
        scores, maps = score_split(model.with_bank(flat[indices]), test_features, grid, targets.image_size)
        rows.append({"seed": int(seed), "sampler": sampler, "ratio": float(ratio), "bank_features": len(indices),
                     "selection_seconds": selection_seconds, **evaluate_scores(targets, scores, maps)})
        del maps
    table = pd.DataFrame(rows)
    summary = {}
    for metric in METRIC_NAMES:
        values = table[metric].to_numpy(dtype=float)
        summary[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                           "min": float(values.min()), "max": float(values.max()),
                           "range": float(values.max() - values.min())}
    return table, summary


def seed_spread_summary(summary: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The seed-spread summary as a table in percent (rows: metrics; columns: mean, std, min, max, range)."""
    return pd.DataFrame(summary).T.mul(100).round(3).rename_axis("metric (%)")


def plot_seed_spread(table: pd.DataFrame, title: str = "") -> Any:
    """One panel per metric: the value of each seed (dots) and their mean (line)."""
    fig, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(4.6 * len(METRIC_NAMES), 3.4), layout="constrained")
    for ax, (metric, label) in zip(axes, METRIC_NAMES.items()):
        values = 100 * table[metric].to_numpy(dtype=float)
        ax.plot(table["seed"].astype(str), values, "o", color=sampler_style("approx_greedy")[0], label="one seed")
        ax.axhline(values.mean(), color="black", lw=1, label=f"mean {values.mean():.2f}")
        spread = values.max() - values.min()
        ax.set_title(f"{label}\nrange {spread:.2f} points")
        ax.set_xlabel("seed")
        ax.set_ylabel(f"{label} (%)")
        pad = max(0.05, spread)
        ax.set_ylim(values.min() - pad, values.max() + pad)
        ax.ticklabel_format(axis="y", useOffset=False)  # plain percentages, no "+1e2" offset
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig
