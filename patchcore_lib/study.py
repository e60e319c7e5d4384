"""The notebook study: analysis and plotting helpers for notebooks 04/05, and the study runner.

Notebook helpers (the notebooks only call these and display the results):

* 04_evaluate: :func:`config_from_params`, :func:`metrics_record`, :func:`plot_roc_curves`,
  :func:`plot_pro_curve`, :func:`per_defect_table`, :func:`plot_per_defect`, :func:`segmentation_ranking`,
  :func:`plot_segmentations`, :func:`reference_comparison`.
* 05_report: :func:`collect_runs`, :func:`collect_baselines`, :func:`summary_table`, :func:`style_summary`,
  :func:`plot_summary`, :func:`write_summary`.

Runner::

    python -m patchcore_lib.study -f params/quick.yaml
    python -m patchcore_lib.study -f params/paper_im224_wr50.yaml --data-root /data/mvtec_ad --categories bottle cable

runs every notebook of ``notebooks/`` in name order with papermill (report notebooks, e.g. ``05_report``,
last and once), per category for notebooks that declare a ``category`` parameter, writes
``reports/executed/<notebook>-<category>.ipynb`` + ``.html`` and a ``.done.json`` with the hash of the
notebook's code and parameters; a run whose ``.done.json`` matches is skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError, PatchCoreError
from .reference import (METRICS, MVTEC_CATEGORIES, official_results, official_run_for, paper_method_for,
                        paper_table)

METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO"}

#: keys every 04_evaluate metrics.json holds under "metrics"
REQUIRED_METRICS = ("image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds_per_image",
                    "memory_bank_size", "category", "config")


# =========================================================================== notebook 04 helpers

def config_from_params(params: dict[str, Any]):
    """A :class:`PatchCoreConfig` from resolved notebook parameters (unknown keys ignored, None = default)."""
    from .evaluate import config_from_options

    options = dict(params)
    if options.get("layers"):
        options["layers"] = tuple(options["layers"])
    return config_from_options(**options)


def metrics_record(row: dict[str, Any], predictions: Any, config: Any) -> dict[str, Any]:
    """The metrics.json content of one evaluation: the row, per-defect AUROC and the full config."""
    from .metrics import per_defect_image_auroc

    record = {key: row[key] for key in ("category", "image_auroc", "pixel_auroc", "pro", "fit_seconds",
                                        "predict_seconds", "predict_seconds_per_image", "memory_bank_size",
                                        "num_train", "num_test") if key in row}
    record["per_defect_image_auroc"] = per_defect_image_auroc(predictions.defect_types, predictions.labels,
                                                              predictions.scores)
    record["config"] = config.to_dict()
    record["setting"] = setting_name(record["config"])
    missing = [k for k in REQUIRED_METRICS if k not in record]
    if missing:
        raise ConfigError(f"evaluation row lacks {', '.join(missing)}")
    return record


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _pixel_roc(masks: np.ndarray, maps: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    y = np.asarray(masks).ravel().astype(bool)
    s = np.asarray(maps, dtype=np.float32).ravel()
    if y.all() or not y.any():
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=True)
    if fpr.size > max_points:  # plotting only: keep an even subset of the points (curve shape unchanged)
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def plot_roc_curves(predictions: Any, title: str = ""):
    """Two panels: image-level ROC (image score) and pixel-level ROC (anomaly maps vs masks)."""
    from .metrics import image_auroc, pixel_auroc, roc_points

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    fpr, tpr = roc_points(predictions.labels, predictions.scores)
    axes[0].plot(fpr, tpr, color="C0", lw=2,
                 label=f"PatchCore (AUROC {100 * image_auroc(predictions.labels, predictions.scores):.1f}%)")
    pfpr, ptpr = _pixel_roc(predictions.masks, predictions.maps)
    if pfpr.size:
        axes[1].plot(pfpr, ptpr, color="C1", lw=2,
                     label=f"PatchCore (AUROC {100 * pixel_auroc(predictions.masks, predictions.maps):.1f}%)")
    for ax, what in zip(axes, ("image level (detection)", "pixel level (segmentation)")):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
               title=f"ROC, {what}")
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_pro_curve(predictions: Any, title: str = "", max_fpr: float = 0.3):
    """The PRO curve (per-region overlap vs pixel FPR up to ``max_fpr``) with its normalised area."""
    from .metrics import pro_curve, pro_score

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    fpr, pro = pro_curve(predictions.masks, predictions.maps, max_fpr=max_fpr, num_thresholds=300)
    if fpr.size:
        score = pro_score(predictions.masks, predictions.maps, max_fpr=max_fpr)
        ax.plot(fpr, pro, color="C2", lw=2, label=f"PatchCore (AU-PRO {100 * score:.1f}%)")
        ax.fill_between(fpr, 0, pro, color="C2", alpha=0.15)
    else:
        ax.text(0.5, 0.5, "PRO undefined (no defect pixels)", ha="center", transform=ax.transAxes)
    ax.set(xlim=(0, max_fpr), ylim=(0, 1.01), xlabel="pixel false positive rate",
           ylabel="per-region overlap (PRO)", title=title or f"PRO curve (FPR <= {max_fpr})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def per_defect_table(predictions: Any):
    """Image AUROC per defect type (all good test images + that type), with the image counts."""
    import pandas as pd

    from .metrics import per_defect_image_auroc

    aurocs = per_defect_image_auroc(predictions.defect_types, predictions.labels, predictions.scores)
    counts = pd.Series(predictions.defect_types).value_counts()
    rows = [{"defect_type": d, "image_auroc": a, "num_images": int(counts.get(d, 0)),
             "num_good": int(counts.get("good", 0))} for d, a in aurocs.items()]
    return pd.DataFrame(rows, columns=["defect_type", "image_auroc", "num_images", "num_good"])


def plot_per_defect(table: Any, title: str = ""):
    """Bar chart of the per-defect-type image AUROC (percent)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table) + 2), 4))
    values = 100 * table["image_auroc"].astype(float).to_numpy()
    bars = ax.bar(table["defect_type"], values, color="C0")
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                    fontsize=8)
    low = np.nanmin(values) if len(values) and np.isfinite(values).any() else 50.0
    ax.set(ylim=(max(0.0, min(low - 5, 90.0)), 101), xlabel="defect type",
           ylabel="image AUROC (%), good vs this type", title=title or "Image AUROC per defect type")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return fig


