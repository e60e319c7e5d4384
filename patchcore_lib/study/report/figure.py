"""Notebook 05 (report), the figure: one panel per category (and per class mean), ours beside every reference
value that exists for it (the paper, the official published run, the official code on our data), each bar
labelled with its value, its source in the panel's legend."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from patchcore_lib.paper.reference import ALL_METRICS
from patchcore_lib.study.display import SOURCE_HATCHES, method_colour
from patchcore_lib.study.report.table import REFERENCES, paper_sources

METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO",
                 "anomaly_pixel_auroc": "pixel AUROC, anomalous images", "anomaly_pro": "PRO, anomalous images"}
#: short x labels of the metrics in the figure
_TICKS = {"image_auroc": "image\nAUROC", "pixel_auroc": "pixel\nAUROC", "pro": "PRO",
          "anomaly_pixel_auroc": "pixel AUROC\n(anom. images)", "anomaly_pro": "PRO\n(anom. images)"}
_KIND_NAMES = {"paper": "paper", "official": "official published", "anchor": "official code here"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _bars(group: pd.DataFrame) -> list[dict[str, Any]]:
    """The bar series of one category: ``label``, ``method``, ``kind`` (ours/paper/official/anchor),
    ``values`` and ``errors`` ({metric: percent}); every reference value once (deduplicated by its label)."""
    bars: list[dict[str, Any]] = []
    for _, row in group.iterrows():
        name = row["setting"] if str(row["setting"]).lower().startswith(str(row["method"]).lower()) else \
            f"{row['method']} {row['setting']}"
        bars.append({"label": f"ours: {name}", "method": row["method"], "kind": "ours",
                     "values": {m: row[f"ours_{m}"] for m in ALL_METRICS},
                     "errors": {m: row.get(f"ours_{m}_sd", np.nan) for m in ALL_METRICS}})
    seen = set()
    for _, row in group.iterrows():
        for kind in REFERENCES:
            values = {m: row[f"{kind}_{m}"] for m in ALL_METRICS}
            if not any(np.isfinite(v) for v in values.values()):
                continue
            sources = (paper_sources(_text(row["paper_source"])) if kind == "paper" else
                       {m: _text(row[f"{kind}_run"]) for m in ALL_METRICS})
            for source in dict.fromkeys(sources[m] for m in ALL_METRICS if np.isfinite(values[m])):
                label = f"{_KIND_NAMES[kind]}: {source}"  # one bar series per source: each value labelled
                if label not in seen:
                    seen.add(label)
                    bars.append({"label": label, "method": row["method"], "kind": kind, "errors": {},
                                 "values": {m: v if sources[m] == source else np.nan for m, v in values.items()}})
    return bars


def _draw_panel(ax: Any, title: str, bars: list[dict[str, Any]]) -> None:
    """Grouped bars per metric: only the bars with a value in each group (no gaps), value labels on top,
    sd error bars; y from just below the lowest value to above 100 so that bars at 100 still read."""
    metrics = [m for m in ALL_METRICS if any(np.isfinite(b["values"][m]) for b in bars)]
    width, finite = 0.8 / max(1, len(bars)), []
    shades: dict[str, int] = {}
    for bar in bars:  # several settings of one method: the same colour, lighter for the later ones
        bar["alpha"] = 1.0 - 0.3 * shades.get(bar["method"] + bar["kind"], 0)
        shades[bar["method"] + bar["kind"]] = shades.get(bar["method"] + bar["kind"], 0) + 1
    for x, m in enumerate(metrics):
        shown = [b for b in bars if np.isfinite(b["values"][m])]
        for k, bar in enumerate(shown):
            value, error = float(bar["values"][m]), float(bar["errors"].get(m, np.nan))
            position = x + (k - (len(shown) - 1) / 2) * width
            ax.bar(position, value, width * 0.95, color=method_colour(bar["method"]), alpha=max(0.35, bar["alpha"]),
                   hatch=SOURCE_HATCHES[bar["kind"]], edgecolor="white" if bar["kind"] != "ours" else None,
                   yerr=error if np.isfinite(error) else None, capsize=3, ecolor="black")
            ax.annotate(f"{value:.1f}", (position, value + (error if np.isfinite(error) else 0)),
                        textcoords="offset points", xytext=(0, 2), ha="center", va="bottom", rotation=90,
                        fontsize=7)
            finite.append(value)
    low = min(finite) if finite else 0.0
    span = max(2.0, 100.0 - low)
    ax.set_ylim(max(0.0, low - 0.25 * span), 100.0 + 0.35 * span)
    ax.axhline(100.0, color="grey", lw=0.6, ls=":")
    ax.set_yticks([t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= 100.0])  # no tick above 100%
    ax.set_xticks(range(len(metrics)), [_TICKS[m] for m in metrics], fontsize=8)
    ax.set_ylabel("percent")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=method_colour(b["method"]), alpha=max(0.35, b["alpha"]),
                     hatch=SOURCE_HATCHES[b["kind"]], edgecolor="white", label=b["label"]) for b in bars]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_summary(table: pd.DataFrame, title: str = "") -> Any:
    """One panel per category (a class mean row: a panel of its own), ours and every reference value that
    exists for it, labelled with its source. Colours: one per method (``study.display.METHOD_COLOURS``);
    hatches: ours plain, paper ``//``, official published ``..``, official code here ``xx``; error bars: the
    sample sd over seeds where the runs are means over seeds."""
    rows = table.copy()
    categories = list(dict.fromkeys(rows["category"])) if len(rows) else []
    fig, axes = plt.subplots(max(1, len(categories)), 1, figsize=(14, 3.8 * max(1, len(categories))),
                             squeeze=False)
    if not categories:
        axes[0, 0].text(0.5, 0.5, "no runs found", ha="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    kinds: set[str] = set()
    for ax, category in zip(axes[:, 0], categories):
        group = rows[rows["category"] == category]
        bars = _bars(group)
        kinds |= {b["kind"] for b in bars}
        dataset = group["dataset"].iloc[0]
        _draw_panel(ax, category if dataset == category else f"{dataset}: {category}", bars)
    named = ["ours"] + [_KIND_NAMES[k] for k in REFERENCES if k in kinds]
    fig.suptitle(title or ("percent: " + " vs ".join(named)), y=1.0)
    fig.tight_layout()
    return fig
