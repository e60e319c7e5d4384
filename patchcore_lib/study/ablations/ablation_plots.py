"""Notebook 08 (ablations): mean ± sd tables of sections 4-6 and the error-bar figures of every section."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.paper.ablations import SEARCH_TABLE5
from patchcore_lib.study.cached_scoring import mean_sd, summarise_seeds
from patchcore_lib.study.display import METRIC_NAMES, SOURCE_MARKERS, method_colour

#: the paper's values: PatchCore's colour and the study's "paper" marker, filled, black edge (as in 07's search figure)
PAPER_STAR = dict(marker=SOURCE_MARKERS["paper"], linestyle="none", ms=14, color=method_colour("PatchCore"),
                  markeredgecolor="black", markeredgewidth=1.0, zorder=6)

UTILISATION = ("used", "used_by_good", "used_by_defect")
#: colour and legend label of each utilisation share (PatchCore's colour for the whole test set; good/defect as
#: the study's score histograms)
UTILISATION_STYLE = {"used": (method_colour("PatchCore"), "by any test patch"),
                     "used_by_good": ("tab:grey", "by patches of good test images"),
                     "used_by_defect": ("tab:red", "by patches of defective test images")}


def plot_metric_bars(summary_table: pd.DataFrame, x: str, metrics: Sequence[str], title: str,
                     paper: dict[str, Any] | None = None, paper_x: Any = None) -> Any:
    """One panel per metric: mean over seeds with ± sd error bars per ``x`` value (skipped rows are left out);
    the paper's value (``paper``: a row with the metric columns) as a star at ``paper_x``."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), layout="constrained", squeeze=False)
    ran = summary_table[np.isfinite(summary_table[metrics[0]].astype(float))]
    for ax, metric in zip(axes[0], metrics):
        values = 100 * ran[metric].astype(float)
        sd = 100 * ran.get(f"{metric}_sd", pd.Series(0.0, index=ran.index)).astype(float).fillna(0.0)
        ax.errorbar(ran[x].astype(str), values, yerr=sd, fmt="o-", capsize=4, color=method_colour("PatchCore"),
                    label="ours: mean ± sd over seeds")
        if paper is not None and paper.get(metric) is not None and paper_x in set(ran[x]):
            ax.plot([str(paper_x)], [100 * paper[metric]], **PAPER_STAR, label="paper (MVTec AD mean, WideResNet-50)")
        low, high = float((values - sd).min()), float((values + sd).max())  # every ± sd bar inside the panel
        if paper is not None and paper.get(metric) is not None:
            low, high = min(low, 100 * paper[metric]), max(high, 100 * paper[metric])
        pad = max(0.25, 0.08 * (high - low))
        ax.set_ylim(low - pad, min(100.5, high + pad))
        ax.set_title(METRIC_NAMES.get(metric, metric.replace("_", " ")))
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric.replace('_', ' '))} (%)")
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()  # one legend under the panels: it never covers a bar
    skipped = summary_table.loc[~np.isfinite(summary_table[metrics[0]].astype(float)), x].astype(str).tolist()
    if skipped:  # left out of the axes: say which, so the gap is not read as a missing result
        labels = [*labels, f"not run: {x.replace('_', ' ')} {', '.join(skipped)} (see the table's note)"]
        handles = [*handles, plt.Line2D([], [], linestyle="none")]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def search_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd over seeds per (ratio, search)."""
    columns = ["image_auroc", "pixel_auroc", "index_seconds", "search_seconds_per_image", "bank_size", *UTILISATION]
    return summarise_seeds(table, ["ratio", "search"], [c for c in columns if c in table])


def search_display(summary_table: pd.DataFrame, mvtec: bool) -> pd.DataFrame:
    """Section 5 table: metrics in percent (mean ± sd), seconds (3 decimals), the paper's Table 5 row beside
    ours where it prints one (ratio, search)."""
    paper = SEARCH_TABLE5.frame()
    rows = []
    for _, r in summary_table.iterrows():
        hit = paper[np.isclose(paper.ratio, r.ratio) & (paper.search == r.search)] if mvtec else paper.iloc[:0]
        row = {"ratio": f"{100 * r.ratio:g}%", "search": r.search,
               "bank_size": "n/a" if pd.isna(r.get("bank_size")) else int(r.bank_size)}
        for metric in ("image_auroc", "pixel_auroc"):
            row[metric] = mean_sd(r.get(metric), r.get(f"{metric}_sd"))
            row[f"paper_{metric}"] = mean_sd(hit[metric].iloc[0]) if len(hit) else "not in Table 5"
        for column in ("index_seconds", "search_seconds_per_image"):
            row[column] = mean_sd(r.get(column), r.get(f"{column}_sd"), percent=False, decimals=3)
        row["note"] = r.get("note", "")
        rows.append(row)
    return pd.DataFrame(rows)


def utilisation_display(summary_table: pd.DataFrame) -> pd.DataFrame:
    """Section 4 table (exact search rows): shares of the bank in percent, mean ± sd."""
    exact = summary_table[summary_table.search == "exact"]
    rows = []
    for _, r in exact.iterrows():
        row = {"ratio": f"{100 * r.ratio:g}%", "bank_size": "n/a" if pd.isna(r.get("bank_size")) else
               int(r.bank_size)}
        for column in UTILISATION:
            row[column] = mean_sd(r.get(column), r.get(f"{column}_sd"))
        row["note"] = r.get("note", "")
        rows.append(row)
    return pd.DataFrame(rows)


#: search names as figures show them
SEARCH_NAMES = {"exact": "exact", "ivfpq": "IVF-PQ"}


def plot_search(summary_table: pd.DataFrame, title: str, mvtec: bool) -> Any:
    """Image / pixel AUROC per (ratio, search) with ± sd bars; Table 5 stars beside them on MVTec AD."""
    ran = summary_table[np.isfinite(summary_table.get("image_auroc", pd.Series(dtype=float)).astype(float))]
    ran = ran.assign(_exact=ran.search != "exact").sort_values(["ratio", "_exact"])  # 1% exact, 1% IVF-PQ, 10% ...
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
    labels = [f"{100 * r:g}% {SEARCH_NAMES.get(s, s)}" for r, s in zip(ran.ratio, ran.search)]
    for ax, metric in zip(axes, ("image_auroc", "pixel_auroc", "search_seconds_per_image")):
        scale = 1 if metric.endswith("per_image") else 100
        ax.errorbar(labels, scale * ran[metric].astype(float), yerr=scale * ran[f"{metric}_sd"].astype(float).fillna(0),
                    fmt="o", capsize=4, color=method_colour("PatchCore"), label="ours: mean ± sd over seeds")
        if mvtec and metric != "search_seconds_per_image":
            paper = SEARCH_TABLE5.frame()
            for label, (_, r) in zip(labels, ran.iterrows()):
                hit = paper[np.isclose(paper.ratio, r.ratio) & (paper.search == r.search)]
                if len(hit):
                    ax.plot([label], [100 * hit[metric].iloc[0]], **PAPER_STAR)
            ax.plot([], [], **PAPER_STAR, label="paper Table 5 (MVTec AD mean, WRN-50)")
        name = "search seconds per image" if scale == 1 else f"{METRIC_NAMES.get(metric, metric)} (%)"
        ax.set_title(name)
        ax.set_ylabel(name)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_utilisation(summary_table: pd.DataFrame, title: str) -> Any:
    """Shares of the bank used (all / good / defect test patches) per ratio, ± sd bars."""
    exact = summary_table[(summary_table.search == "exact") & np.isfinite(summary_table.get(
        "used", pd.Series(np.nan, index=summary_table.index)).astype(float))]
    exact = exact.sort_values("ratio")
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for offset, column in zip((-0.2, 0.0, 0.2), UTILISATION):
        x = np.arange(len(exact)) + offset
        colour, label = UTILISATION_STYLE[column]
        ax.errorbar(x, 100 * exact[column].astype(float), yerr=100 * exact[f"{column}_sd"].astype(float).fillna(0),
                    fmt="o", capsize=4, color=colour, label=label)
    ax.set_xticks(np.arange(len(exact)), [f"{100 * r:g}%" for r in exact.ratio])
    ax.set_xlabel("coreset ratio")
    ax.set_ylabel("bank entries that are a nearest neighbour (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def eq7_display(rows: pd.DataFrame) -> pd.DataFrame:
    """Section 6 table: per b, mean ± sd over seeds of the gap and weight statistics (feature units, weights
    with 4 decimals)."""
    columns = ["s_star_median", "gap_min", "gap_median", "gap_nearest_median", "weight_median", "weight_min",
               "weight_max", "one_minus_weight_median"]
    ran = rows.dropna(subset=["gap_median"]) if "gap_median" in rows else rows
    summary_table = summarise_seeds(ran, ["b"], columns)
    out = pd.DataFrame({"b": summary_table.b, "seeds": summary_table.seeds})
    for column in columns:
        if column == "one_minus_weight_median":  # tiny: scientific notation
            out[column] = [f"{m:.1e}" + ("" if pd.isna(s) else f" ± {s:.1e}")
                           for m, s in zip(summary_table[column], summary_table[f"{column}_sd"])]
            continue
        decimals = 2 if column.startswith(("gap", "s_star")) else 4
        out[column] = [mean_sd(m, s, percent=False, decimals=decimals)
                       for m, s in zip(summary_table[column], summary_table[f"{column}_sd"])]
    out["weight_floor"] = [round(1 - 1 / (b + 1), 4) for b in summary_table.b]
    return out