def segmentation_ranking(predictions: Any):
    """Anomalous test images ranked by segmentation quality (per-image pixel AUROC, best first).

    Columns: index (into the predictions), path, defect_type, score, pixel_auroc, defect_pixels.
    Images without defect pixels in their mask are left out.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    rows = []
    for i in np.flatnonzero(np.asarray(predictions.labels) == 1):
        mask = np.asarray(predictions.masks[i]).ravel() > 0
        if not mask.any() or mask.all():
            continue
        rows.append({"index": int(i), "path": predictions.paths[i], "defect_type": predictions.defect_types[i],
                     "score": float(predictions.scores[i]),
                     "pixel_auroc": float(roc_auc_score(mask, np.asarray(predictions.maps[i]).ravel())),
                     "defect_pixels": int(mask.sum())})
    table = pd.DataFrame(rows, columns=["index", "path", "defect_type", "score", "pixel_auroc", "defect_pixels"])
    return table.sort_values(["pixel_auroc", "score"], ascending=False).reset_index(drop=True)


def _load_display_image(path: str, resize: int, imagesize: int) -> np.ndarray:
    from .data import Preprocess, load_rgb

    preprocess = Preprocess(resize, imagesize)
    return preprocess.denormalise(preprocess.image(load_rgb(Path(path))))


def plot_segmentations(predictions: Any, indices: Sequence[int], resize: int, imagesize: int, title: str = ""):
    """One row per image: the test image with the ground-truth contour, the anomaly map overlaid, the map alone.

    The colour scale is shared by all rows (min..max of the maps over the whole test set), so rows compare.
    """
    plt = _plt()
    indices = [int(i) for i in indices]
    n = max(1, len(indices))
    fig, axes = plt.subplots(n, 3, figsize=(10, 3.2 * n), squeeze=False)
    vmin, vmax = float(np.min(predictions.maps)), float(np.max(predictions.maps))

    mappable = None
    for row, index in enumerate(indices):
        image = _load_display_image(predictions.paths[index], resize, imagesize)
        amap = np.asarray(predictions.maps[index])
        mask = np.asarray(predictions.masks[index]) > 0
        name = f"{predictions.defect_types[index]}/{Path(predictions.paths[index]).name}"
        axes[row, 0].imshow(image)
        if mask.any():
            axes[row, 0].contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
        axes[row, 0].set_title(f"{name}\nimage + ground truth (green)", fontsize=9)
        axes[row, 1].imshow(image)
        mappable = axes[row, 1].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        if mask.any():
            axes[row, 1].contour(mask, levels=[0.5], colors="white", linewidths=1.0)
        axes[row, 1].set_title(f"anomaly map overlay (score {predictions.scores[index]:.3g})", fontsize=9)
        axes[row, 2].imshow(amap, cmap="jet", vmin=vmin, vmax=vmax)
        axes[row, 2].set_title("anomaly map", fontsize=9)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    if not indices:
        for ax in axes[0]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no anomalous image with a mask", ha="center")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="anomaly score")
    if title:
        fig.suptitle(title)
    return fig


def reference_comparison(category: str, metrics: dict[str, Any]):
    """Our numbers beside the paper's and the official code's for one category (percent).

    Rows: ``ours``, the matching paper variant (per category where known, else its 15-class mean, marked in
    ``scope``) and every official run with a value for the category. Empty (only ``ours``) for non-MVTec data.
    """
    import pandas as pd

    from .reference import official_runs

    config = metrics.get("config", {})
    rows = [{"source": f"ours ({setting_name(config)})", "scope": "category",
             **{m: 100 * float(metrics[m]) for m in METRICS}}]
    if category in MVTEC_CATEGORIES:
        method = paper_method_for(config.get("coreset_ratio", 0.1))
        paper = paper_table()
        for method_name in dict.fromkeys([method, "PatchCore-25%", "PatchCore-10%", "PatchCore-1%"]):
            hit = paper[(paper["method"] == method_name) & (paper["category"] == category)]
            scope = "category"
            if not len(hit):
                hit = paper[(paper["method"] == method_name) & (paper["category"] == "mean")]
                scope = "mean of 15 (no per-class value)"
            if len(hit):
                rows.append({"source": f"paper: {method_name}", "scope": scope,
                             **{m: 100 * float(hit.iloc[0][m]) for m in METRICS}})
        matching = official_run_for(config)
        for run in [matching] + [r for r in official_runs() if r != matching]:
            table = official_results(run)
            hit = table[table["category"] == category]
            if len(hit):
                rows.append({"source": f"official: {run}", "scope": "category" + (" (closest run to this setting)" if run == matching
                                                                                   else ""),
                             **{m: 100 * float(hit.iloc[0][m]) for m in METRICS}})
    table = pd.DataFrame(rows, columns=["source", "scope", *METRICS])
    return table.rename(columns={m: f"{m} (%)" for m in METRICS})


# =========================================================================== notebook 05 helpers

def setting_name(config: dict[str, Any]) -> str:
    """A short, stable name of a configuration, in the style of the official run names.

    e.g. ``IM224_wide_resnet50_2_L2-3_P0.1_PS-3_AN-1`` (image size, backbone, layers, coreset ratio,
    patch size, nearest neighbours; ``_S<seed>`` when the seed is not 0, ``_<score>`` when not ``max``).
    """
    if not config:
        return "unknown"
    layers = [str(layer) for layer in config.get("layers") or []]
    digits = [layer.rsplit(".", 1)[-1].replace("layer", "").replace("denseblock", "") for layer in layers]
    layer_part = "L" + "-".join(digits) if digits else "Ldefault"
    ratio = float(config.get("coreset_ratio", 0.1))
    name = (f"IM{config.get('imagesize', '?')}_{config.get('backbone', '?')}_{layer_part}_P{ratio:g}"
            f"_PS-{config.get('patch_size', 3)}_AN-{config.get('num_nn', 1)}")
    if config.get("sampler", "approx_greedy") != "approx_greedy":
        name += f"_{config['sampler']}"
    if config.get("score", "max") != "max":
        name += f"_{config['score']}"
    if int(config.get("seed", 0) or 0):
        name += f"_S{config['seed']}"
    return name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_runs(reports_dir: str | Path, notebook: str = "04_evaluate"):
    """Every ``reports/<notebook>/<run-id>/metrics.json`` as one row (latest per category and setting).

    Columns: method, setting, category, image_auroc, pixel_auroc, pro, fit_seconds,
    predict_seconds_per_image, memory_bank_size, run_id, folder, written (mtime), config (dict).
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(reports_dir, notebook).glob("*/metrics.json")):
        record = _read_json(path)
        if not record or not isinstance(record.get("metrics"), dict):
            continue
        metrics = record["metrics"]
        if not all(k in metrics for k in ("category", "image_auroc", "pixel_auroc", "pro")):
            continue
        config = metrics.get("config") or {}
        rows.append({"method": "PatchCore", "setting": metrics.get("setting") or setting_name(config),
                     "category": metrics["category"],
                     **{k: _as_float(metrics.get(k)) for k in ("image_auroc", "pixel_auroc", "pro", "fit_seconds",
                                                               "predict_seconds_per_image", "memory_bank_size")},
                     "run_id": path.parent.name, "folder": str(path.parent), "written": path.stat().st_mtime,
                     "config": config})
    columns = ["method", "setting", "category", "image_auroc", "pixel_auroc", "pro", "fit_seconds",
               "predict_seconds_per_image", "memory_bank_size", "run_id", "folder", "written", "config"]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table = (table.sort_values("written").groupby(["method", "setting", "category"], as_index=False).last()
                 .sort_values(["method", "setting", "category"]).reset_index(drop=True))
    return table


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def collect_baselines(reports_dir: str | Path, notebook: str = "06_baselines"):
    """Baseline runs (PaDiM, OrthoAD, ...) from ``reports/<notebook>/*/metrics.json``, as :func:`collect_runs`.

    Understands a flat record (``metrics`` holding image_auroc/pixel_auroc/pro and a ``method``) and a nested
    one (``metrics`` holding one dict of those per method, or a ``runs``/``methods``/``results`` mapping or list
    of dicts with ``method``, optional ``run`` label and ``source``; only ``source == "this run"`` rows count).
    PatchCore rows are left out (its numbers come from 04_evaluate).
    Returns an empty table when the folder does not exist.
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(reports_dir, notebook).glob("*/metrics.json")):
        record = _read_json(path)
        if not record:
            continue
        metrics = record.get("metrics", record)
        params = record.get("parameters", {}) or {}
        category = metrics.get("category") or params.get("category") or "?"
        entries: list[tuple[str, dict[str, Any]]] = []
        if isinstance(metrics, dict) and "image_auroc" in metrics:
            entries.append((str(metrics.get("method") or params.get("method") or notebook), metrics))
        else:
            container = metrics.get("runs") or metrics.get("methods") or metrics.get("results") or metrics
            if isinstance(container, dict):
                entries += [(str(k), v) for k, v in container.items() if isinstance(v, dict) and "image_auroc" in v]
            elif isinstance(container, list):
                entries += [(str(v.get("method", notebook)), v) for v in container
                            if isinstance(v, dict) and "image_auroc" in v
                            and v.get("source", "this run") == "this run"]
        for method, values in entries:
            if method.lower() == "patchcore":
                continue  # PatchCore's numbers come from 04_evaluate
            config = values.get("config") or metrics.get("config") or {}
            label = values.get("run") or values.get("setting")
            if label and (values.get("backbone") or metrics.get("backbone")):
                label = f"{label}, {values.get('backbone') or metrics.get('backbone')}"
            rows.append({"method": method, "setting": label or (setting_name(config) if config else "default"),
                         "category": values.get("category", category),
                         **{k: _as_float(values.get(k)) for k in ("image_auroc", "pixel_auroc", "pro", "fit_seconds",
                                                                  "predict_seconds_per_image", "memory_bank_size")},
                         "run_id": path.parent.name, "folder": str(path.parent), "written": path.stat().st_mtime,
                         "config": config})
    columns = ["method", "setting", "category", "image_auroc", "pixel_auroc", "pro", "fit_seconds",
               "predict_seconds_per_image", "memory_bank_size", "run_id", "folder", "written", "config"]
    table = pd.DataFrame(rows, columns=columns)
    if len(table):
        table = (table.sort_values("written").groupby(["method", "setting", "category"], as_index=False).last()
                 .sort_values(["method", "setting", "category"]).reset_index(drop=True))
    return table


def summary_table(runs: Any):
    """The MVTec table: per method/setting and category our image AUROC, pixel AUROC and PRO (percent)
    beside the paper's and the official code's values and the differences, plus a ``mean`` row per setting.

    Columns: method, setting, category, ours_<m>, paper_<m>, official_<m>, diff_paper_<m>, diff_official_<m>
    for m in image_auroc, pixel_auroc, pro; paper_source, official_run. The paper variant (25/10/1%) is the one
    closest to the setting's coreset ratio; the official run is the one matching it (see
    :func:`patchcore_lib.reference.official_run_for`). Reference columns are NaN for non-MVTec categories and
    for the baselines' rows (which are compared with the paper's PaDiM mean where that applies).
    """
    import pandas as pd

    paper = paper_table()
    out_rows = []
    if runs is None or not len(runs):
        return pd.DataFrame(columns=_summary_columns())
    for (method, setting), group in runs.groupby(["method", "setting"], sort=False):
        config = group.iloc[0]["config"] if isinstance(group.iloc[0]["config"], dict) else {}
        is_patchcore = method == "PatchCore"
        paper_method = paper_method_for(config.get("coreset_ratio", 0.1)) if is_patchcore else (
            "PaDiM" if "padim" in str(method).lower() else None)
        official_run = official_run_for(config) if is_patchcore else None
        official = official_results(official_run) if official_run else None
        category_rows = []
        for _, run in group.sort_values("category").iterrows():
            category = run["category"]
            row = {"method": method, "setting": setting, "category": category}
            mvtec = category in MVTEC_CATEGORIES
            hit = paper[(paper["method"] == paper_method) & (paper["category"] == category)] if mvtec else paper[:0]
            off = official[official["category"] == category] if (official is not None and mvtec) else None
            for m in METRICS:
                row[f"ours_{m}"] = 100 * run[m]
                row[f"paper_{m}"] = 100 * float(hit.iloc[0][m]) if len(hit) else float("nan")
                row[f"official_{m}"] = 100 * float(off.iloc[0][m]) if off is not None and len(off) else float("nan")
            row["paper_source"] = f"{paper_method} (per class)" if len(hit) else ""
            row["official_run"] = official_run if off is not None and len(off) else ""
            category_rows.append(row)
        mean = {"method": method, "setting": setting, "category": "mean"}
        n = len(category_rows)
        all_mvtec = sorted(r["category"] for r in category_rows) == sorted(MVTEC_CATEGORIES)
        pmean = paper[(paper["method"] == paper_method) & (paper["category"] == "mean")] if paper_method else paper[:0]
        for m in METRICS:
            mean[f"ours_{m}"] = float(np.nanmean([r[f"ours_{m}"] for r in category_rows])) if n else float("nan")
            off_values = [r[f"official_{m}"] for r in category_rows if not math.isnan(r[f"official_{m}"])]
            mean[f"official_{m}"] = float(np.mean(off_values)) if off_values and len(off_values) == n else float("nan")
            # the paper's class mean is only comparable when all 15 classes were run
            mean[f"paper_{m}"] = 100 * float(pmean.iloc[0][m]) if (len(pmean) and all_mvtec) else float("nan")
        mean["paper_source"] = f"{paper_method} (mean of 15)" if (len(pmean) and all_mvtec) else ""
        mean["official_run"] = official_run if not math.isnan(mean["official_image_auroc"]) else ""
        mean["category"] = f"mean ({n})"
        out_rows += category_rows + [mean]
    table = pd.DataFrame(out_rows)
    for m in METRICS:
        table[f"diff_paper_{m}"] = table[f"ours_{m}"] - table[f"paper_{m}"]
        table[f"diff_official_{m}"] = table[f"ours_{m}"] - table[f"official_{m}"]
    return table[_summary_columns()]


def _summary_columns() -> list[str]:
    return (["method", "setting", "category"] + [f"{w}_{m}" for m in METRICS for w in ("ours", "paper", "official")]
            + [f"diff_{w}_{m}" for m in METRICS for w in ("paper", "official")] + ["paper_source", "official_run"])


def style_summary(table: Any, threshold: float = 1.0):
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


def plot_summary(table: Any, title: str = ""):
    """Ours vs paper vs official per category and for the mean, one panel per metric.

    Bars: every method/setting of the table ("ours"), then the paper and the official run of the first
    PatchCore setting (only where they have values: the paper's class mean appears in the ``mean`` group
    when all 15 categories were run)."""
    plt = _plt()
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(15, 3.4 * len(METRICS)), squeeze=False)
    if not len(table):
        for ax, m in zip(axes[:, 0], METRICS):
            ax.text(0.5, 0.5, "no runs found", ha="center", transform=ax.transAxes)
            ax.set(title=f"{METRIC_LABELS[m]} per category", xlabel="category", ylabel=f"{METRIC_LABELS[m]} (%)")
        if title:
            fig.suptitle(title)
        return fig
    rows = table.copy()
    rows["group"] = [("mean" if str(c).startswith("mean") else str(c)) for c in rows["category"]]
    categories = list(dict.fromkeys(g for g in rows["group"] if g != "mean")) + ["mean"]
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
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for ax, m in zip(axes[:, 0], METRICS):
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


def markdown_table(table: Any, float_format: str = "{:.1f}") -> str:
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


def write_summary(reports_dir: str | Path, table: Any, figure: Any = None) -> dict[str, Path]:
    """Write ``reports/summary.csv``, ``reports/summary.md`` (one section per method/setting) and
    ``reports/summary.png``; returns the paths."""
    from .io_utils import atomic_write_text
    from .notebook_utils import save_figure

    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(reports / "summary.csv", table.to_csv(index=False))}
    lines = ["# PatchCore study: MVTec AD summary", "",
             "All values in percent. `ours_*`: this study (latest run per category of each setting, from "
             "`reports/04_evaluate/*/metrics.json`; baselines from `reports/06_baselines`). `paper_*`: Roth et al., "
             "CVPR 2022 (per-class values only where a source is stored in `patchcore_lib/reference_data`; the "
             "15-class mean only when all 15 classes were run). `official_*`: results published with the official "
             "implementation for the run named in `official_run` (PRO = its `anomaly_pro` column). `diff_*` = ours "
             "minus reference.", ""]
    if not len(table):
        lines.append("No evaluation runs found.")
    for (method, setting), group in table.groupby(["method", "setting"], sort=False):
        lines += [f"## {method}: {setting}", ""]
        run = next((s for s in group["official_run"] if s), "")
        if run:
            lines += [f"Official reference run: `{run}`.", ""]
        show = group.drop(columns=["method", "setting", "official_run"])
        show = show[[c for c in show.columns if not (show[c].isna().all() and c.startswith(("paper_", "official_",
                                                                                            "diff_")))]]
        lines += [markdown_table(show), ""]
    if figure is not None:
        paths["png"] = save_figure(figure, reports, "summary")
        lines += ["![ours vs paper vs official](summary.png)", ""]
    paths["md"] = atomic_write_text(reports / "summary.md", "\n".join(lines))
    return paths


# =========================================================================== the study runner

def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a study preset (YAML): ``data_root``, ``categories``, ``parameters`` (for every notebook that
    declares them), ``notebook_parameters`` (``{notebook-prefix: {name: value}}``), optional ``notebooks``."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read study preset {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"study preset {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"study preset {path} must be a mapping, got {type(data).__name__}")
    known = {"name", "description", "data_root", "categories", "parameters", "notebook_parameters", "notebooks"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"study preset {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    data.setdefault("name", path.stem)
    data["data_root"] = data.get("data_root") or ""
    data["categories"] = list(data.get("categories") or [])
    data["parameters"] = dict(data.get("parameters") or {})
    data["notebook_parameters"] = dict(data.get("notebook_parameters") or {})
    return data


def discover_notebooks(folder: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Notebooks of ``folder`` in name order, report notebooks (name containing ``report``) last.

    ``only``: keep notebooks whose name starts with one of these prefixes (e.g. ``["04", "05"]``).
    """
    paths = sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(str(o)) for o in only)]
    return [p for p in paths if "report" not in p.stem] + [p for p in paths if "report" in p.stem]


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """The parameters a notebook declares: ``{name: default source}`` of the assignments in the cell tagged
    ``parameters``.

    Parsed with :mod:`ast` rather than papermill's line parser, which skips lines whose comment holds ``=``.
    """
    import ast

    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                raise ConfigError(f"{path}: the parameters cell is not valid Python: {exc}") from exc
            found: dict[str, str] = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = ast.get_source_segment(cell.source, node.value) or ""
            return found
    return {}


