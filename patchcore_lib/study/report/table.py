"""Notebook 05 (report), the summary table: every run beside the paper, the official published run and the
official code on the same data (percent, differences), one section per dataset."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from patchcore_lib.components.backbones import BACKBONES, get_spec
from patchcore_lib.paper.anchors import anchor_match, paper_other_datasets
from patchcore_lib.paper.reference import (ALL_METRICS, MVTEC_CATEGORIES, is_mvtec_category, official_results,
                                           official_run_for, paper_method_for, paper_table_percent)
from patchcore_lib.study.paper_values import as_float, paper_value as _paper_value, published as _published
from patchcore_lib.study.params import with_config_defaults
from patchcore_lib.study.report.datasets import geometry_text
from patchcore_lib.study.report.runs import recorded_convention

#: metrics that depend on the ground-truth masks: compared with the official code only under official masks
PIXEL_METRICS = ("pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")
#: the reference columns beside ours: the paper, the official published run, the official code on our data
REFERENCES = ("paper", "official", "anchor")
MVTEC = "MVTec AD"


def _summary_columns() -> list[str]:
    return (["dataset", "method", "setting", "category"]
            + [c for m in ALL_METRICS for c in (f"ours_{m}", f"ours_{m}_sd", *(f"{w}_{m}" for w in REFERENCES))]
            + [f"diff_{w}_{m}" for m in ALL_METRICS for w in REFERENCES]
            + ["seeds", "mask_convention", "geometry", "paper_source", "official_run", "anchor_run", "anchor_note"])


def resolved_config(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with every PatchCore default and the backbone's embedding dimensions filled in."""
    config = with_config_defaults(recorded)
    if config.get("backbone") in BACKBONES:
        pre, tgt = get_spec(config["backbone"]).embed_dims
        config["pretrain_embed_dimension"] = int(config.get("pretrain_embed_dimension") or pre)
        config["target_embed_dimension"] = int(config.get("target_embed_dimension") or tgt)
    return config


def paper_sources(label: str) -> dict[str, str]:
    """{metric: source} of a ``paper_source`` label of :func:`_sources_label` (every metric: the one source of a
    single-source label)."""
    parts = re.findall(r"(.+?) \[([a-z_, ]+)\](?:; |$)", label)
    if not parts:
        return {m: label for m in ALL_METRICS}
    found = {m.strip(): source for source, metrics in parts for m in metrics.split(",")}
    return {m: found.get(m, "") for m in ALL_METRICS}


def _sources_label(sources: dict[str, list[str]]) -> str:
    """``"A [image_auroc, pixel_auroc]; B [pro]"``: each source with the metrics it gives (one source: its name)."""
    if len(sources) == 1:
        return next(iter(sources))
    return "; ".join(f"{source} [{', '.join(metrics)}]" for source, metrics in sources.items())


def _category_row(method: str, setting: str, run: Any, config: dict[str, Any], paper: pd.DataFrame,
                  other: pd.DataFrame, official: pd.DataFrame | None, official_run: str | None) -> dict[str, Any]:
    category = run["category"]
    mvtec = is_mvtec_category(category)
    is_patchcore = method == "PatchCore"
    paper_method = paper_method_for(config["coreset_ratio"]) if is_patchcore else (
        "PaDiM" if "padim" in str(method).lower() and mvtec else None)
    off = official[official["category"] == category] if (official is not None and mvtec) else None
    anchor, anchor_note = anchor_match(category, config) if is_patchcore else (None, "")
    convention = recorded_convention(run.get("mask_convention"))
    row: dict[str, Any] = {"dataset": MVTEC if mvtec else category, "method": method, "setting": setting,
                           "category": category, "mask_convention": convention, "seeds": run.get("seeds") or "",
                           "geometry": geometry_text(config)}
    sources: dict[str, list[str]] = {}
    for m in ALL_METRICS:
        row[f"ours_{m}"] = 100 * as_float(run.get(m))
        row[f"ours_{m}_sd"] = 100 * as_float(run.get(f"{m}_sd"))
        row[f"paper_{m}"], source = _paper_value(paper, other, paper_method, category, m)
        if source:
            sources.setdefault(source, []).append(m)
        # the official code's masks are resized bilinearly and cast to int: its pixel metrics are only
        # comparable with ours under the same (``official``) mask convention
        like_for_like = m not in PIXEL_METRICS or convention == "official"
        row[f"official_{m}"] = 100 * float(off.iloc[0][m]) if (off is not None and len(off) and like_for_like
                                                                and m in off.columns) else float("nan")
        value = anchor.get(m) if (anchor and like_for_like) else None
        row[f"anchor_{m}"] = _published(value, 100) if value is not None else float("nan")
    row["paper_source"] = _sources_label(sources)
    row["official_run"] = official_run if off is not None and len(off) else ""
    row["anchor_run"] = (f"{anchor['implementation']}, {anchor['machine']}, {anchor['data']}, "
                         f"D{anchor['embed_dims']}, coreset {anchor['coreset']:g}" if anchor else "")
    if anchor and convention != "official":
        anchor_note = ("pixel metrics not compared: the official code binarises masks as mask_convention=official, "
                       f"this run as {convention}")
    row["anchor_note"] = anchor_note
    return row


