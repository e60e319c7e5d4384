"""Notebook 06 (baselines): PatchCore, PaDiM and OrthoAD fitted on one category, beside the published
MVTec AD means (MVTec AD categories only), with quality, time and model size in one figure."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.detectors import GaussianADConfig, PatchCoreConfig, make_detector
from patchcore_lib.evaluation import prediction_metrics
from patchcore_lib.evaluation.metrics import legacy_pixel_auroc
from patchcore_lib.study.params import config_from_params

#: the columns of the baselines table (ours and the published rows; metrics in percent)
COLUMNS = ["scope", "source", "method", "run", "backbone", "k_or_d", "image_auroc", "pixel_auroc",
           "pixel_auroc_legacy", "pro", "fit_seconds", "predict_seconds_per_image", "model_bytes", "stored_items"]
#: the metric columns (fractions in the runs and metrics.json, percent in the table and figure)
PERCENT_COLUMNS = ("image_auroc", "pixel_auroc", "pixel_auroc_legacy", "pro")
#: display headers and formats of those columns (the model file in MB)
HEADERS = {"k_or_d": "k / d", "image_auroc": "image AUROC (%)", "pixel_auroc": "pixel AUROC (%)",
           "pixel_auroc_legacy": "pixel AUROC, legacy code (%)", "pro": "PRO (%)", "fit_seconds": "fit (s)",
           "predict_seconds_per_image": "predict (s / image)", "model_bytes": "model file (MB)",
           "stored_items": "stored items"}
FORMATS = {**{c: "{:.2f}" for c in PERCENT_COLUMNS}, "fit_seconds": "{:.1f}", "predict_seconds_per_image": "{:.3f}",
           "model_bytes": lambda v: f"{v / 1e6:,.1f}", "stored_items": "{:,.0f}", "k_or_d": "{:.0f}"}
_QUALITY = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pro", "PRO"))


# =========================================================================== configuration and plan
def baseline_config(params: dict[str, Any]) -> tuple[PatchCoreConfig, int]:
    """(the shared PatchCore config: the notebook's PatchCore settings, the schema's defaults for the others;
    D = channels of the PaDiM/OrthoAD layers of the backbone)."""
    config = config_from_params(params)
    total = GaussianADConfig(backbone=params["backbone"], resize=params["resize"],
                             imagesize=params["imagesize"]).total_channels
    return config, total


def plan_baselines(params: dict[str, Any], total_channels: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of ``params["methods"]`` (PaDiM with ``padim_d``, OrthoAD once per ``orthoad_k``) and the
    skipped ones (d or k larger than D) with the reason.

    Each run: ``label``, ``method``, ``options`` (passed to ``make_detector``), ``k_or_d``.
    """
    runs, skipped = [], []
    for method in params["methods"]:
        if method == "patchcore":
            runs.append({"label": "PatchCore", "method": method, "options": {}, "k_or_d": None})
        elif method == "padim":
            d = params["padim_d"]
            if d > total_channels:
                skipped.append(f"PaDiM d={d}: exceeds D={total_channels}")
            else:
                runs.append({"label": f"PaDiM d={d}", "method": method, "options": {"d": d}, "k_or_d": d})
        elif method == "orthoad":
            for k in params["orthoad_k"]:
                if k > total_channels:
                    skipped.append(f"OrthoAD k={k}: exceeds D={total_channels} of {params['backbone']}")
                else:
                    runs.append({"label": f"OrthoAD k={k}", "method": method, "options": {"k": k}, "k_or_d": k})
        else:  # any other registered detector, with its defaults
            runs.append({"label": method, "method": method, "options": {}, "k_or_d": None})
    return runs, skipped


