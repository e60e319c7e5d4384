"""The paper's value for one category and metric, as the summary table (``study.report.table``) and notebook 06's
quality panel show it beside ours: per class where the paper gives one, else labelled as a 15-class mean."""
from __future__ import annotations

from typing import Any

import pandas as pd

from patchcore_lib.paper.reference import is_mvtec_category, paper_table_percent


def as_float(value: Any) -> float:
    """``value`` as a float; NaN when it is none (missing, None, text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def published(value: Any, scale: float = 1.0) -> float:
    """A rounded published/measured number in percent without float noise (``100 * 0.98381`` -> ``98.381``)."""
    value = as_float(value)
    return float(f"{scale * value:.10g}") if value == value else float("nan")


def paper_value(paper: pd.DataFrame, other: pd.DataFrame, method: str | None, category: str, metric: str
                ) -> tuple[float, str]:
    """(percent as published, source label) of the paper's value for one category and metric.

    MVTec AD: the per-class value of ``method``; else, for PatchCore, the per-class value of another PatchCore
    variant (the label names it and ours); only where no per-class value exists, the class mean of ``method``
    labelled ``mean of 15``. Other datasets: the paper's PatchCore value there (MTD), at the paper's coreset
    ratio when it differs from ours (the label names both)."""
    if method is None:
        return float("nan"), ""
    if is_mvtec_category(category):
        if metric not in paper.columns:
            return float("nan"), ""
        rows = paper[(paper["category"] == category) & paper[metric].notna()]
        same = rows[rows["method"] == method]
        variants = rows[rows["method"].str.startswith("PatchCore")] if method.startswith("PatchCore") else rows[:0]
        for hit, suffix in ((same, ""), (variants, f"; ours: {method}")):
            if len(hit):
                return published(hit.iloc[0][metric]), f"{hit.iloc[0]['method']}, {category} (per class{suffix})"
        mean = paper[(paper["method"] == method) & (paper["category"] == "mean")]
        if len(mean) and not pd.isna(mean.iloc[0][metric]):
            return published(mean.iloc[0][metric]), f"{method}, mean of 15 (no per-class value)"
        return float("nan"), ""
    hit = other[other["category"] == category]
    if not method.startswith("PatchCore") or metric not in hit.columns:
        return float("nan"), ""
    same = hit[hit["method"] == method]
    hit = same if len(same) else hit[hit["method"].str.startswith("PatchCore")]
    if len(hit) and not pd.isna(hit.iloc[0][metric]):
        found = hit.iloc[0]
        # the paper reports one setting per other dataset: shown beside ours even at another coreset ratio, and
        # the label says so
        other_setting = "" if len(same) else f" (the paper's only setting there; ours: {method})"
        return published(found[metric]), f"{found['method']} on {found['dataset']}{other_setting}"
    return float("nan"), ""


def per_class_patchcore(category: str, ratio: float, metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pro")
                        ) -> tuple[dict[str, float], str]:
    """The paper's per-class values of PatchCore at coreset ``ratio`` on an MVTec AD ``category`` (fractions, for the
    metrics among ``metrics`` it prints per class: PatchCore-1% image and pixel AUROC) and their label
    (``"PatchCore-1%, bottle (per class)"``); ``({}, "")`` where it prints none (other ratios, other datasets).
    A figure or table that shows the paper's 15-class mean beside one category uses these in its place, and labels
    what is left ``mean of 15``."""
    if not is_mvtec_category(category):
        return {}, ""
    method = f"PatchCore-{100 * ratio:g}%"
    table = paper_table_percent()
    hit = table[(table["category"] == category) & (table["method"] == method)]
    values = {m: float(hit.iloc[0][m]) / 100 for m in metrics if len(hit) and m in hit and pd.notna(hit.iloc[0][m])}
    return values, (f"{method}, {category} (per class)" if values else "")
