"""Notebook 05 (report), collecting runs: every ``metrics.json`` of 04_evaluate and of the baselines as one row
(the latest per method, setting and category)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from patchcore_lib.study.evaluate import setting_name
from patchcore_lib.study.outputs import shown_path
from patchcore_lib.study.paper_values import as_float
from patchcore_lib.utils.files import read_json_or_none

#: the metrics that may come as a mean over seeds with a sample sd (``<metric>_sd``) in a metrics.json
SEED_METRICS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")
RUN_COLUMNS = ["method", "setting", "category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc",
               "anomaly_pro", *[f"{m}_sd" for m in SEED_METRICS], "seeds", "fit_seconds",
               "predict_seconds_per_image", "memory_bank_size", "mask_convention", "run_id", "folder", "written",
               "config"]
_NUMBERS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro",
            *[f"{m}_sd" for m in SEED_METRICS], "fit_seconds", "predict_seconds_per_image", "memory_bank_size")


def recorded_convention(value: Any) -> str:
    """A recorded mask convention; ``nearest`` (the only one before the option existed) when missing."""
    return value if isinstance(value, str) and value else "nearest"


def _setting_label(config: dict[str, Any], mask_convention: str, setting: str | None = None) -> str:
    """The setting name (from the config when there is one, so that older records get today's name with its
    embedding dimensions), marked ``_masks-official`` when the official mask convention was used."""
    name = setting_name(config) if config.get("backbone") else (setting or setting_name(config))
    return name + ("_masks-official" if mask_convention == "official" else "")


def seeds_of(values: dict[str, Any]) -> str:
    """The seeds a record's metrics are the mean over (``"0,1,2"``), empty for a single-run record."""
    seeds = values.get("seeds")
    return ",".join(str(s) for s in seeds) if isinstance(seeds, (list, tuple)) and seeds else ""


def _folder(path: Path, reports_dir: str | Path) -> str:
    """A run folder relative to the reports folder (``04_evaluate/bottle-1a2b``), never a machine path."""
    try:
        return path.resolve().relative_to(Path(reports_dir).resolve()).as_posix()
    except ValueError:
        return shown_path(path)


def _latest(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table, the latest written per method, setting and category."""
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if len(table):
        table = (table.sort_values("written").groupby(["method", "setting", "category"], as_index=False).last()
                 .sort_values(["method", "setting", "category"]).reset_index(drop=True))
    return table


def collect_runs(reports_dir: str | Path, notebook: str = "04_evaluate") -> pd.DataFrame:
    """Every ``reports/<notebook>/<run-id>/metrics.json`` as one row (latest per category and setting).

    Columns: method, setting, category, image_auroc, pixel_auroc, pro, anomaly_pixel_auroc, anomaly_pro (the
    mean over seeds where the record has ``seeds``), ``<metric>_sd`` (sample sd over seeds; NaN for a single-run
    record), seeds (``"0,1,2"`` or empty), fit_seconds, predict_seconds_per_image, memory_bank_size, mask_convention (``nearest`` for records older
    than the option), run_id, folder (relative to the reports folder), written (mtime), config (dict). Runs with official masks are a setting
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
        convention = recorded_convention(metrics.get("mask_convention"))
        rows.append({"method": "PatchCore", "setting": _setting_label(config, convention, metrics.get("setting")),
                     "category": metrics["category"], **{k: as_float(metrics.get(k)) for k in _NUMBERS},
                     "seeds": seeds_of(metrics), "mask_convention": convention, "run_id": path.parent.name,
                     "folder": _folder(path.parent, reports_dir),
                     "written": path.stat().st_mtime, "config": config})
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
            convention = recorded_convention(values.get("mask_convention") or metrics.get("mask_convention"))
            rows.append({"method": method, "setting": _setting_label(config, convention, label or (
                             setting_name(config) if config else "default")),
                         "category": values.get("category", category),
                         **{k: as_float(values.get(k)) for k in _NUMBERS}, "seeds": seeds_of(values),
                         "mask_convention": convention, "run_id": path.parent.name,
                         "folder": _folder(path.parent, reports_dir), "written": path.stat().st_mtime,
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


#: short metric names in column titles (05's runs table, summary.md; the tables must fit a notebook's width)
SHORT = {"image_auroc": "image", "pixel_auroc": "pixel", "pro": "PRO", "anomaly_pixel_auroc": "pixel (anom.)",
         "anomaly_pro": "PRO (anom.)"}


def runs_for_display(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as notebook 05 shows it: every metric in percent with one decimal (``mean ± sd`` where the
    run is a mean over seeds), seconds rounded to text, folders relative to the reports folder; no config/mtime
    and no mask-convention column (a setting evaluated with the official masks is named ``..._masks-official``)."""
    shown = pd.DataFrame({c: runs[c] for c in ("method", "setting", "category")})
    for m in SEED_METRICS:
        shown[f"{SHORT[m]} (%)"] = [_percent_text(v, s) for v, s in zip(runs[m], runs[f"{m}_sd"])]
    shown["seeds"] = runs["seeds"].replace("", "-")
    shown["fit (s)"] = [_number_text(v, "{:.1f}") for v in runs["fit_seconds"]]
    shown["s / image"] = [_number_text(v, "{:.3f}") for v in runs["predict_seconds_per_image"]]
    shown["bank"] = [_number_text(v, "{:,.0f}") for v in runs["memory_bank_size"]]
    shown["folder"] = runs["folder"]
    return shown.reset_index(drop=True)


def _number_text(value: Any, form: str) -> str:
    value = as_float(value)
    return "-" if value != value else form.format(value)


def _percent_text(value: Any, sd: Any) -> str:
    value, sd = as_float(value), as_float(sd)
    if value != value:
        return "-"
    return f"{100 * value:.1f}" + (f" ± {100 * sd:.1f}" if sd == sd else "")
