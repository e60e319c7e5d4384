"""Notebook 07 (paper experiments), section 2: PatchCore on a few training images, beside the paper's Table S5."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from tqdm.auto import tqdm

from patchcore_lib.data import select_shots
from patchcore_lib.paper.ablations import FEW_SHOT_PADIM_S5, FEW_SHOT_S5, MVTEC_WR50
from patchcore_lib.paper.reference import PAPER_METRICS
from patchcore_lib.study.cached_scoring import summarise_seeds
from patchcore_lib.study.paper_experiments.features import FeatureSet, bank_for, bank_key, evaluate_bank, evaluate_seeds
from patchcore_lib.study.display import METRIC_NAMES, method_colour
from patchcore_lib.study.paper_experiments.paper_rows import mean_of_15


def draw_shots(count: int, shots: int, seed: int) -> list[int] | None:
    """``shots`` distinct training-image indices of ``count``, drawn by ``seed`` (the library's seeded draw of
    ``train_shots``, :func:`patchcore_lib.data.select_shots`); None when ``shots`` > ``count``."""
    return None if shots > count else select_shots(count, int(shots), int(seed))


def few_shot_table(fs: FeatureSet, shots: Sequence[int], seeds: Sequence[int], ratio: float,
                   full_ratio: float | None = None, full_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (shots, seed): bank of the drawn images at ``ratio`` (the seed draws the images and seeds their
    coreset), metrics on the cached test features; shot counts above the training set give a ``skipped`` row;
    last, one row per seed of ``full_seeds`` (None: ``seeds``) on the whole training set (its banks at
    ``full_ratio`` if already selected for every such seed, else ``ratio``)."""
    rows = []
    count = len(fs.train)
    jobs = [(int(n), int(s)) for n in shots for s in seeds]
    for n, seed in tqdm(jobs, desc="few-shot draws"):
        images = draw_shots(count, n, seed)
        if images is None:
            rows.append({"shots": n, "seed": seed, "status": f"skipped: {n} shots > {count} training images"})
            continue
        bank, _ = bank_for(fs, ratio, seed, images)
        result = evaluate_bank(fs, bank)
        rows.append({"shots": n, "seed": seed, "ratio": ratio, "images": " ".join(map(str, images)),
                     **{m: result[m] for m in PAPER_METRICS}, "bank_size": len(bank), "status": "ok"})
    full_seeds = list(seeds if full_seeds is None else full_seeds)
    reuse = full_ratio is not None and all(bank_key(fs, full_ratio, s) in fs.banks for s in full_seeds)
    used = full_ratio if full_ratio is not None and reuse else ratio
    for seed, bank, _, result in evaluate_seeds(fs, used, full_seeds):
        rows.append({"shots": count, "seed": seed, "ratio": used, "images": "all",
                     **{m: result[m] for m in PAPER_METRICS}, "bank_size": len(bank), "status": "full training set"})
    return pd.DataFrame(rows)


def few_shot_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1), min and max over seeds per shot count (the ``ok`` rows)."""
    ok = table[table.status == "ok"]
    summary = ok.groupby("shots")[list(PAPER_METRICS)].agg(["mean", "std", "min", "max"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary.insert(0, "seeds", ok.groupby("shots").size())
    return summary.reset_index()


def _full_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The whole-training-set rows of :func:`few_shot_table` as their mean over the seeds with ``<metric>_sd``."""
    full = table[table.status == "full training set"]
    return summarise_seeds(full, ["shots", "ratio"], PAPER_METRICS) if len(full) else full


def few_shot_comparison(summary: pd.DataFrame, table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Ours (mean ± std over seeds, and the full-data rows' mean ± std) beside Table S5, in percent (1 decimal)."""
    rows = []
    for _, r in summary.iterrows():
        rows.append({"source": label, "method": "ours", "shots": int(r.shots),
                     **{m: 100 * r[f"{m}_mean"] for m in PAPER_METRICS},
                     **{f"{m}_spread": 100 * r[f"{m}_std"] for m in PAPER_METRICS}})
    for _, r in _full_rows(table).iterrows():
        rows.append({"source": label, "method": f"ours, all images ({100 * r.ratio:g}%)", "shots": int(r.shots),
                     **{m: 100 * r[m] for m in PAPER_METRICS}, **{f"{m}_spread": 100 * r[f"{m}_sd"] for m in
                                                               PAPER_METRICS}})
    for paper in (FEW_SHOT_S5, FEW_SHOT_PADIM_S5):
        for r in paper.rows:
            rows.append({"source": f"{paper.source} ({mean_of_15(paper.scope)})",
                         **{k: (100 * v if k.startswith(PAPER_METRICS) and v is not None else v)
                            for k, v in r.items()}})
    return pd.DataFrame(rows).round(1)


def plot_few_shot(summary: pd.DataFrame, table: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None,
                  paper_padim: pd.DataFrame | None = None) -> Any:
    """Metric vs shots (log x): our mean with min-max error bars; the paper's Table S5 (``paper``: PatchCore, ±
    as published; ``paper_padim``: PaDiM's image AUROC; see :func:`paper_values`) beside it."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    ticks = sorted(set(summary.shots) | (set(paper.shots) if paper is not None else set()))
    full = _full_rows(table)
    for ax, metric in zip(axes, PAPER_METRICS):
        mean = 100 * summary[f"{metric}_mean"]
        err = [mean - 100 * summary[f"{metric}_min"], 100 * summary[f"{metric}_max"] - mean]
        colour = method_colour("PatchCore")  # ours and the paper's PatchCore: one colour, line styles differ
        ax.errorbar(summary.shots, mean, yerr=err, marker="o", capsize=4, color=colour,
                    label="ours: mean, min-max over seeds")
        if paper is not None:
            ax.errorbar(paper.shots, 100 * paper[metric], yerr=100 * paper[f"{metric}_spread"], marker="s",
                        linestyle="--", capsize=4, color=colour, markerfacecolor="none",
                        label=f"paper Table S5 ({mean_of_15(MVTEC_WR50)})")
        if metric == "image_auroc" and paper_padim is not None:
            ax.plot(paper_padim.shots, 100 * paper_padim[metric], marker="^", linestyle=":",
                    color=method_colour("PaDiM"), label="paper Table S5, PaDiM")
        for _, r in full.iterrows():
            ax.axhline(100 * r[metric], color=colour, linestyle=":", alpha=0.6,
                       label=f"ours, all {int(r.shots)} images ({100 * r.ratio:g}%), mean ± sd")
            if pd.notna(r[f"{metric}_sd"]) and r[f"{metric}_sd"] > 0:
                ax.axhspan(100 * (r[metric] - r[f"{metric}_sd"]), 100 * (r[metric] + r[f"{metric}_sd"]),
                           color=colour, alpha=0.1)
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