# =========================================================================== fit and predict
def _model_bytes(detector: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return detector.save(Path(tmp) / "model.pt").stat().st_size


def run_baselines(plan: list[dict[str, Any]], config: PatchCoreConfig, train: Any, test: Any,
                  params: dict[str, Any], log: Callable[[str], None] | None = print
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit and predict every planned run; returns (one row per run, predictions by run label)."""
    rows, all_predictions = [], {}
    for run in plan:
        detector = make_detector(run["method"], config, **run["options"])
        detector.fit(train, show_progress=False)
        predictions = detector.predict_dataset(test, show_progress=False)
        metrics = prediction_metrics(predictions)
        rows.append({"scope": f"ours: {params['category']}", "source": "this run", "method": run["method"],
                     "run": run["label"], "backbone": params["backbone"], "k_or_d": run["k_or_d"],
                     "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"],
                     "pixel_auroc_legacy": legacy_pixel_auroc(predictions.masks, predictions.maps),
                     "pro": metrics["pro"], "fit_seconds": detector.timings["fit_seconds"],
                     "predict_seconds_per_image": predictions.seconds / len(test),
                     "model_bytes": _model_bytes(detector), "stored_items": detector.memory_bank_size})
        all_predictions[run["label"]] = predictions
        if log is not None:
            log(f"{run['label']:<14} image AUROC {metrics['image_auroc']:.2%}  pixel AUROC "
                f"{metrics['pixel_auroc']:.2%}  PRO {metrics['pro']:.2%}  fit {detector.timings['fit_seconds']:.1f} s")
        del detector
    return pd.DataFrame(rows), all_predictions


# =========================================================================== tables
def baselines_table(ours: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Our rows and the published ones (``paper.reference.baseline_reference_table(category)``: none for
    a dataset other than MVTec AD) in one table (:data:`COLUMNS`), metrics in percent (2 decimals)."""
    parts = [ours, reference] if len(reference) else [ours]
    table = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    table[list(PERCENT_COLUMNS)] = (100 * table[list(PERCENT_COLUMNS)].astype(float)).round(2)
    return table


def style_baselines(table: pd.DataFrame) -> Any:
    """A pandas Styler of :func:`baselines_table`: short headers (:data:`HEADERS`), display formats, no index."""
    formats = {HEADERS.get(k, k): v for k, v in FORMATS.items() if k in table.columns}
    return table.rename(columns=HEADERS).style.format(formats, na_rep="-").hide(axis="index")


def legacy_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Pixel AUROC (%) by scikit-learn vs by the original OrthoAD code's computation, and their difference
    (percentage points)."""
    sklearn, legacy = 100 * ours["pixel_auroc"].astype(float), 100 * ours["pixel_auroc_legacy"].astype(float)
    return pd.DataFrame({"run": ours["run"], "pixel AUROC, sklearn (%)": sklearn.round(2),
                         "pixel AUROC, legacy OrthoAD code (%)": legacy.round(2),
                         "legacy - sklearn (points)": (legacy - sklearn).round(2)})


def baselines_record(params: dict[str, Any], total_channels: int, ours: pd.DataFrame, skipped: list[str],
                     reference: pd.DataFrame) -> dict[str, Any]:
    """The metrics.json content of notebook 06."""
    return {"category": params["category"], "backbone": params["backbone"], "total_channels": total_channels,
            "runs": ours.to_dict(orient="records"), "skipped": skipped,
            "reference_mvtec_means": reference.to_dict(orient="records"),
            "note": ("reference rows are MVTec AD means over 15 categories, not values for this category"
                     if len(reference) else "no published values for this dataset")}


# =========================================================================== the figure
def _plot_quality(ax: Any, ours: pd.DataFrame, reference: pd.DataFrame, x: np.ndarray, category: str) -> None:
    width = 0.27
    for offset, (column, name) in zip((-width, 0, width), _QUALITY):
        ax.bar(x + offset, 100 * ours[column], width, label=name)
    for i, method in enumerate(ours["method"]):
        for _, ref in reference[reference["method"] == method].iterrows():
            for offset, (column, _) in zip((-width, 0, width), _QUALITY):
                if np.isfinite(ref[column]):
                    ax.plot(x[i] + offset, 100 * ref[column], marker="_", color="black", markersize=12)
    if len(reference):
        ax.plot([], [], marker="_", color="black", linestyle="none", markersize=12,
                label="published MVTec AD means (all categories)")
    low = 100 * np.nanmin(ours[[c for c, _ in _QUALITY]].to_numpy(dtype=float))
    ax.set_ylim(max(0.0, min(low, 90.0) - 5.0), 101.0)
    ax.set_ylabel("%")
    ax.set_title(f"{category}: quality (ours, sklearn AUROC, %)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


def _plot_times(ax: Any, ours: pd.DataFrame, x: np.ndarray) -> None:
    ax.bar(x - 0.2, ours["fit_seconds"], 0.4, label="fit (s)")
    ax.bar(x + 0.2, ours["predict_seconds_per_image"], 0.4, label="predict (s / image)")
    ax.set_yscale("log")
    ax.set_title("time (log scale)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


def _plot_sizes(ax: Any, ours: pd.DataFrame, x: np.ndarray) -> None:
    sizes = ours["model_bytes"] / 1e6
    ax.bar(x, sizes, color="tab:gray")
    for xi, size in zip(x, sizes):
        ax.annotate(f"{size:,.1f}", (xi, size), ha="center", va="bottom", fontsize=8)
    if sizes.max() > 20 * sizes.min():  # log scale only where sizes span orders of magnitude
        ax.set_yscale("log")
    ax.set_ylabel("MB")
    ax.set_title("saved model file (MB)")


def plot_baselines(ours: pd.DataFrame, reference: pd.DataFrame, params: dict[str, Any], num_train: int,
                   num_test: int) -> Any:
    """Three panels per run: quality (with the published means as black ticks), fit/predict time, model size."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    labels = ours["run"].tolist()
    x = np.arange(len(labels))
    _plot_quality(axes[0], ours, reference, x, params["category"])
    _plot_times(axes[1], ours, x)
    _plot_sizes(axes[2], ours, x)
    for ax in axes:
        ax.set_xticks(x, labels, rotation=20)
    fig.suptitle(f"{params['backbone']}, {params['imagesize']} px, {num_train} train / {num_test} test images")
    fig.tight_layout()
    return fig
