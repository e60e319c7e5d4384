"""Notebook 07 (paper experiments), section 3: coreset size and approximate search vs inference time, beside the
paper's Table 5."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from patchcore_lib.paper.ablations import SEARCH_TABLE5
from patchcore_lib.paper.reference import PAPER_METRICS
from patchcore_lib.study.cached_scoring import mean_sd, summarise_seeds
from patchcore_lib.study.paper_experiments.features import FeatureSet, device_label, evaluate_seeds
from patchcore_lib.study.display import SOURCE_MARKERS, method_colour, metric_range, place_labels
from patchcore_lib.study.paper_experiments.paper_rows import paper_frame


def search_table(fs: FeatureSet, ratios: Sequence[float], searches: Sequence[str],
                 seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (ratio, search, seed of ``seeds``; None: the config's seed): the bank selected once per
    (ratio, seed) (1.0: all patches, evaluated once and repeated per seed with a note), scored with each search;
    inference seconds per image = feature extraction + search (this machine). :func:`search_summary`: mean ± sd."""
    rows = []
    seeds = [fs.model.config.seed] if seeds is None else list(seeds)
    jobs = [(float(r), s) for r in ratios for s in searches]
    for ratio, search in tqdm(jobs, desc=f"ratio x search ({len(seeds)} seeds)"):
        for seed, _, _, result in evaluate_seeds(fs, ratio, seeds, search):
            extract = fs.seconds_per_image["test"]
            rows.append({"ratio": ratio, "search": search, "seed": seed, **result, "extract_seconds_per_image": extract,
                         "inference_seconds_per_image": extract + result["search_seconds_per_image"],
                         "device": device_label(fs)})
    return pd.DataFrame(rows)


#: the columns of a per-seed row that vary with the seed: mean and ``<column>_sd`` in :func:`search_summary`
SEED_COLUMNS = (*PAPER_METRICS, "bank_size", "index_seconds", "search_seconds_per_image", "extract_seconds_per_image",
                "inference_seconds_per_image")
SECONDS = ("search_seconds_per_image", "extract_seconds_per_image", "inference_seconds_per_image")


def search_summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (ratio, search) of :func:`search_table`'s per-seed rows: every :data:`SEED_COLUMNS` value as
    the mean over the seeds followed by ``<column>_sd`` (sample sd, ddof=1; NaN for one seed; 0 for a 100 % bank,
    the same for every seed), ``seeds``."""
    return summarise_seeds(per_seed, ["ratio", "search"], SEED_COLUMNS)


def search_comparison(summary: pd.DataFrame, label: str, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ours (mean ± sd over the seeds, :func:`search_summary`) beside Table 5 (``paper``: the rows of
    :func:`~patchcore_lib.study.paper_experiments.paper_values` with their ``scope``, per class where the paper
    prints it; None: Table 5 as printed), metrics in percent (1 decimal), seconds per image (3 decimals)."""
    rows = []
    for _, r in summary.iterrows():
        method = f"ours-{100 * r.ratio:g}%" + (" + IVFPQ" if r.search == "ivfpq" else "")
        rows.append({"source": label, "method": method, "ratio": r.ratio, "search": r.search,
                     **{m: mean_sd(r[m], r.get(f"{m}_sd")) for m in PAPER_METRICS},
                     "bank_size": pd.NA if pd.isna(r.bank_size) else int(round(r.bank_size)),
                     **{c: mean_sd(r[c], r.get(f"{c}_sd"), percent=False, decimals=3) for c in SECONDS},
                     "seeds": int(r.seeds), "note": r.note})
    if paper is None:
        paper = paper_frame(SEARCH_TABLE5)
    for _, r in paper.iterrows():
        rows.append({"source": f"{r.source} ({r.scope})", "method": r.method, "ratio": r.ratio,
                     "search": r.search, **{m: mean_sd(r[m]) for m in PAPER_METRICS}, "bank_size": pd.NA,
                     **{c: "" for c in SECONDS[:-1]}, SECONDS[-1]: f"{r.seconds_per_image:.3f}", "seeds": pd.NA,
                     "note": ""})
    return pd.DataFrame(rows).astype({"bank_size": "Int64", "seeds": "Int64"})


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


#: search names as the figure shows them; notebook 08's ablation_plots.SEARCH_NAMES is the same mapping, kept
#: twice because one notebook's package never imports another's (each run's key covers only its own code)
SEARCH_NAMES = {"exact": "exact", "ivfpq": "IVF-PQ"}


def plot_search(summary: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Inference seconds per image vs image AUROC: one marker per (ratio, search) at the mean over the seeds with
    ± 1 sd error bars on both axes (:func:`search_summary`); the paper's Table 5 (``paper``, see
    :func:`paper_values`) in another colour."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    colour = method_colour("PatchCore")  # ours and the paper's PatchCore: one colour; markers tell them apart
    ran = summary[np.isfinite(summary.image_auroc.astype(float))]
    sd = {c: ran[f"{c}_sd"].astype(float).fillna(0.0) if f"{c}_sd" in ran else 0.0 * ran[c]
          for c in ("image_auroc", "inference_seconds_per_image")}
    points, texts, colours = [], [], []
    for search, marker in (("exact", "o"), ("ivfpq", "D")):
        part = ran[ran.search == search]
        seeds = int(part.seeds.max()) if len(part) else 0
        device = part.device.iloc[0] if len(part) else ""
        ax.errorbar(part.inference_seconds_per_image, 100 * part.image_auroc, xerr=sd["inference_seconds_per_image"][
            part.index], yerr=100 * sd["image_auroc"][part.index], fmt=marker, ms=7, capsize=3, color=colour,
            label=f"ours, {SEARCH_NAMES.get(search, search)} ({device}; mean ± sd, {seeds} seeds)")
        for _, r in part.iterrows():
            points.append((r.inference_seconds_per_image, 100 * r.image_auroc))
            texts.append(f"{100 * r.ratio:g}%" + ("" if search == "exact" else f" {SEARCH_NAMES.get(search, search)}"))
            colours.append("black")
    auroc = [ran.image_auroc - sd["image_auroc"], ran.image_auroc + sd["image_auroc"]]
    seconds = [*ran.inference_seconds_per_image]
    if paper is not None:
        ax.scatter(paper.seconds_per_image, 100 * paper.image_auroc, marker=SOURCE_MARKERS["paper"], s=140,
                   facecolors=colour, edgecolors="black", linewidths=1.0, zorder=6,
                   label="paper Table 5 (WideResNet-50, GPU; AUROC: mean of 15 unless a point says per class)")
        for _, r in paper.iterrows():
            points.append((r.seconds_per_image, 100 * r.image_auroc))
            per_class = "image_auroc" in str(r.get("per_class", "")).split(",")
            texts.append(f"paper {r.method}" + (" (AUROC per class)" if per_class else ""))
            colours.append("dimgrey")
        auroc.append(paper.image_auroc)
        seconds.extend(paper.seconds_per_image)
    ax.set_ylim(*metric_range(pd.concat(auroc)))
    _seconds_axis(ax, seconds)
    place_labels(ax, points, texts, colours, fontsize=7)  # after the limits: labels never overlap
    ax.set_xlabel("inference seconds per image (feature extraction + search; log scale)")
    ax.set_ylabel("image AUROC (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Coreset size and approximate search vs inference time")
    return fig
