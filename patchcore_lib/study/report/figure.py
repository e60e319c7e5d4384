"""Notebook 05 (report), the figure: ours vs the paper vs the official code per category and for the mean, one
panel per metric."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.paper.reference import ALL_METRICS
from patchcore_lib.study.report.table import REFERENCES

METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO",
                 "anomaly_pixel_auroc": "pixel AUROC, anomalous images", "anomaly_pro": "PRO, anomalous images"}


def _plot_series(rows: pd.DataFrame) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """(label, {metric: {category group: value}}) of every bar series of :func:`plot_summary`."""
    series: list[tuple[str, dict[str, dict[str, float]]]] = []
    for (method, setting), group in rows.groupby(["method", "setting"], sort=False):
        label = f"ours: {setting}" if method == "PatchCore" else f"ours: {method} ({setting})"
        series.append((label, {m: dict(zip(group["group"], group[f"ours_{m}"])) for m in ALL_METRICS}))
    first = rows[rows["method"] == "PatchCore"]
    if len(first):
        first = first[first["setting"] == first["setting"].iloc[0]]
        for kind in REFERENCES:
            values = {m: dict(zip(first["group"], first[f"{kind}_{m}"])) for m in ALL_METRICS}
            if not any(np.isfinite(v) for d in values.values() for v in d.values()):
                continue
            if kind == "paper":
                label = "paper: " + next((s.split(" (")[0] for s in first["paper_source"] if s), "")
            elif kind == "official":
                label = "official published: " + next((s for s in first["official_run"] if s), "")
            else:
                label = "official code, same backbone and data"
            series.append((label, values))
    return series


def plot_summary(table: pd.DataFrame, title: str = "") -> Any:
    """Ours vs paper vs official per category and for the mean, one panel per metric.

    Bars: every method/setting of the table ("ours"), then the paper and the official run of the first
    PatchCore setting (only where they have values: the paper's class mean appears in the ``mean`` group
    when all 15 categories were run)."""
    shown = [m for m in ALL_METRICS if any(f"{w}_{m}" in table.columns and table[f"{w}_{m}"].notna().any()
                                       for w in ("ours",) + REFERENCES)] or list(ALL_METRICS[:3])
    fig, axes = plt.subplots(len(shown), 1, figsize=(15, 3.4 * len(shown)), squeeze=False)
    if not len(table):
        for ax, m in zip(axes[:, 0], shown):
            ax.text(0.5, 0.5, "no runs found", ha="center", transform=ax.transAxes)
            ax.set(title=f"{METRIC_LABELS[m]} per category", xlabel="category", ylabel=f"{METRIC_LABELS[m]} (%)")
        if title:
            fig.suptitle(title)
        return fig
    rows = table.copy()
    rows["group"] = [("mean" if str(c).startswith("mean") else str(c)) for c in rows["category"]]
    has_mean = bool((rows["group"] == "mean").any())  # a mean row exists only for two or more MVTec classes
    categories = list(dict.fromkeys(g for g in rows["group"] if g != "mean")) + (["mean"] if has_mean else [])
    series = _plot_series(rows)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for ax, m in zip(axes[:, 0], shown):
        finite = []
        for k, (label, values) in enumerate(series):
            heights = np.array([values[m].get(c, np.nan) for c in categories], dtype=float)
            finite += [h for h in heights if np.isfinite(h)]
            ax.bar(x + (k - (len(series) - 1) / 2) * width, np.where(np.isfinite(heights), heights, 0.0), width,
                   label=label, color=f"C{k}")
        if has_mean:
            ax.axvline(len(categories) - 1.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, categories, rotation=30, ha="right")
        low = min(finite) if finite else 0.0
        ax.set(ylabel=f"{METRIC_LABELS[m]} (%)", ylim=(max(0.0, min(low - 3, 90.0)), 100.5),
               title=f"{METRIC_LABELS[m]} per category" + (" and mean" if has_mean else ""))
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("category")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(3, len(labels)), fontsize=9,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "ours vs paper vs official", y=1.0 + 0.025 * (1 + (len(labels) - 1) // 3))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.02 * (1 + (len(labels) - 1) // 3)))
    return fig
