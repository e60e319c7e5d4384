"""Notebook 05 (report): every run of 04_evaluate (and of the baselines) as one MVTec table beside the paper
and the official code, its plot, and ``reports/summary.{csv,md,png}``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.evaluation.reference import (ALL_METRICS, MVTEC_CATEGORIES, official_results, official_run_for,
                                                paper_method_for, paper_table)
from patchcore_lib.study.evaluate import setting_name
from patchcore_lib.study.outputs import save_figure
from patchcore_lib.utils.files import atomic_write_text

METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO",
                 "anomaly_pixel_auroc": "pixel AUROC, anomalous images", "anomaly_pro": "PRO, anomalous images"}
RUN_COLUMNS = ["method", "setting", "category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc",
               "anomaly_pro", "fit_seconds", "predict_seconds_per_image", "memory_bank_size", "mask_convention",
               "run_id", "folder", "written", "config"]
_NUMBERS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro", "fit_seconds",
            "predict_seconds_per_image", "memory_bank_size")
METRICS = ALL_METRICS  # every metric of the summary; each reference value has our metric's definition


def _convention(value: Any) -> str:
    """A recorded mask convention; ``nearest`` (the only one before the option existed) when missing."""
    return value if isinstance(value, str) and value else "nearest"


def _setting_label(config: dict[str, Any], mask_convention: str, setting: str | None = None) -> str:
    """The setting name, marked ``_masks-official`` when the official mask convention was used."""
    name = setting or setting_name(config)
    return name + ("_masks-official" if mask_convention == "official" else "")


# =========================================================================== collecting runs
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
        record = _read_json(path)
        if not record or not isinstance(record.get("metrics"), dict):
            continue
        metrics = record["metrics"]
        if not all(k in metrics for k in ("category", "image_auroc", "pixel_auroc", "pro")):
            continue
        config = metrics.get("config") or {}
        convention = _convention(metrics.get("mask_convention"))
        rows.append({"method": "PatchCore", "setting": _setting_label(config, convention, metrics.get("setting")),
                     "category": metrics["category"], **{k: _as_float(metrics.get(k)) for k in _NUMBERS},
                     "mask_convention": convention, "run_id": path.parent.name, "folder": str(path.parent), "written": path.stat().st_mtime,
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
        record = _read_json(path)
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
                         "run_id": path.parent.name, "folder": str(path.parent), "written": path.stat().st_mtime,
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
def _summary_columns() -> list[str]:
    return (["method", "setting", "category"] + [f"{w}_{m}" for m in METRICS for w in ("ours", "paper", "official")]
            + [f"diff_{w}_{m}" for m in METRICS for w in ("paper", "official")]
            + ["mask_convention", "paper_source", "official_run"])


def _setting_rows(method: str, setting: str, group: pd.DataFrame, paper: pd.DataFrame) -> list[dict[str, Any]]:
    """The category rows and the mean row of one method/setting."""
    config = group.iloc[0]["config"] if isinstance(group.iloc[0]["config"], dict) else {}
    is_patchcore = method == "PatchCore"
    paper_method = paper_method_for(config.get("coreset_ratio", 0.1)) if is_patchcore else (
        "PaDiM" if "padim" in str(method).lower() else None)
    official_run = official_run_for(config) if is_patchcore else None
    official = official_results(official_run) if official_run else None
    category_rows = []
    for _, run in group.sort_values("category").iterrows():
        category = run["category"]
        row = {"method": method, "setting": setting, "category": category,
               "mask_convention": _convention(run.get("mask_convention"))}
        mvtec = category in MVTEC_CATEGORIES
        hit = paper[(paper["method"] == paper_method) & (paper["category"] == category)] if mvtec else paper[:0]
        off = official[official["category"] == category] if (official is not None and mvtec) else None
        for m in METRICS:
            row[f"ours_{m}"] = 100 * _as_float(run.get(m))
            row[f"paper_{m}"] = 100 * float(hit.iloc[0][m]) if (len(hit) and m in hit.columns) else float("nan")
            row[f"official_{m}"] = 100 * float(off.iloc[0][m]) if off is not None and len(off) else float("nan")
        row["paper_source"] = f"{paper_method} (per class)" if len(hit) else ""
        row["official_run"] = official_run if off is not None and len(off) else ""
        category_rows.append(row)
    mean = {"method": method, "setting": setting,
            "mask_convention": category_rows[0]["mask_convention"] if category_rows else "nearest"}
    n = len(category_rows)
    all_mvtec = sorted(r["category"] for r in category_rows) == sorted(MVTEC_CATEGORIES)
    pmean = paper[(paper["method"] == paper_method) & (paper["category"] == "mean")] if paper_method else paper[:0]
    for m in METRICS:
        mean[f"ours_{m}"] = float(np.nanmean([r[f"ours_{m}"] for r in category_rows])) if n else float("nan")
        off_values = [r[f"official_{m}"] for r in category_rows if not math.isnan(r[f"official_{m}"])]
        mean[f"official_{m}"] = float(np.mean(off_values)) if off_values and len(off_values) == n else float("nan")
        # the paper's class mean is only comparable when all 15 classes were run
        mean[f"paper_{m}"] = 100 * float(pmean.iloc[0][m]) if (len(pmean) and all_mvtec and m in pmean.columns) \
            else float("nan")
    mean["paper_source"] = f"{paper_method} (mean of 15)" if (len(pmean) and all_mvtec) else ""
    mean["official_run"] = official_run if not math.isnan(mean["official_image_auroc"]) else ""
    mean["category"] = f"mean ({n})"
    return category_rows + [mean]


def summary_table(runs: pd.DataFrame | None) -> pd.DataFrame:
    """The MVTec table: per method/setting and category our metrics (percent) beside the paper's and the
    official code's values of the same definition and the differences, plus a ``mean`` row per setting.

    Columns: method, setting, category, ours_<m>, paper_<m>, official_<m>, diff_paper_<m>, diff_official_<m>
    for m in image_auroc, pixel_auroc, pro, anomaly_pixel_auroc, anomaly_pro; mask_convention, paper_source,
    official_run. Each official column is compared only with our metric of its definition (official
    ``full_pixel_auroc`` with ``pixel_auroc``, ``anomaly_pixel_auroc`` and ``anomaly_pro`` with ours of the
    same name; none with ``pro``); the paper reports image AUROC, pixel AUROC and PRO. The paper variant (25/10/1%) is the one
    closest to the setting's coreset ratio; the official run is the one matching it (see
    :func:`patchcore_lib.evaluation.reference.official_run_for`). Reference columns are NaN for non-MVTec
    categories and for the baselines' rows (which are compared with the paper's PaDiM mean where that applies).
    """
    if runs is None or not len(runs):
        return pd.DataFrame(columns=_summary_columns())
    paper = paper_table()
    out_rows = []
    for (method, setting), group in runs.groupby(["method", "setting"], sort=False):
        out_rows += _setting_rows(method, setting, group, paper)
    table = pd.DataFrame(out_rows)
    for m in METRICS:
        table[f"diff_paper_{m}"] = table[f"ours_{m}"] - table[f"paper_{m}"]
        table[f"diff_official_{m}"] = table[f"ours_{m}"] - table[f"official_{m}"]
    return table[_summary_columns()]


def style_summary(table: pd.DataFrame, threshold: float = 1.0) -> Any:
    """A pandas Styler of :func:`summary_table`: differences beyond ``threshold`` points in red/green."""
    diff_columns = [c for c in table.columns if c.startswith("diff_")]
    number_columns = [c for c in table.columns if c.startswith(("ours_", "paper_", "official_")) and
                      c not in ("paper_source", "official_run")]

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
        for kind in ("paper", "official"):
            values = {m: dict(zip(first["group"], first[f"{kind}_{m}"])) for m in METRICS}
            if not any(np.isfinite(v) for d in values.values() for v in d.values()):
                continue
            if kind == "paper":
                label = "paper: " + next((s.split(" (")[0] for s in first["paper_source"] if s), "")
            else:
                label = "official: " + next((s for s in first["official_run"] if s), "")
            series.append((label, values))
    return series


def plot_summary(table: pd.DataFrame, title: str = "") -> Any:
    """Ours vs paper vs official per category and for the mean, one panel per metric.

    Bars: every method/setting of the table ("ours"), then the paper and the official run of the first
    PatchCore setting (only where they have values: the paper's class mean appears in the ``mean`` group
    when all 15 categories were run)."""
    shown = [m for m in METRICS if any(f"{w}_{m}" in table.columns and table[f"{w}_{m}"].notna().any()
                                       for w in ("ours", "paper", "official"))] or list(METRICS[:3])
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
    categories = list(dict.fromkeys(g for g in rows["group"] if g != "mean")) + ["mean"]
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
        ax.axvline(len(categories) - 1.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, categories, rotation=30, ha="right")
        low = min(finite) if finite else 0.0
        ax.set(ylabel=f"{METRIC_LABELS[m]} (%)", ylim=(max(0.0, min(low - 3, 90.0)), 100.5),
               title=f"{METRIC_LABELS[m]} per category and mean")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("category")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(3, len(labels)), fontsize=9,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "ours vs paper vs official", y=1.0 + 0.025 * (1 + (len(labels) - 1) // 3))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.02 * (1 + (len(labels) - 1) // 3)))
    return fig


# =========================================================================== summary files
def markdown_table(table: pd.DataFrame, float_format: str = "{:.1f}") -> str:
    """A GitHub-markdown table (no tabulate dependency); NaN shown as ``-``."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if isinstance(value, (float, np.floating)):
                cells.append("-" if math.isnan(value) else (("{:+.1f}".format(value)) if str(c).startswith("diff_")
                                                            else float_format.format(value)))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUMMARY_INTRO = (
    "All values in percent. `ours_*`: this study (latest run per category of each setting, from "
    "`reports/04_evaluate/*/metrics.json`; baselines from `reports/06_baselines`). `paper_*`: Roth et al., "
    "CVPR 2022 (per-class values only where a source is stored in `patchcore_lib/evaluation/reference_data`; the "
    "15-class mean only when all 15 classes were run). `official_*`: results published with the official "
    "implementation for the run named in `official_run`, each compared only with our metric of the same definition: "
    "`pixel_auroc` with its `full_pixel_auroc` (all test images), `anomaly_pixel_auroc` and `anomaly_pro` (anomalous "
    "test images only) with its columns of those names; our `pro` (all test images) has no official counterpart. "
    "`mask_convention`: how ground-truth masks were resized (`nearest`: nearest neighbour, the MVTec convention; "
    "`official`: bilinear then integer cast, as the official code, which counts fewer boundary pixels as "
    "anomalous); a comparison with the official code digit for digit needs `official`. `diff_*` = ours minus "
    "reference.")


