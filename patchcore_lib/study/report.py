"""Notebook 05 (report): every run of 04_evaluate (and of the baselines) as one MVTec table beside the paper
and the official code, its plot, and ``reports/summary.{csv,md,png}``."""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.evaluation.anchors import anchor_for, paper_other_datasets
from patchcore_lib.evaluation.reference import (ALL_METRICS, MVTEC_CATEGORIES, is_mvtec_category, official_results,
                                                official_run_for, paper_method_for, paper_table)
from patchcore_lib.study.evaluate import setting_name
from patchcore_lib.study.outputs import save_figure, shown_path
from patchcore_lib.utils.files import atomic_write_text, read_json_or_none

METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO",
                 "anomaly_pixel_auroc": "pixel AUROC, anomalous images", "anomaly_pro": "PRO, anomalous images"}
RUN_COLUMNS = ["method", "setting", "category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc",
               "anomaly_pro", "fit_seconds", "predict_seconds_per_image", "memory_bank_size", "mask_convention",
               "run_id", "folder", "written", "config"]
_NUMBERS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro", "fit_seconds",
            "predict_seconds_per_image", "memory_bank_size")
METRICS = ALL_METRICS  # every metric of the summary; each reference value has our metric's definition
#: metrics that depend on the ground-truth masks: compared with the official code only under official masks
PIXEL_METRICS = ("pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")


def _convention(value: Any) -> str:
    """A recorded mask convention; ``nearest`` (the only one before the option existed) when missing."""
    return value if isinstance(value, str) and value else "nearest"


def _setting_label(config: dict[str, Any], mask_convention: str, setting: str | None = None) -> str:
    """The setting name, marked ``_masks-official`` when the official mask convention was used."""
    name = setting or setting_name(config)
    return name + ("_masks-official" if mask_convention == "official" else "")


# =========================================================================== collecting runs
def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _latest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table, the latest written per method, setting and category."""
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if len(table):
        table = (table.sort_values("written").groupby(["method", "setting", "category"], as_index=False).last()
                 .sort_values(["method", "setting", "category"]).reset_index(drop=True))
    return table


def collect_runs(reports_dir: str | Path, notebook: str = "04_evaluate") -> pd.DataFrame:
    """Every ``reports/<notebook>/<run-id>/metrics.json`` as one row (latest per category and setting).

    Columns: method, setting, category, image_auroc, pixel_auroc, pro, anomaly_pixel_auroc, anomaly_pro,
    fit_seconds, predict_seconds_per_image, memory_bank_size, mask_convention (``nearest`` for records older
    than the option), run_id, folder, written (mtime), config (dict). Runs with official masks are a setting
    of their own (suffix ``_masks-official``).
    """
    rows = []
    for path in sorted(Path(reports_dir, notebook).glob("*/metrics.json")):
        record = read_json_or_none(path)
        if not record or not isinstance(record.get("metrics"), dict):
            continue
        metrics = record["metrics"]
        if not all(k in metrics for k in ("category", "image_auroc", "pixel_auroc", "pro")):
            continue
        config = metrics.get("config") or {}
        convention = _convention(metrics.get("mask_convention"))
        rows.append({"method": "PatchCore", "setting": _setting_label(config, convention, metrics.get("setting")),
                     "category": metrics["category"], **{k: _as_float(metrics.get(k)) for k in _NUMBERS},
                     "mask_convention": convention, "run_id": path.parent.name, "folder": shown_path(path.parent), "written": path.stat().st_mtime,
                     "config": config})
    return _latest(rows)


def _baseline_entries(metrics: dict[str, Any], params: dict[str, Any], notebook: str
                      ) -> list[tuple[str, dict[str, Any]]]:
    """(method, values) of one baseline metrics record, flat or nested (see :func:`collect_baselines`)."""
    if isinstance(metrics, dict) and "image_auroc" in metrics:
        return [(str(metrics.get("method") or params.get("method") or notebook), metrics)]
    container = metrics.get("runs") or metrics.get("methods") or metrics.get("results") or metrics
    if isinstance(container, dict):
        return [(str(k), v) for k, v in container.items() if isinstance(v, dict) and "image_auroc" in v]
    if isinstance(container, list):
        return [(str(v.get("method", notebook)), v) for v in container
                if isinstance(v, dict) and "image_auroc" in v and v.get("source", "this run") == "this run"]
    return []


def collect_baselines(reports_dir: str | Path, notebook: str = "06_baselines") -> pd.DataFrame:
    """Baseline runs (PaDiM, OrthoAD, ...) from ``reports/<notebook>/*/metrics.json``, as :func:`collect_runs`.

    Understands a flat record (``metrics`` holding image_auroc/pixel_auroc/pro and a ``method``) and a nested
    one (``metrics`` holding one dict of those per method, or a ``runs``/``methods``/``results`` mapping or list
    of dicts with ``method``, optional ``run`` label and ``source``; only ``source == "this run"`` rows count).
    PatchCore rows are left out (its numbers come from 04_evaluate).
    Returns an empty table when the folder does not exist.
    """
    rows = []
    for path in sorted(Path(reports_dir, notebook).glob("*/metrics.json")):
        record = read_json_or_none(path)
        if not record:
            continue
        metrics = record.get("metrics", record)
        params = record.get("parameters", {}) or {}
        category = metrics.get("category") or params.get("category") or "?"
        for method, values in _baseline_entries(metrics, params, notebook):
            if method.lower() == "patchcore":
                continue  # PatchCore's numbers come from 04_evaluate
            config = values.get("config") or metrics.get("config") or {}
            label = values.get("run") or values.get("setting")
            if label and (values.get("backbone") or metrics.get("backbone")):
                label = f"{label}, {values.get('backbone') or metrics.get('backbone')}"
            convention = _convention(values.get("mask_convention") or metrics.get("mask_convention"))
            rows.append({"method": method, "setting": _setting_label(config, convention, label or (
                             setting_name(config) if config else "default")),
                         "category": values.get("category", category),
                         **{k: _as_float(values.get(k)) for k in _NUMBERS}, "mask_convention": convention,
                         "run_id": path.parent.name, "folder": shown_path(path.parent), "written": path.stat().st_mtime,
                         "config": config})
    return _latest(rows)