def _setting_rows(method: str, setting: str, group: pd.DataFrame, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """The category rows of one method/setting, and a mean row over its MVTec AD categories (never over
    datasets)."""
    recorded = group.iloc[0]["config"] if isinstance(group.iloc[0]["config"], dict) else {}
    config = resolved_config(recorded)  # a setting missing from an older record: its default
    official_run = official_run_for(config) if method == "PatchCore" else None
    official = official_results(official_run) if official_run else None
    other = paper_other_datasets()
    rows = [_category_row(method, setting, run, config, paper, other, official, official_run)
            for _, run in group.sort_values("category").iterrows()]
    for r in rows if not recorded.get("imagesize") else []:  # no recorded geometry (baselines): none claimed
        r["geometry"] = ""
    mvtec_rows = [r for r in rows if r["dataset"] == MVTEC]
    if len(mvtec_rows) < 2:
        return rows
    n = len(mvtec_rows)
    all_mvtec = sorted(r["category"] for r in mvtec_rows) == sorted(MVTEC_CATEGORIES)
    mean: dict[str, Any] = {"dataset": MVTEC, "method": method, "setting": setting,
                            "category": f"mean ({n} classes)", "mask_convention": mvtec_rows[0]["mask_convention"],
                            "seeds": mvtec_rows[0]["seeds"], "geometry": mvtec_rows[0]["geometry"]}
    pmethod = paper_method_for(config["coreset_ratio"]) if method == "PatchCore" else None
    pmean = paper[(paper["method"] == pmethod) & (paper["category"] == "mean")] if pmethod else paper[:0]
    for m in ALL_METRICS:
        mean[f"ours_{m}"] = float(np.mean([r[f"ours_{m}"] for r in mvtec_rows]))
        mean[f"ours_{m}_sd"] = float("nan")  # an sd over seeds of a class mean is not recorded
        for ref in ("official", "anchor"):
            values = [r[f"{ref}_{m}"] for r in mvtec_rows if not math.isnan(r[f"{ref}_{m}"])]
            mean[f"{ref}_{m}"] = float(np.mean(values)) if len(values) == n else float("nan")
        # the paper's class mean is only comparable when all 15 classes were run
        mean[f"paper_{m}"] = _published(pmean.iloc[0][m]) if (len(pmean) and all_mvtec and m in pmean.columns) \
            else float("nan")
    mean["paper_source"] = f"{pmethod}, mean of 15" if (len(pmean) and all_mvtec) else ""
    mean["official_run"] = official_run if not math.isnan(mean["official_image_auroc"]) else ""
    mean["anchor_run"] = ""
    mean["anchor_note"] = "" if method != "PatchCore" else "no class mean of the official code here"
    return rows + [mean]


def summary_table(runs: pd.DataFrame | None) -> pd.DataFrame:
    """Per dataset, method/setting and category: our image AUROC, pixel AUROC and PRO (percent) beside

    * ``paper_*``: the paper (per class where a source is stored, else the 15-class mean, named in
      ``paper_source``; for the magnetic tiles the paper's MTD image AUROC);
    * ``official_*``: the official published run matching the setting (``official_run``; MVTec AD only);
    * ``anchor_*``: the official code run on the same backbone, layers, image size, coreset ratio, embedding
      dimensions and geometry on our data (``anchor_run``; ``anchor_note`` says why there is none);
    * ``ours_<metric>_sd``: the sample sd over ``seeds`` where the run is a mean over seeds (else NaN);
    * ``diff_<reference>_*`` = ours minus reference.

    ``dataset`` is ``MVTec AD`` for the MVTec categories (plus a mean row over them when there are two or
    more), else the category's own name: no mean is taken across datasets.
    """
    if runs is None or not len(runs):
        return pd.DataFrame(columns=_summary_columns())
    paper = paper_table_percent()
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
                      c not in ("paper_source", "official_run", "anchor_run", "anchor_note")]

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
