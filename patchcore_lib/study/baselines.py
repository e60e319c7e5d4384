"""Notebook 06 (baselines): PatchCore, PaDiM and OrthoAD fitted on one category, beside every published or measured
reference value (PaDiM / OrthoAD: their MVTec AD means; PatchCore: the paper's value for this category where it
gives one, else its 15-class mean or its value on another dataset, and the official code run here with the same
setting), with quality, time and model size in one figure."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.detectors import GaussianADConfig, PatchCoreConfig, make_detector
from patchcore_lib.evaluation import prediction_metrics
from patchcore_lib.evaluation.metrics import legacy_pixel_auroc
from patchcore_lib.paper.anchors import anchor_match, paper_other_datasets
from patchcore_lib.paper.reference import baseline_reference_table, paper_method_for, paper_table_percent
from patchcore_lib.study.cached_scoring import summarise_seeds
from patchcore_lib.study.display import mean_sd_text, method_colour
from patchcore_lib.study.paper_values import paper_value
from patchcore_lib.study.params import config_from_params

#: the columns of the baselines table (ours and the published rows; metrics in percent)
COLUMNS = ["scope", "source", "method", "run", "backbone", "k_or_d", "seeds", "image_auroc", "image_auroc_sd",
           "pixel_auroc", "pixel_auroc_sd", "pixel_auroc_legacy", "pixel_auroc_legacy_sd", "pro", "pro_sd",
           "fit_seconds", "predict_seconds_per_image", "model_bytes", "stored_items"]
#: the metric columns (fractions in the runs and metrics.json, percent in the table and figure)
PERCENT_COLUMNS = ("image_auroc", "pixel_auroc", "pixel_auroc_legacy", "pro")
#: display headers and formats of those columns (the model file in MB)
HEADERS = {"k_or_d": "k / d", "image_auroc": "image AUROC (%)", "pixel_auroc": "pixel AUROC (%)",
           "pixel_auroc_legacy": "pixel AUROC, legacy code (%)", "pro": "PRO (%)", "fit_seconds": "fit (s)",
           "predict_seconds_per_image": "predict (s / image)", "model_bytes": "model file (MB)",
           "stored_items": "stored items", "seeds": "seeds"}
FORMATS = {**{c: "{:.1f}" for c in PERCENT_COLUMNS}, "fit_seconds": "{:.1f}", "predict_seconds_per_image": "{:.3f}",
           "model_bytes": lambda v: f"{v / 1e6:,.1f}", "stored_items": "{:,.0f}", "k_or_d": "{:.0f}",
           "seeds": "{:.0f}"}
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


def run_seeds(params: dict[str, Any]) -> list[int]:
    """The seeds every run is repeated with: ``params["seeds"]``, else ``[params["seed"]]``. A seed changes the
    PatchCore coreset (projection and start), PaDiM's channel subset and OrthoAD's projection."""
    seeds = params.get("seeds") or [params.get("seed", 0)]
    return [int(s) for s in seeds]


def run_baselines(plan: list[dict[str, Any]], config: PatchCoreConfig, train: Any, test: Any,
                  params: dict[str, Any], log: Callable[[str], None] | None = print
                  ) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Fit and predict every planned run once per seed (:func:`run_seeds`).

    Returns (one row per run: every number the mean over the seeds, ``<number>_sd`` its sample sd and ``seeds``
    the seeds; predictions of the first seed by run label; one row per run and seed).
    """
    seeds = run_seeds(params)
    rows: list[dict[str, Any]] = []
    all_predictions: dict[str, Any] = {}
    for run in plan:
        for seed in seeds:
            detector = make_detector(run["method"], dataclasses.replace(config, seed=seed), **run["options"])
            detector.fit(train, show_progress=False)
            predictions = detector.predict_dataset(test, show_progress=False)
            metrics = prediction_metrics(predictions)
            rows.append({"scope": f"ours: {params['category']}", "source": "this run", "method": run["method"],
                         "run": run["label"], "backbone": params["backbone"], "k_or_d": run["k_or_d"],
                         "seed": seed, "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"],
                         "pixel_auroc_legacy": legacy_pixel_auroc(predictions.masks, predictions.maps),
                         "pro": metrics["pro"], "fit_seconds": detector.timings["fit_seconds"],
                         "predict_seconds_per_image": predictions.seconds / len(test),
                         "model_bytes": _model_bytes(detector), "stored_items": detector.memory_bank_size})
            all_predictions.setdefault(run["label"], predictions)
            if log is not None:
                log(f"{run['label']:<14} seed {seed}: image AUROC {metrics['image_auroc']:.2%}  pixel AUROC "
                    f"{metrics['pixel_auroc']:.2%}  PRO {metrics['pro']:.2%}  fit {detector.timings['fit_seconds']:.1f} s")
            del detector
    per_seed = pd.DataFrame(rows)
    ours = summarise_seeds(per_seed, ["run"], [*PERCENT_COLUMNS, "fit_seconds", "predict_seconds_per_image"])
    ours["seeds"] = [seeds] * len(ours)
    return ours, all_predictions, per_seed