def write_summary(reports_dir: str | Path, table: pd.DataFrame, figure: Any = None) -> dict[str, Path]:
    """Write ``reports/summary.csv``, ``reports/summary.md`` (one section per method/setting) and
    ``reports/summary.png``; returns the paths."""
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(reports / "summary.csv", table.to_csv(index=False))}
    lines = ["# PatchCore study: MVTec AD summary", "", SUMMARY_INTRO, ""]
    if not len(table):
        lines.append("No evaluation runs found.")
    for (method, setting), group in table.groupby(["method", "setting"], sort=False):
        lines += [f"## {method}: {setting}", ""]
        run = next((s for s in group["official_run"] if s), "")
        if run:
            lines += [f"Official reference run: `{run}`.", ""]
        conventions = sorted(set(group["mask_convention"]))
        lines += [f"Ground-truth masks: {', '.join(f'`{c}`' for c in conventions)} convention.", ""]
        show = group.drop(columns=["method", "setting", "official_run", "mask_convention"])
        show = show[[c for c in show.columns if not (show[c].isna().all() and c.startswith(("paper_", "official_",
                                                                                            "diff_")))]]
        lines += [markdown_table(show), ""]
    if figure is not None:
        paths["png"] = save_figure(figure, reports, "summary")
        lines += ["![ours vs paper vs official](summary.png)", ""]
    paths["md"] = atomic_write_text(reports / "summary.md", "\n".join(lines))
    return paths


def summary_markdown_for_display(paths: dict[str, Path]) -> str:
    """The summary markdown with the figure linked by its absolute path (for display inside the notebook)."""
    text = Path(paths["md"]).read_text()
    return text.replace("](summary.png)", f"]({paths['png']})") if "png" in paths else text
