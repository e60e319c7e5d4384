"""Notebook 02's paper markers for one category, by the summary table's rule (``study.paper_values``): the
paper's per-class value where it gives one (PatchCore-1% on MVTec AD: image and pixel AUROC), else its MVTec AD
class mean, labelled ``mean of 15``.

A separate module from ``study.coreset_ablation`` on purpose: the stored ablation rows are keyed by that module's
code, and which reference values are drawn beside them does not change a row.
"""
from __future__ import annotations

import pandas as pd

from patchcore_lib.paper.reference import is_mvtec_category
from patchcore_lib.study.coreset_ablation import paper_markers
from patchcore_lib.study.display import METRIC_NAMES
from patchcore_lib.study.paper_values import per_class_patchcore


def category_paper_markers(category: str) -> pd.DataFrame | None:
    """:func:`~patchcore_lib.study.coreset_ablation.paper_markers` for ``category`` (percent; same columns) with,
    on MVTec AD, each coreset row's metric replaced by the paper's per-class value of that PatchCore variant where
    one exists and every source naming what it is (``<category> per class`` / ``mean of 15``). Other datasets
    and categories without paper values: unchanged (None when the paper has nothing)."""
    paper = paper_markers(category)
    if paper is None or not is_mvtec_category(category):
        return paper
    short = [str(source).split(" (")[0] for source in paper["source"]]  # "Table 5", "Tables 1-2", "Fig. 4"
    printed = " & ".join(dict.fromkeys(t for t, approximate in zip(short, paper["approximate"]) if not approximate))
    rows = []
    for row, table in zip(paper.to_dict("records"), short):
        found = per_class_patchcore(category, row["ratio"], tuple(METRIC_NAMES))[0] \
            if row["sampler"] == "approx_greedy" else {}
        means = [m for m in METRIC_NAMES if m not in found and pd.notna(row[m])]
        # short sources: the figure's legend joins the distinct ones of a marker style with commas
        if found:
            row.update({m: 100 * value for m, value in found.items()})
            names = "/".join(METRIC_NAMES[m].split(" (")[0] for m in means)
            row["source"] = f"{category} per class" + (f" ({names}: mean)" if means else "")
        else:
            row["source"] = f"{table} (plot; mean of 15)" if row["approximate"] else f"{printed} (mean of 15)"
        rows.append(row)
    return pd.DataFrame(rows, columns=paper.columns)