# =========================================================================== reference values
def patchcore_references(category: str, config: PatchCoreConfig) -> pd.DataFrame:
    """The reference values of the PatchCore bar (columns of ``paper.reference.baseline_reference_table``, metrics as
    fractions, NaN where a source gives none), one row per source:

    * the paper's (``study.paper_values.paper_value`` per metric: this category's value where the paper gives
      one, else its 15-class mean or its value on another dataset, the row's ``scope`` says which);
    * the official code run here with the same setting (``paper/data/anchors_measured.csv``): image AUROC only,
      as its masks are resized bilinearly and cast to int while ours use the nearest-neighbour convention.
    """
    method = paper_method_for(config.coreset_ratio)
    by_scope: dict[str, dict[str, Any]] = {}
    for metric, _ in _QUALITY:
        value, scope = paper_value(paper_table_percent(), paper_other_datasets(), method, category, metric)
        if scope:
            row = by_scope.setdefault(scope, {"scope": scope, "source": "PatchCore paper", "method": "patchcore",
                                              "backbone": "wide_resnet50_2", "k_or_d": float("nan"),
                                              **{m: float("nan") for m, _ in _QUALITY}})
            row[metric] = value / 100
    anchor, _ = anchor_match(category, config.to_dict())  # the config's embedding dims are resolved
    rows = list(by_scope.values())
    if anchor:
        rows.append({"scope": f"{category}, same setting, image AUROC only (its masks differ)",
                     "source": "official code run here", "method": "patchcore", "backbone": str(config.backbone),
                     "k_or_d": float("nan"), "image_auroc": float(anchor["image_auroc"]),
                     "pixel_auroc": float("nan"), "pro": float("nan")})
    return pd.DataFrame(rows, columns=["scope", "source", "method", "backbone", "k_or_d",
                                       *[m for m, _ in _QUALITY]])


def reference_rows(category: str, config: PatchCoreConfig) -> pd.DataFrame:
    """Every reference value of notebook 06: the PaDiM / OrthoAD MVTec AD means (MVTec AD categories only) and
    :func:`patchcore_references`."""
    parts = [t for t in (baseline_reference_table(category), patchcore_references(category, config)) if len(t)]
    return pd.concat(parts, ignore_index=True) if parts else baseline_reference_table(category)