def collect_all(reports_dir: str | Path, categories: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                 pd.DataFrame]:
    """(PatchCore runs, baseline runs, both in one table restricted to ``categories`` when given)."""
    runs = collect_runs(reports_dir)
    baselines = collect_baselines(reports_dir)
    found = [t for t in (runs, baselines) if len(t)]
    both = pd.concat(found, ignore_index=True) if found else runs
    if categories:
        both = both[both["category"].isin(list(categories))]
    return runs, baselines, both


# =========================================================================== the summary table
#: the reference columns beside ours: the paper, the official published run, the official code on our data
REFERENCES = ("paper", "official", "anchor")
MVTEC = "MVTec AD"


def _summary_columns() -> list[str]:
    return (["dataset", "method", "setting", "category"]
            + [f"{w}_{m}" for m in METRICS for w in ("ours",) + REFERENCES]
            + [f"diff_{w}_{m}" for m in METRICS for w in REFERENCES]
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
    paper_method = paper_method_for(config.get("coreset_ratio", 0.1)) if is_patchcore else (
        "PaDiM" if "padim" in str(method).lower() and mvtec else None)
    off = official[official["category"] == category] if (official is not None and mvtec) else None
    anchor = anchor_for(category, config) if is_patchcore else None
    convention = _convention(run.get("mask_convention"))
    row: dict[str, Any] = {"dataset": MVTEC if mvtec else category, "method": method, "setting": setting,
                           "category": category, "mask_convention": convention}
    sources = []
    for m in METRICS:
        row[f"ours_{m}"] = 100 * _as_float(run.get(m))
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
    config = group.iloc[0]["config"] if isinstance(group.iloc[0]["config"], dict) else {}
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
    pmethod = paper_method_for(config.get("coreset_ratio", 0.1)) if method == "PatchCore" else None
    pmean = paper[(paper["method"] == pmethod) & (paper["category"] == "mean")] if pmethod else paper[:0]
    for m in METRICS:
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
    for m in METRICS:
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


# =========================================================================== the plot
def _plot_series(rows: pd.DataFrame) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """(label, {metric: {category group: value}}) of every bar series of :func:`plot_summary`."""
    series: list[tuple[str, dict[str, dict[str, float]]]] = []
    for (method, setting), group in rows.groupby(["method", "setting"], sort=False):
        label = f"ours: {setting}" if method == "PatchCore" else f"ours: {method} ({setting})"
        series.append((label, {m: dict(zip(group["group"], group[f"ours_{m}"])) for m in METRICS}))
    first = rows[rows["method"] == "PatchCore"]
    if len(first):
        first = first[first["setting"] == first["setting"].iloc[0]]
        for kind in REFERENCES:
            values = {m: dict(zip(first["group"], first[f"{kind}_{m}"])) for m in METRICS}
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
    shown = [m for m in METRICS if any(f"{w}_{m}" in table.columns and table[f"{w}_{m}"].notna().any()
                                       for w in ("ours",) + REFERENCES)] or list(METRICS[:3])
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


# =========================================================================== summary files
def markdown_table(table: pd.DataFrame, float_format: str = "{:.1f}", signed: bool = False) -> str:
    """A GitHub-markdown table (no tabulate dependency); NaN shown as ``-``; ``signed``: numbers with a sign
    (as columns named ``diff_*`` always are)."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if isinstance(value, (float, np.floating)):
                cells.append("-" if math.isnan(value) else (("{:+.1f}".format(value))
                                                            if signed or str(c).startswith("diff_")
                                                            else float_format.format(value)))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUMMARY_INTRO = (
    "All values in percent. `ours_*`: this study (latest run per category of each setting, from "
    "`reports/04_evaluate/*/metrics.json`; baselines from `reports/06_baselines`). `paper_*`: Roth et al., "
    "CVPR 2022 for the WideResNet-50 setting of the same coreset ratio (per class only where a source is stored "
    "in `patchcore_lib/evaluation/reference_data`, else the 15-class mean, as `paper_source` says; on the magnetic "
    "tiles the paper's MTD image AUROC). `official_*`: results published with the official implementation for "
    "the run named in `official_run` (WideResNet-50), each compared only with our metric of the same "
    "definition: `pixel` with its `full_pixel_auroc` (all test images), `pixel (anom.)` and `PRO (anom.)` "
    "(anomalous test images only) with its columns of those names; our `PRO` (all test images) has no official "
    "counterpart. `anchor_*` (official code here): the official implementation run on the same backbone, "
    "embedding dimensions and data (`reference_data/anchors_measured.csv`). Masks: `nearest` (nearest-neighbour "
    "resize, the MVTec convention) or `official` (bilinear then integer cast, as the official code, which counts "
    "fewer boundary pixels as anomalous); pixel metrics are compared with the official code and its published "
    "runs only under `official` masks (settings marked `_masks-official`). `diff_*` = ours minus reference. "
    "Means only over MVTec AD classes, never across datasets.")


SHORT = {"image_auroc": "image", "pixel_auroc": "pixel", "pro": "PRO", "anomaly_pixel_auroc": "pixel (anom.)",
         "anomaly_pro": "PRO (anom.)"}
REFERENCE_LABELS = {"ours": "ours", "paper": "paper", "official": "official", "anchor": "official code here"}


def compact_table(group: pd.DataFrame, kinds: Sequence[str] = ("ours",) + REFERENCES, prefix: str = ""
                  ) -> pd.DataFrame:
    """A narrow view of summary rows: ``category`` then ``<metric> <reference>`` columns (``prefix`` e.g.
    ``diff_``), leaving out columns without any value."""
    out = pd.DataFrame({"category": group["category"].to_numpy()})
    for m in METRICS:
        for kind in kinds:
            column = f"{prefix}{kind}_{m}"
            if column in group and not group[column].isna().all():
                out[f"{SHORT[m]} {REFERENCE_LABELS[kind]}"] = group[column].to_numpy()
    return out


def reference_notes(group: pd.DataFrame, key: str) -> list[str]:
    """The distinct non-empty values of column ``key`` (``paper_source``, ``official_run``, ``anchor_run``) of
    one summary section, in order: which setting each reference column of that section holds."""
    return list(dict.fromkeys(str(v) for v in group[key] if isinstance(v, str) and v))


def _section(group: pd.DataFrame) -> list[str]:
    lines = []
    for key, name in (("paper_source", "Paper"), ("official_run", "Official published run"),
                      ("anchor_run", "Official code on this data")):
        values = reference_notes(group, key)
        if values:
            lines += [f"{name}: " + "; ".join(f"`{v}`" for v in values) + ".", ""]
    conventions = sorted(set(group["mask_convention"]))
    lines += [f"Ground-truth masks: {', '.join(f'`{c}`' for c in conventions)} convention.", ""]
    lines += [markdown_table(compact_table(group)), ""]
    diffs = compact_table(group, REFERENCES, prefix="diff_")
    if diffs.shape[1] > 1:
        lines += ["Ours minus reference (points):", "", markdown_table(diffs, signed=True), ""]
    return lines


def write_summary(reports_dir: str | Path, table: pd.DataFrame, figure: Any = None) -> dict[str, Path]:
    """Write ``reports/summary.csv``, ``reports/summary.md`` (one section per dataset, then per
    method/setting) and ``reports/summary.png``; returns the paths."""
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(reports / "summary.csv", table.to_csv(index=False))}
    lines = ["# PatchCore study: summary", "", SUMMARY_INTRO, ""]
    if not len(table):
        lines.append("No evaluation runs found.")
    for dataset, rows in table.groupby("dataset", sort=False):
        lines += [f"## {dataset}", ""]
        for (method, setting), group in rows.groupby(["method", "setting"], sort=False):
            lines += [f"### {method}: {setting}", ""] + _section(group)
    if figure is not None:
        paths["png"] = save_figure(figure, reports, "summary")
        lines += ["![ours vs paper vs official](summary.png)", ""]
    paths["md"] = atomic_write_text(reports / "summary.md", "\n".join(lines))
    return paths


def summary_markdown_for_display(paths: dict[str, Path]) -> str:
    """The summary markdown with the figure embedded (base64 data URI), so the notebook's HTML holds the
    image itself and no machine path."""
    text = Path(paths["md"]).read_text()
    if "png" not in paths:
        return text
    data = base64.b64encode(Path(paths["png"]).read_bytes()).decode()
    return text.replace("](summary.png)", f"](data:image/png;base64,{data})")
