"""Notebook 05 (report), the summary table: every run beside the paper, the official published run and the
official code on the same data (percent, differences), one section per dataset."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from patchcore_lib.paper.anchors import anchor_for, paper_other_datasets
from patchcore_lib.paper.reference import (ALL_METRICS, MVTEC_CATEGORIES, is_mvtec_category, official_results,
                                           official_run_for, paper_method_for, paper_table)
from patchcore_lib.study.params import with_config_defaults
from patchcore_lib.study.report.runs import as_float, recorded_convention

#: metrics that depend on the ground-truth masks: compared with the official code only under official masks
PIXEL_METRICS = ("pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")
#: the reference columns beside ours: the paper, the official published run, the official code on our data
REFERENCES = ("paper", "official", "anchor")
MVTEC = "MVTec AD"


def _summary_columns() -> list[str]:
    return (["dataset", "method", "setting", "category"]
            + [f"{w}_{m}" for m in ALL_METRICS for w in ("ours",) + REFERENCES]
            + [f"diff_{w}_{m}" for m in ALL_METRICS for w in REFERENCES]
            + ["mask_convention", "paper_source", "official_run", "anchor_run"])


def _paper_value(paper: pd.DataFrame, other: pd.DataFrame, method: str | None, category: str, metric: str
                 ) -> tuple[float, str]:
    """(percent, source label) of the paper's value for one category: per class where stored, else the
    MVTec class mean (marked ``mean of 15``); for other datasets the paper's PatchCore value there (MTD), at the
    paper's coreset ratio when it differs from ours (the label names both)."""
    if method is None:
        return float("nan"), ""
    if is_mvtec_category(category):
        if metric not in paper.columns:
            return float("nan"), ""
        hit = paper[(paper["method"] == method) & (paper["category"] == category)]
        if len(hit) and not pd.isna(hit.iloc[0][metric]):
            return 100 * float(hit.iloc[0][metric]), f"{method} (per class)"
        mean = paper[(paper["method"] == method) & (paper["category"] == "mean")]
        if len(mean) and not pd.isna(mean.iloc[0][metric]):
            return 100 * float(mean.iloc[0][metric]), f"{method} (mean of 15, no per-class source)"
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
        return float(found[metric]), f"{found['method']} on {found['dataset']}{other_setting}"
    return float("nan"), ""


def _category_row(method: str, setting: str, run: Any, config: dict[str, Any], paper: pd.DataFrame,
                  other: pd.DataFrame, official: pd.DataFrame | None, official_run: str | None) -> dict[str, Any]:
    category = run["category"]
    mvtec = is_mvtec_category(category)
    is_patchcore = method == "PatchCore"
    paper_method = paper_method_for(config["coreset_ratio"]) if is_patchcore else (
        "PaDiM" if "padim" in str(method).lower() and mvtec else None)
    off = official[official["category"] == category] if (official is not None and mvtec) else None
    anchor = anchor_for(category, config) if is_patchcore else None
    convention = recorded_convention(run.get("mask_convention"))
    row: dict[str, Any] = {"dataset": MVTEC if mvtec else category, "method": method, "setting": setting,
                           "category": category, "mask_convention": convention}
    sources = []
    for m in ALL_METRICS:
        row[f"ours_{m}"] = 100 * as_float(run.get(m))
        row[f"paper_{m}"], source = _paper_value(paper, other, paper_method, category, m)
        sources += [source] if source else []
        # the official code's masks are resized bilinearly and cast to int: its pixel metrics are only
        # comparable with ours under the same (``official``) mask convention
        like_for_like = m not in PIXEL_METRICS or convention == "official"
        row[f"official_{m}"] = 100 * float(off.iloc[0][m]) if (off is not None and len(off) and like_for_like
                                                                and m in off.columns) else float("nan")
        value = anchor.get(m) if (anchor and like_for_like) else None
        row[f"anchor_{m}"] = 100 * float(value) if value is not None and not pd.isna(value) else float("nan")
    row["paper_source"] = "; ".join(dict.fromkeys(sources))
    row["official_run"] = official_run if off is not None and len(off) else ""
    row["anchor_run"] = (f"{anchor['implementation']}, {anchor['machine']}, coreset {anchor['coreset']:g}"
                         if anchor else "")
    return row