# =========================================================================== tables
def baselines_table(ours: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Our rows and the published ones (``paper.reference.baseline_reference_table(category)``: none for
    a dataset other than MVTec AD) in one table (:data:`COLUMNS`), metrics and their sds over the seeds in percent
    (full precision; :func:`style_baselines` shows one decimal)."""
    parts = [ours, reference] if len(reference) else [ours]
    table = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    percent = [c for c in COLUMNS if c.removesuffix("_sd") in PERCENT_COLUMNS]
    table[percent] = 100 * table[percent].astype(float)
    table["seeds"] = [len(s) if isinstance(s, (list, tuple)) else np.nan for s in table["seeds"]]
    return table


def style_baselines(table: pd.DataFrame) -> Any:
    """A pandas Styler of :func:`baselines_table`: each metric as ``mean ± sd`` over the seeds (one decimal), short
    headers (:data:`HEADERS`), display formats, no index."""
    shown = table.drop(columns=[c for c in table.columns if c.endswith("_sd")])
    for column in PERCENT_COLUMNS:
        sds = table[f"{column}_sd"] if f"{column}_sd" in table else [None] * len(table)
        shown[column] = [mean_sd_text(m, sd) for m, sd in zip(table[column], sds)]
    formats = {HEADERS.get(k, k): v for k, v in FORMATS.items() if k in shown.columns and k not in PERCENT_COLUMNS}
    return shown.rename(columns=HEADERS).style.format(formats, na_rep="-").hide(axis="index")


def legacy_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Pixel AUROC (%) by scikit-learn vs by the original OrthoAD code's computation, and their difference
    (percentage points)."""
    sklearn, legacy = 100 * ours["pixel_auroc"].astype(float), 100 * ours["pixel_auroc_legacy"].astype(float)
    return pd.DataFrame({"run": ours["run"], "pixel AUROC, sklearn (%)": sklearn,
                         "pixel AUROC, legacy OrthoAD code (%)": legacy, "legacy - sklearn (points)": legacy - sklearn})


def baselines_record(params: dict[str, Any], total_channels: int, ours: pd.DataFrame, skipped: list[str],
                     reference: pd.DataFrame) -> dict[str, Any]:
    """The metrics.json content of notebook 06."""
    return {"category": params["category"], "backbone": params["backbone"], "total_channels": total_channels,
            "seeds": run_seeds(params), "runs": ours.to_dict(orient="records"), "skipped": skipped,
            "reference_mvtec_means": reference.to_dict(orient="records"),
            "note": ("each reference row's scope says what it is (this category, a 15-class mean, another dataset, "
                     "the official code run here)" if len(reference) else "no published values for this dataset")}


# =========================================================================== the figure
_REFERENCE_MARKERS = ("_", "x", "+", "^", "v", "s", "D", "P", "<", ">")


def _marker_style(marker: str) -> dict[str, str]:
    """Black outline for the filled markers, black lines for the line markers."""
    return {"facecolors": "none", "edgecolors": "black"} if marker in "^vsDP<>" else {"color": "black"}


def _reference_label(ref: Any) -> str:
    """``OrthoAD paper, wide_resnet50_2, k=100 [MVTec AD mean (15 categories)]``: the source of one reference row."""
    size = "" if pd.isna(ref.get("k_or_d")) else f", {'d' if ref['method'] == 'padim' else 'k'}={int(ref['k_or_d'])}"
    return f"{ref['source']}, {ref['backbone']}{size} [{ref['scope']}]"


def _plot_quality(ax: Any, ours: pd.DataFrame, reference: pd.DataFrame, category: str) -> None:
    """x: the three metrics; one bar per run in its method's colour (value inside, at its foot); the reference values
    of the run's method as markers at its bar, one marker per source, named (with its scope) in the legend."""
    x, width = np.arange(len(_QUALITY)), 0.8 / max(1, len(ours))
    labels: dict[str, str] = {}
    bars: list[tuple[np.ndarray, list[float]]] = []
    for k, (_, run) in enumerate(ours.iterrows()):
        position = x + (k - (len(ours) - 1) / 2) * width
        values = [100 * float(run[c]) for c, _ in _QUALITY]
        sds = [100 * float(run[f"{c}_sd"]) if f"{c}_sd" in run and pd.notna(run[f"{c}_sd"]) else 0.0
               for c, _ in _QUALITY]
        seeds = len(run["seeds"]) if isinstance(run.get("seeds"), (list, tuple)) else 1
        ax.bar(position, values, width * 0.95, color=method_colour(run["run"]), yerr=sds, capsize=3,
               error_kw={"elinewidth": 1}, label=f"ours: {run['run']}" + (f" (mean ± sd, {seeds} seeds)"
                                                                          if seeds > 1 else ""))
        bars.append((position, values))
        refs = reference[reference["method"] == run["method"]]
        for j, (_, ref) in enumerate(refs.iterrows()):  # spread over the bar's width: none hides another
            label = _reference_label(ref)
            marker = labels.setdefault(label, _REFERENCE_MARKERS[len(labels) % len(_REFERENCE_MARKERS)])
            ref_values = [100 * float(ref[c]) for c, _ in _QUALITY]
            shift = (j - (len(refs) - 1) / 2) * 0.8 * width / max(1, len(refs))
            ax.scatter(position + shift, ref_values, marker=marker, s=40, zorder=5, linewidths=1.2,
                       **_marker_style(marker))
    for label, marker in labels.items():
        ax.scatter([], [], marker=marker, label=label, **_marker_style(marker))
    shown = [100 * float(v) for v in ours[[c for c, _ in _QUALITY]].to_numpy().ravel()] + [
        100 * float(v) for v in reference[[c for c, _ in _QUALITY]].to_numpy().ravel()]
    low = min(v for v in shown if np.isfinite(v))
    ax.set_ylim(max(0.0, low - 0.25 * max(2.0, 100 - low)), 100 + 0.15 * max(2.0, 100 - low))
    ax.set_yticks([t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= 100])
    bottom = ax.get_ylim()[0]
    for position, values in bars:  # values inside the bars at their foot: the reference markers never hide them
        for p, v in zip(position, values):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (p, bottom), textcoords="offset points", xytext=(0, 3), ha="center",
                            va="bottom", rotation=90, fontsize=7, color="white", fontweight="bold")
    ax.set_xticks(x, [name for _, name in _QUALITY])
    ax.set_ylabel("%")
    ax.set_title(f"{category}: quality (ours, sklearn AUROC, %)")