def notebook_code_hash(path: str | Path) -> str:
    """Hash of a notebook's cell sources and tags (outputs and metadata are ignored)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.cell_type.encode())
        digest.update(json.dumps(sorted(cell.get("metadata", {}).get("tags", []))).encode())
        digest.update(cell.source.encode())
    return digest.hexdigest()


def run_hash(notebook: str | Path, params: dict[str, Any]) -> str:
    """Hash identifying one execution: the notebook's code and the parameters passed."""
    payload = {"code": notebook_code_hash(notebook), "parameters": params}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(done_path: Path, expected_hash: str, outputs: Sequence[Path]) -> bool:
    """True when ``done_path`` records ``expected_hash`` and every output file exists."""
    record = _read_json(done_path)
    return bool(record) and record.get("hash") == expected_hash and all(Path(p).is_file() for p in outputs)


def render_html(ipynb: str | Path, html: str | Path | None = None) -> Path:
    """Render an executed notebook to standalone HTML (nbconvert), written atomically next to it."""
    import nbformat
    from nbconvert import HTMLExporter

    from .io_utils import atomic_write_text

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    return atomic_write_text(html, body)


class StudyError(PatchCoreError):
    """One or more notebooks of a study failed."""


def execute_notebook(notebook: Path, output: Path, params: dict[str, Any], kernel: str | None = None,
                     cwd: Path | None = None, log_output: bool = False) -> None:
    """Execute one notebook with papermill into ``output`` (the partially executed notebook is kept on error)."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel,
                               cwd=str(cwd or notebook.parent), progress_bar=False, log_output=log_output)


def plan_runs(preset: dict[str, Any], notebooks: Sequence[Path], categories: Sequence[str], data_root: str,
              reports_dir: Path) -> list[dict[str, Any]]:
    """The list of executions: notebook, category (None for once-only notebooks), parameters, outputs."""
    runs = []
    executed = reports_dir / "executed"
    for notebook in notebooks:
        declared = notebook_parameters(notebook)
        values = dict(preset.get("parameters", {}))
        for prefix, overrides in preset.get("notebook_parameters", {}).items():
            if notebook.stem.startswith(str(prefix)):
                values.update(overrides or {})
        common = {"data_root": data_root, "reports_dir": str(reports_dir), "categories": list(categories)}
        per_category = "category" in declared and "report" not in notebook.stem
        for category in (categories if per_category else [None]):
            params = {**values, **common}
            if category is not None:
                params["category"] = category
            params = {k: v for k, v in params.items() if k in declared}
            stem = f"{notebook.stem}-{category}" if category is not None else notebook.stem
            runs.append({"notebook": notebook, "category": category, "parameters": params,
                         "ipynb": executed / f"{stem}.ipynb", "html": executed / f"{stem}.html",
                         "done": executed / f"{stem}.done.json"})
    return runs


def resolve_categories(data_root: str, categories: Sequence[str]) -> list[str]:
    """Categories to run: the given ones, else every category under ``data_root``, else the embedded default."""
    from .data import check_category, list_categories

    if categories:
        if data_root:
            for category in categories:
                check_category(data_root, category)
        return list(categories)
    if data_root:
        found = list_categories(data_root)
        if not found:
            raise ConfigError(f"no categories (folders with train/ and test/) found under {data_root}")
        return found
    from .synthetic import default_category

    return [default_category("texture")]


def _execute_runs(runs: list[dict[str, Any]], force: bool, kernel: str | None,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Execute (or skip) each planned run in order; returns the failed ones."""
    from .io_utils import atomic_write_text

    failures = []
    for k, run in enumerate(runs, 1):
        label = f"[{k}/{len(runs)}] {run['ipynb'].stem}"
        digest = run_hash(run["notebook"], run["parameters"])
        if not force and is_complete(run["done"], digest, [run["ipynb"], run["html"]]):
            run.update(status="skipped", seconds=0.0)
            log(f"{label}: complete with the same parameters, skipped")
            continue
        t0 = time.perf_counter()
        error = None
        try:
            run["done"].unlink(missing_ok=True)
            execute_notebook(run["notebook"], run["ipynb"], run["parameters"], kernel=kernel)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            error = exc
        if run["ipynb"].is_file():
            try:
                render_html(run["ipynb"], run["html"])
            except Exception as exc:  # rendering a broken partial notebook must not hide the real error
                log(f"{label}: HTML rendering failed: {exc}")
        seconds = time.perf_counter() - t0
        if error is None:
            record = {"hash": digest, "notebook": str(run["notebook"]), "category": run["category"],
                      "parameters": run["parameters"], "seconds": round(seconds, 2),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_text(run["done"], json.dumps(record, indent=2, default=str))
            run.update(status="done", seconds=seconds)
            log(f"{label}: done in {seconds:.1f} s -> {run['html']}")
        else:
            run.update(status="failed", seconds=seconds, error=str(error).strip().splitlines()[-1:] or [""])
            failures.append(run)
            log(f"{label}: FAILED after {seconds:.1f} s: {type(error).__name__}: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''} (see {run['ipynb']})")
    return failures


def run_study(preset: dict[str, Any], *, categories: Sequence[str] | None = None, data_root: str | None = None,
              reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              only: Sequence[str] | None = None, force: bool = False, kernel: str | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or skip, when complete with the same parameters) every notebook of the study; return the runs
    with ``status`` (``done``, ``skipped`` or ``failed``) and ``seconds``. Raises :class:`StudyError` at the
    end when a notebook failed (the others still run)."""
    from .io_utils import output_lock
    from .notebook_utils import default_reports_dir, repository_root

    start = time.perf_counter()
    data_root = preset.get("data_root", "") if data_root is None else data_root
    data_root = str(Path(data_root).expanduser().resolve()) if data_root else ""
    categories = resolve_categories(data_root, categories or preset.get("categories") or [])
    reports = Path(reports_dir or default_reports_dir()).expanduser().resolve()
    folder = Path(notebooks_dir or repository_root() / "notebooks")
    notebooks = discover_notebooks(folder, only or preset.get("notebooks"))
    if not notebooks:
        raise ConfigError(f"no notebooks found in {folder}")
    runs = plan_runs(preset, notebooks, categories, data_root, reports)
    log(f"study '{preset.get('name', 'study')}': {len(notebooks)} notebooks x categories {', '.join(categories)} "
        f"-> {len(runs)} runs; reports in {reports}")
    reports.mkdir(parents=True, exist_ok=True)
    with output_lock(reports, "--reports-dir"):  # two studies into one reports folder: the second refuses
        failures = _execute_runs(runs, force, kernel, log)
    wall = time.perf_counter() - start
    log(f"study wall time: {wall:.1f} s ({wall / 60:.1f} min); "
        f"{sum(r['status'] == 'done' for r in runs)} run, {sum(r['status'] == 'skipped' for r in runs)} skipped, "
        f"{len(failures)} failed")
    summary = reports / "summary.md"
    if summary.is_file():
        log(f"summary: {summary}")
    if failures:
        raise StudyError(f"{len(failures)} notebook run(s) failed: "
                         + ", ".join(r["ipynb"].name for r in failures))
    return runs


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["name=value", ...]`` -> ``{name: yaml-parsed value}`` (``imagesize=128`` gives an int)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study",
                                     description="Run the notebook study (papermill) and render HTML reports.")
    parser.add_argument("-f", "--preset", default=None,
                        help="study preset YAML (default: params/quick.yaml of the checkout)")
    parser.add_argument("--data-root", default=None, help="dataset root (MVTec layout); '' = embedded synthetic")
    parser.add_argument("--categories", nargs="+", default=None, help="categories (default: preset's, else all)")
    parser.add_argument("--reports-dir", default=None, help="output folder (default: reports/ of the checkout)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--only", nargs="+", default=None, help="run only notebooks starting with these prefixes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter of the preset (VALUE is read as YAML), e.g. "
                             "--set weights=/models/wide_resnet50_2-95faca4d.pth --set imagesize=128")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when complete")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' python3)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .notebook_utils import repository_root

    args = build_parser().parse_args(argv)
    try:
        preset = load_preset(args.preset or repository_root() / "params" / "quick.yaml")
        preset["parameters"].update(parse_overrides(args.overrides))
        run_study(preset, categories=args.categories, data_root=args.data_root, reports_dir=args.reports_dir,
                  notebooks_dir=args.notebooks_dir, only=args.only, force=args.force, kernel=args.kernel)
    except PatchCoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished notebooks are kept and a re-run skips them", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
