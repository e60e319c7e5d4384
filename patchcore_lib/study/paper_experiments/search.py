"""Notebook 07 (paper experiments), section 3: coreset size and approximate search vs inference time, beside the
paper's Table 5."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from patchcore_lib.paper.ablations import MVTEC_WR50, SEARCH_TABLE5
from patchcore_lib.paper.reference import PAPER_METRICS
from patchcore_lib.study.paper_experiments.features import FeatureSet, bank_for, device_label, evaluate_bank
from patchcore_lib.study.display import SOURCE_MARKERS, method_colour, metric_range, percent_table, place_labels


def search_table(fs: FeatureSet, ratios: Sequence[float], searches: Sequence[str]) -> pd.DataFrame:
    """One row per (ratio, search): bank selected once per ratio (1.0: all patches), scored with each search;
    inference seconds per image = feature extraction + search (this machine)."""
    rows = []
    jobs = [(float(r), s) for r in ratios for s in searches]
    for ratio, search in tqdm(jobs, desc="ratio x search"):
        bank, _ = bank_for(fs, ratio)
        result = evaluate_bank(fs, bank, search)
        extract = fs.seconds_per_image["test"]
        rows.append({"ratio": ratio, "search": search, **result, "extract_seconds_per_image": extract,
                     "inference_seconds_per_image": extract + result["search_seconds_per_image"],
                     "device": device_label(fs)})
    return pd.DataFrame(rows)


def search_comparison(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Ours beside Table 5, metrics in percent (1 decimal), seconds per image (3 decimals)."""
    ours = table.assign(source=label, method=[f"ours-{100 * r:g}%" + (" + IVFPQ" if s == "ivfpq" else "")
                                              for r, s in zip(table.ratio, table.search)])
    paper = SEARCH_TABLE5.frame().assign(source=f"{SEARCH_TABLE5.source} ({SEARCH_TABLE5.scope})",
                                         inference_seconds_per_image=lambda t: t.seconds_per_image, note="")
    columns = ["source", "method", "ratio", "search", *PAPER_METRICS, "inference_seconds_per_image", "note"]
    for column in ("bank_size", "search_seconds_per_image", "extract_seconds_per_image"):
        columns.insert(-1, column)
        paper[column] = np.nan
    shown = percent_table(pd.concat([ours[columns], paper[columns]], ignore_index=True), 1)
    seconds = [c for c in columns if c.endswith("seconds_per_image")]
    shown[seconds] = shown[seconds].astype(float).round(3)
    return shown


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


def plot_search(table: pd.DataFrame, title: str = "", paper: pd.DataFrame | None = None) -> Any:
    """Inference seconds per image vs image AUROC: one marker per (ratio, search); the paper's Table 5
    (``paper``, see :func:`paper_values`) in another colour."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    colour = method_colour("PatchCore")  # ours and the paper's PatchCore: one colour; markers tell them apart
    ran = table[np.isfinite(table.image_auroc.astype(float))]
    points, texts, colours = [], [], []
    for search, marker in (("exact", "o"), ("ivfpq", "D")):
        part = ran[ran.search == search]
        ax.scatter(part.inference_seconds_per_image, 100 * part.image_auroc, marker=marker, s=60,
                   color=colour, label=f"ours, {search} ({part.device.iloc[0] if len(part) else ''})")
        for _, r in part.iterrows():
            points.append((r.inference_seconds_per_image, 100 * r.image_auroc))
            texts.append(f"{100 * r.ratio:g}%" + (" IVFPQ" if search == "ivfpq" else ""))
            colours.append("black")
    auroc, seconds = [ran.image_auroc], [*ran.inference_seconds_per_image]
    if paper is not None:
        ax.scatter(paper.seconds_per_image, 100 * paper.image_auroc, marker=SOURCE_MARKERS["paper"], s=140,
                   facecolors="none", edgecolors=colour, linewidths=1.2,
                   label=f"paper Table 5 ({MVTEC_WR50}, GPU)")
        for _, r in paper.iterrows():
            points.append((r.seconds_per_image, 100 * r.image_auroc))
            texts.append(f"paper {r.method}")
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