def _plot_times(ax: Any, ours: pd.DataFrame) -> None:
    """x: fit and predict time; one bar per run in its method's colour, value on top (log scale)."""
    x, width = np.arange(2), 0.8 / max(1, len(ours))
    for k, (_, run) in enumerate(ours.iterrows()):
        position = x + (k - (len(ours) - 1) / 2) * width
        values = [float(run["fit_seconds"]), float(run["predict_seconds_per_image"])]
        ax.bar(position, values, width * 0.95, color=method_colour(run["run"]), label=run["run"])
        for p, v in zip(position, values):
            ax.annotate(f"{v:.3g}", (p, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(x, ["fit (s)", "predict (s / image)"])
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("time (this machine)")


def _plot_sizes(ax: Any, ours: pd.DataFrame) -> None:
    sizes = ours["model_bytes"] / 1e6
    x = np.arange(len(ours))
    ax.bar(x, sizes, color=[method_colour(r) for r in ours["run"]])
    for xi, size in zip(x, sizes):
        ax.annotate(f"{size:,.1f}", (xi, size), ha="center", va="bottom", fontsize=8)
    if sizes.max() > 20 * sizes.min():  # log scale only where sizes span orders of magnitude
        ax.set_yscale("log")
    ax.set_xticks(x, ours["run"].tolist(), rotation=15)
    ax.set_ylabel("MB")
    ax.set_title("saved model file (MB)")


def plot_baselines(ours: pd.DataFrame, reference: pd.DataFrame, params: dict[str, Any], num_train: int,
                   num_test: int, setting: str = "") -> Any:
    """Three panels (title: ``setting``, the PatchCore setting name): quality per metric, mean over the seeds with
    ± sd error bars (the reference values of each method as black markers, each source and its scope named in the
    legend: :func:`reference_rows`), fit/predict time, model size; one colour per method in all of them
    (``study.display.METHOD_COLOURS``); one legend under the panels."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained")
    _plot_quality(axes[0], ours, reference, params["category"])
    _plot_times(axes[1], ours)
    _plot_sizes(axes[2], ours)
    handles, labels = axes[0].get_legend_handles_labels()  # under all panels: a long source name never widens one
    fig.legend(handles, labels, loc="outside lower left", ncol=2, fontsize=7, frameon=False)
    name = setting or f"{params['backbone']}, {params['imagesize']} px"
    fig.suptitle(f"{params['category']}, {name} (PatchCore setting; PaDiM / OrthoAD: same backbone and geometry), "
                 f"{num_train} train / {num_test} test images")
    return fig