def _setting_rows(method: str, setting: str, group: pd.DataFrame, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """The category rows of one method/setting, and a mean row over its MVTec AD categories (never over
    datasets)."""
    recorded = group.iloc[0]["config"] if isinstance(group.iloc[0]["config"], dict) else {}
    config = with_config_defaults(recorded)  # a PatchCore setting missing from an older record: its default
    official_run = official_run_for(config) if method == "PatchCore" else None
    official = official_results(official_run) if official_run else None
    other = paper_other_datasets()
    rows = [_category_row(method, setting, run, config, paper, other, official, official_run)
            for _, run in group.sort_values("category").iterrows()]
    mvtec_rows = [r for r in rows if r["dataset"] == MVTEC]
    if len(mvtec_rows) < 2:
        return rows
    n = len(mvtec_rows)
    all_mvtec = sorted(r["category"] for r in mvtec_rows) == sorted(MVTEC_CATEGORIES)
    mean: dict[str, Any] = {"dataset": MVTEC, "method": method, "setting": setting,
                            "category": f"mean ({n} classes)", "mask_convention": mvtec_rows[0]["mask_convention"]}
    pmethod = paper_method_for(config["coreset_ratio"]) if method == "PatchCore" else None
    pmean = paper[(paper["method"] == pmethod) & (paper["category"] == "mean")] if pmethod else paper[:0]
    for m in ALL_METRICS:
        mean[f"ours_{m}"] = float(np.mean([r[f"ours_{m}"] for r in mvtec_rows]))
        for ref in ("official", "anchor"):
            values = [r[f"{ref}_{m}"] for r in mvtec_rows if not math.isnan(r[f"{ref}_{m}"])]
            mean[f"{ref}_{m}"] = float(np.mean(values)) if len(values) == n else float("nan")
        # the paper's class mean is only comparable when all 15 classes were run
        mean[f"paper_{m}"] = 100 * float(pmean.iloc[0][m]) if (len(pmean) and all_mvtec and m in pmean.columns) \
            else float("nan")
    mean["paper_source"] = f"{pmethod} (mean of 15)" if (len(pmean) and all_mvtec) else ""
    mean["official_run"] = official_run if not math.isnan(mean["official_image_auroc"]) else ""
    mean["anchor_run"] = ""
    return rows + [mean]


def summary_table(runs: pd.DataFrame | None) -> pd.DataFrame:
    """Per dataset, method/setting and category: our image AUROC, pixel AUROC and PRO (percent) beside

    * ``paper_*``: the paper (per class where a source is stored, else the 15-class mean, named in
      ``paper_source``; for the magnetic tiles the paper's MTD image AUROC);
    * ``official_*``: the official published run matching the setting (``official_run``; MVTec AD only);
    * ``anchor_*``: the official code run on the same backbone and data (``anchor_run``);
    * ``diff_<reference>_*`` = ours minus reference.

    ``dataset`` is ``MVTec AD`` for the MVTec categories (plus a mean row over them when there are two or
    more), else the category's own name: no mean is taken across datasets.
    """
    if runs is None or not len(runs):
        return pd.DataFrame(columns=_summary_columns())
    paper = paper_table()
    out_rows = []
    for (method, setting), group in runs.groupby(["method", "setting"], sort=False):
        out_rows += _setting_rows(method, setting, group, paper)
    table = pd.DataFrame(out_rows)
    for m in ALL_METRICS:
        for ref in REFERENCES:
            table[f"diff_{ref}_{m}"] = table[f"ours_{m}"] - table[f"{ref}_{m}"]
    order = {MVTEC: 0}
    table = table.sort_values(["dataset", "method", "setting"], key=lambda c: c.map(order).fillna(1)
                              if c.name == "dataset" else c, kind="stable")
    return table[_summary_columns()].reset_index(drop=True)


def style_summary(table: pd.DataFrame, threshold: float = 1.0) -> Any:
    """A pandas Styler of :func:`summary_table`: differences beyond ``threshold`` points in red/green."""
    diff_columns = [c for c in table.columns if c.startswith("diff_")]
    number_columns = [c for c in table.columns if c.startswith(("ours_", "paper_", "official_", "anchor_")) and
                      c not in ("paper_source", "official_run", "anchor_run")]

    def colour(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "color: #999"
        if value <= -threshold:
            return "background-color: #f4cccc"
        if value >= threshold:
            return "background-color: #d9ead3"
        return ""

    styler = table.style.format("{:.1f}", subset=number_columns, na_rep="-")
    styler = styler.format("{:+.1f}", subset=diff_columns, na_rep="-")
    mapper = getattr(styler, "map", None) or styler.applymap
    return mapper(colour, subset=diff_columns)
