"""Notebook 04 (evaluate one category): the detector's config from the parameters, the metrics record over
seeds (mean, sample sd, per-seed values), ROC and PRO curves with their spread over seeds, per-defect AUROC,
best/worst segmentations and the published numbers beside ours."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from patchcore_lib.components.backbones import BACKBONES, get_spec
from patchcore_lib.data import Preprocess, load_rgb, open_split
from patchcore_lib.detectors import (Detector, EnsembleConfig, PatchCore, PatchCoreConfig, ThresholdOptions,
                                     f1_optimal_threshold, make_detector, threshold_rates)
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics import PixelMetrics, image_auroc, per_defect_image_auroc, pixel_auroc, roc_points
from patchcore_lib.evaluation.options import EvaluationOptions
from patchcore_lib.paper.reference import (ALL_METRICS, is_mvtec_category, official_results, official_run_for,
                                           official_runs, paper_method_for, paper_table)
from patchcore_lib.study.cached_scoring import (SeedRun, draw_seed_band, mean_sd, seed_pixel_metrics, seed_record,
                                                seed_statistics)
from patchcore_lib.study.params import config_from_params, parameter_default, with_config_defaults
from patchcore_lib.study.display import method_colour, score_text
from patchcore_lib.study.outputs import relative_paths
from patchcore_lib.utils.schema import schema_fields

#: keys every 04_evaluate metrics.json holds under "metrics"
REQUIRED_METRICS = ("image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds_per_image",
                    "memory_bank_size", "category", "config")
#: the columns of the one-row metrics table
ROW_COLUMNS = ("category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro", "fit_seconds",
               "predict_seconds_per_image", "memory_bank_size", "mask_convention")
#: the numbers of a run that are averaged over seeds (``<key>`` the mean, ``<key>_sd`` the sample sd)
SEED_METRICS = ("image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro", "fit_seconds",
                "predict_seconds", "predict_seconds_per_image")


# =========================================================================== configuration and records
def evaluation_config(params: dict[str, Any]) -> PatchCoreConfig | EnsembleConfig:
    """The configuration of notebook 04's detector: one PatchCore, or an ensemble when ``ensemble_backbones``
    names two or more backbones (the members share every setting but the backbone and its layers; fused as
    ``ensemble_fusion`` says, official by default)."""
    config = config_from_params(params)
    if params.get("ensemble_backbones"):
        return EnsembleConfig.from_backbones(config, params["ensemble_backbones"],
                                             fusion=params.get("ensemble_fusion",
                                                               parameter_default("ensemble_fusion")))
    return config


def evaluation_detector(params: dict[str, Any]) -> Detector:
    """The unfitted detector of :func:`evaluation_config`."""
    config = evaluation_config(params)
    return make_detector("patchcore_ensemble" if isinstance(config, EnsembleConfig) else "patchcore", config)


def evaluation_options(params: dict[str, Any]) -> EvaluationOptions:
    """The :class:`EvaluationOptions` among the notebook parameters (defaults for those not given)."""
    return EvaluationOptions(**{k: v for k, v in params.items() if k in schema_fields(EvaluationOptions)})


def setting_name(config: dict[str, Any]) -> str:
    """A short, stable name of a configuration, in the style of the official run names.

    e.g. ``IM224_efficientnet_lite0_L2-4_P0.1_D1024-384_PS-3_AN-1`` (image size, backbone, layers, coreset
    ratio, embedding dimensions ``_D<pretrain>-<target>``, patch size, nearest neighbours; ``_S<seed>`` when the
    seed is not 0, ``_<score>`` when not ``max``, ``_crop-none`` for the whole-image geometry). The embedding
    dimensions are ALWAYS named, from the backbone's defaults when the config leaves them empty (efficientnet_lite0:
    1024 -> 384), so a 1024-1024 run reads like-for-like with the official ``..._D1024-1024_...`` run names.
    """
    if not config:
        return "unknown"
    layers = [str(layer) for layer in config.get("layers") or []]
    digits = [layer.rsplit(".", 1)[-1].replace("layer", "").replace("denseblock", "") for layer in layers]
    layer_part = "L" + "-".join(digits) if digits else "Ldefault"
    default, settings = with_config_defaults({}), with_config_defaults(config)  # missing: the schema's default
    ratio = float(settings["coreset_ratio"])
    known = get_spec(config["backbone"]).embed_dims if config.get("backbone") in BACKBONES else (None, None)
    dims = [config.get(f"{k}_embed_dimension") or fallback for k, fallback in zip(("pretrain", "target"), known)]
    dim_part = "D" + "-".join(str(int(d)) if d else "?" for d in dims)
    name = (f"IM{config.get('imagesize', '?')}_{config.get('backbone', '?')}_{layer_part}_P{ratio:g}_{dim_part}"
            f"_PS-{settings['patch_size']}_AN-{settings['num_nn']}")
    for option in ("sampler", "score"):
        if settings[option] != default[option]:
            name += f"_{settings[option]}"
    if int(settings["patch_stride"] or default["patch_stride"]) != default["patch_stride"]:
        name += f"_stride-{settings['patch_stride']}"
    if settings["knn_search"] != default["knn_search"]:
        name += f"_{settings['knn_search']}"
    if int(settings["seed"] or default["seed"]) != default["seed"]:
        name += f"_S{settings['seed']}"
    if settings["crop"] != default["crop"]:
        name += f"_crop-{settings['crop']}"
    return name


def metrics_record(row: dict[str, Any], predictions: Any, config: Any) -> dict[str, Any]:
    """The metrics.json content of one evaluation: the row, per-defect AUROC and the full config."""
    record: dict[str, Any] = {key: row[key] for key in ("category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc",
                                        "anomaly_pro", "fit_seconds", "predict_seconds", "predict_seconds_per_image",
                                        "memory_bank_size", "num_train", "num_test", "mask_convention") if key in row}
    record["per_defect_image_auroc"] = per_defect_image_auroc(predictions.defect_types, predictions.labels,
                                                              predictions.scores)
    record["config"] = config.to_dict()
    record["setting"] = setting_name(record["config"])
    missing = [k for k in REQUIRED_METRICS if k not in record]
    if missing:
        raise ConfigError(f"evaluation row lacks {', '.join(missing)}")
    return record


def metrics_over_seeds(runs: Sequence[SeedRun], config: Any) -> dict[str, Any]:
    """The metrics.json content of one evaluation repeated over seeds: :func:`metrics_record` of the first seed
    with every :data:`SEED_METRICS` key (and the per-defect AUROC) replaced by its mean over the seeds, plus
    ``<key>_sd`` (sample sd, ddof=1; NaN for one seed), ``seeds`` and ``per_seed`` ({key: values in seed order})."""
    return seed_record([metrics_record(run.row, run.predictions, config) for run in runs], [run.seed for run in runs],
                       SEED_METRICS, nested=("per_defect_image_auroc",))


def metrics_row_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The one-row table of the headline numbers of a :func:`metrics_record` (``<key>_sd`` after each key of
    :data:`SEED_METRICS` and ``seeds`` when the record is one of :func:`metrics_over_seeds`)."""
    columns = [c for k in ROW_COLUMNS for c in ((k, f"{k}_sd") if f"{k}_sd" in metrics else (k,))]
    return pd.DataFrame([{**{k: metrics.get(k) for k in columns},
                          **({"seeds": " ".join(map(str, metrics["seeds"]))} if "seeds" in metrics else {})}])


#: display formats of the metrics row that are not a percentage (mean ± sd over seeds, 1 decimal)
ROW_FORMATS = {"fit_seconds": "{:.1f}", "predict_seconds_per_image": "{:.3f}", "memory_bank_size": "{:,}"}


def metrics_column(table: pd.DataFrame) -> pd.DataFrame:
    """The one-row table of :func:`metrics_row_table` as a ``metric`` / ``value`` column (strings: metrics as
    "mean ± sd" in percent, seconds as "mean ± sd"), readable in narrow HTML where a wide row runs off the page."""
    row = table.iloc[0]
    shown = {key: mean_sd(value, row.get(f"{key}_sd")) if key in SEED_METRICS and key not in ROW_FORMATS else
             "-" if value is None or (isinstance(value, float) and np.isnan(value)) else
             " ± ".join(ROW_FORMATS.get(key, "{}").format(v) for v in (value, row.get(f"{key}_sd")) if not pd.isna(v))
             for key, value in row.items() if not key.endswith("_sd")}
    return pd.DataFrame({"metric": list(shown), "value": list(shown.values())})


def scores_table(predictions: Any) -> pd.DataFrame:
    """Per test image: path (relative to the category folder), defect type, label, image score."""
    return pd.DataFrame({"path": relative_paths(predictions.paths), "defect_type": predictions.defect_types,
                         "label": predictions.labels, "score": predictions.scores})


# =========================================================================== curves
def _pixel_roc(pixel: PixelMetrics, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr = pixel.roc  # roc_curve's points (drop_intermediate)
    if fpr.size > max_points:  # plotting only: keep an even subset of the points (curve shape unchanged)
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


#: PatchCore's colour in every figure of the study (study/display.METHOD_COLOURS)
PATCHCORE = method_colour("PatchCore")


def _seeds(predictions: Any) -> list[Any]:  # one Predictions or SeedRun per seed, or one
    return list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]


def plot_roc_curves(predictions: Any, title: str = "") -> Any:
    """Two panels: image-level ROC (image score) and pixel-level ROC (anomaly maps vs masks). ``predictions``:
    one per seed (or one; :class:`SeedRun` objects: their pixel metrics are reused): the mean curve, ± sd over
    the seeds as a band, AUROC as mean ± sd in the legend."""
    pixel = seed_pixel_metrics(_seeds(predictions))
    runs, grid = [getattr(p, "predictions", p) for p in _seeds(predictions)], np.linspace(0, 1, 201)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    image = [image_auroc(p.labels, p.scores) for p in runs]
    draw_seed_band(axes[0], [roc_points(p.labels, p.scores) for p in runs], grid, PATCHCORE,
                   f"PatchCore (AUROC {mean_sd(*seed_statistics(image))}%)")
    if pixel:
        value = mean_sd(*seed_statistics([p.pixel_auroc for p in pixel]))
        draw_seed_band(axes[1], [_pixel_roc(p) for p in pixel], grid, PATCHCORE, f"PatchCore (AUROC {value}%)")
    for ax, what in zip(axes, ("image level (detection)", "pixel level (segmentation)")):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
               title=f"ROC, {what}")
        ax.legend(loc="lower right")
    fig.suptitle(title + (f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""))
    fig.tight_layout()
    return fig


def plot_pro_curve(predictions: Any, title: str = "", max_fpr: float = 0.3) -> Any:
    """The PRO curve (per-region overlap vs pixel FPR up to ``max_fpr``) with its normalised area; one
    ``predictions`` per seed (:class:`SeedRun` objects: their pixel metrics are reused): the mean curve with ± sd
    over the seeds as a band."""
    pixel = seed_pixel_metrics(_seeds(predictions), max_fpr)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if pixel:
        score = mean_sd(*seed_statistics([p.pro for p in pixel]))
        draw_seed_band(ax, [p.pro_curve(300) for p in pixel], np.linspace(0, max_fpr, 151), PATCHCORE,
                       f"PatchCore (AU-PRO {score}%)")
    else:
        ax.text(0.5, 0.5, "PRO undefined (no defect pixels)", ha="center", transform=ax.transAxes)
    ax.set(xlim=(0, max_fpr), ylim=(0, 1.01), xlabel="pixel false positive rate",
           ylabel="per-region overlap (PRO)", title=title or f"PRO curve (FPR <= {max_fpr})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# =========================================================================== per defect type
def per_defect_table(predictions: Any) -> pd.DataFrame:
    """Image AUROC per defect type (all good test images + that type): mean over the seeds (one ``predictions``
    per seed, or one) and its sample sd, with the image counts."""
    runs = _seeds(predictions)
    aurocs = [per_defect_image_auroc(p.defect_types, p.labels, p.scores) for p in runs]
    counts = pd.Series(runs[0].defect_types).value_counts()
    rows = [{"defect_type": d, **dict(zip(("image_auroc", "image_auroc_sd"), seed_statistics([a[d] for a in aurocs]))),
             "num_images": int(counts.get(d, 0)), "num_good": int(counts.get("good", 0))} for d in aurocs[0]]
    return pd.DataFrame(rows, columns=["defect_type", "image_auroc", "image_auroc_sd", "num_images", "num_good"])


def plot_per_defect(table: pd.DataFrame, title: str = "") -> Any:
    """Bar chart of the per-defect-type image AUROC (percent)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table) + 2), 4))
    values = 100 * table["image_auroc"].astype(float).to_numpy()
    sds = 100 * table["image_auroc_sd"].astype(float).fillna(0).to_numpy() if "image_auroc_sd" in table else None
    bars = ax.bar(table["defect_type"], values, color=PATCHCORE, yerr=sds, capsize=4, ecolor="black")
    for bar, value, sd in zip(bars, values, sds if sds is not None else np.zeros(len(values))):
        ax.annotate(mean_sd(value / 100, sd / 100 if sds is not None else None),
                    (bar.get_x() + bar.get_width() / 2, min(value + sd, 100.5)), ha="center", va="bottom", fontsize=8)
    low = np.nanmin(values) if len(values) and np.isfinite(values).any() else 50.0
    ax.set(ylim=(max(0.0, min(low - 5, 90.0)), 101.5), xlabel="defect type",
           ylabel="image AUROC (%), good vs this type", title=title or "Image AUROC per defect type (± sd)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return fig


# =========================================================================== segmentations
def segmentation_ranking(predictions: Any) -> pd.DataFrame:
    """Anomalous test images ranked by segmentation quality (per-image pixel AUROC, best first). Columns: index
    (into the predictions), path (relative to the category folder), defect_type, score, pixel_auroc,
    defect_pixels. Images without defect pixels in their mask are left out."""
    rows = []
    for i in np.flatnonzero(np.asarray(predictions.labels) == 1):
        mask = np.asarray(predictions.masks[i]).ravel() > 0
        if not mask.any() or mask.all():
            continue
        rows.append({"index": int(i), "path": relative_paths([predictions.paths[i]])[0],
                     "defect_type": predictions.defect_types[i], "score": float(predictions.scores[i]),
                     "pixel_auroc": pixel_auroc(mask.reshape(np.shape(predictions.masks[i])), predictions.maps[i]),
                     "defect_pixels": int(mask.sum())})
    table = pd.DataFrame(rows, columns=["index", "path", "defect_type", "score", "pixel_auroc", "defect_pixels"])
    return table.sort_values(["pixel_auroc", "score"], ascending=False).reset_index(drop=True)


def best_and_worst(ranking: pd.DataFrame, count: int = 3) -> dict[str, list[int]]:
    """``{"best": indices, "worst": indices}`` of a :func:`segmentation_ranking` (worst: the worst first)."""
    n = min(count, len(ranking))
    return {"best": ranking.head(n)["index"].tolist(), "worst": ranking.tail(n).iloc[::-1]["index"].tolist()}


def _load_display_image(path: str, resize: int, imagesize: int, crop: str = "center") -> np.ndarray:
    preprocess = Preprocess(resize, imagesize, crop=crop)
    return preprocess.denormalise(preprocess.image(load_rgb(Path(path))))


def plot_segmentations(predictions: Any, indices: Sequence[int], resize: int, imagesize: int, title: str = "",
                       crop: str = "center") -> Any:
    """One row per image: the test image with the ground-truth contour, the anomaly map overlaid, the map alone.
    The colour scale is shared by all rows (min..max of the maps over the whole test set), so rows compare."""
    indices = [int(i) for i in indices]
    n = max(1, len(indices))
    fig, axes = plt.subplots(n, 3, figsize=(10, 3.2 * n), squeeze=False)
    vmin, vmax = float(np.min(predictions.maps)), float(np.max(predictions.maps))
    mappable = None
    for row, index in enumerate(indices):
        image = _load_display_image(predictions.paths[index], resize, imagesize, crop)
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
        axes[row, 1].set_title(f"anomaly map overlay (score {score_text(predictions.scores[index])})", fontsize=9)
        axes[row, 2].imshow(amap, cmap="jet", vmin=vmin, vmax=vmax)
        axes[row, 2].set_title("anomaly map", fontsize=9)
        for ax in axes[row]:
            ax.set(xticks=[], yticks=[])
    if not indices:
        for ax in axes[0]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no anomalous image with a mask", ha="center")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label="anomaly score")  # all columns: equal widths
    if title:
        fig.suptitle(title)
    return fig


# =========================================================================== published numbers
def reference_comparison(category: str, metrics: dict[str, Any]) -> pd.DataFrame:
    """Our numbers beside the paper's and the official code's for one category (percent).

    Rows: ``ours``, the matching paper variant (per category where known, else its 15-class mean, marked in
    ``scope``) and every official run with a value for the category. Empty (only ``ours``) for non-MVTec data.
    Columns: every metric of :data:`ALL_METRICS`; a reference has a value only where its definition is ours
    (official: no ``pro``; paper: no anomalous-image metrics). ``ours`` names its mask convention.
    """
    config = metrics.get("config", {})
    convention = metrics.get("mask_convention", "nearest")
    seeds = f", mean of {len(metrics['seeds'])} seeds" if len(metrics.get("seeds", ())) > 1 else ""
    rows = [{"source": f"ours ({setting_name(config)}, {convention} masks{seeds})", "scope": "category",
             **{m: 100 * float(metrics.get(m, float("nan"))) for m in ALL_METRICS}}]
    if is_mvtec_category(category):
        method = paper_method_for(with_config_defaults(config)["coreset_ratio"])
        paper = paper_table()
        for method_name in dict.fromkeys([method, "PatchCore-25%", "PatchCore-10%", "PatchCore-1%"]):
            hit = paper[(paper["method"] == method_name) & (paper["category"] == category)]
            scope = "category"
            if not len(hit):
                hit = paper[(paper["method"] == method_name) & (paper["category"] == "mean")]
                scope = "mean of 15 (no per-class value)"
            if len(hit):
                rows.append({"source": f"paper: {method_name}", "scope": scope,
                             **{m: 100 * float(hit.iloc[0][m]) for m in ALL_METRICS if m in hit.columns}})
        matching = official_run_for(with_config_defaults(config))
        for run in [matching] + [r for r in official_runs() if r != matching]:
            table = official_results(run)
            hit = table[table["category"] == category]
            if len(hit):
                scope = "category" + (" (closest run to this setting)" if run == matching else "")
                rows.append({"source": f"official: {run}", "scope": scope,
                             **{m: 100 * float(hit.iloc[0][m]) for m in ALL_METRICS}})
    table = pd.DataFrame(rows, columns=["source", "scope", *ALL_METRICS])
    return table.rename(columns={m: f"{m} (%)" for m in ALL_METRICS})


# =========================================================================== threshold from normal images
def threshold_check(detector: Detector, params: dict[str, Any], predictions: Any,
                    train_features: Any = None) -> dict[str, Any]:
    """Calibrate ``detector``'s threshold out of fold on the train split (normal images only, see
    ``detectors/threshold.py``) and measure what it gets on the test split: false-alarm rate (normal test images
    above it) and miss rate (defect images not above it), beside the target and the F1-optimal threshold of
    the test split (an upper bound: it looks at the labels). Ensembles and other detectors: ``{}``.
    ``train_features`` [N*h*w, D] (:func:`~patchcore_lib.study.cached_scoring.evaluate_over_seeds`): the train
    split's patch features, used instead of extracting them again."""
    if not isinstance(detector, PatchCore):
        return {}
    options = ThresholdOptions(**{k: params[k] for k in ("false_alarm_rate", "calibration_folds") if k in params})
    if not options.calibration_folds:
        return {}
    config = detector.config
    train = train_features if train_features is not None else open_split(
        params["data_root"], params["category"], "train", config.resize, config.imagesize,
        layout=params.get("layout", parameter_default("layout")), crop=config.crop)
    record = detector.calibrate(train, options, show_progress=True)
    measured = threshold_rates(predictions.scores, predictions.labels, record["threshold"])
    best = f1_optimal_threshold(predictions.scores, predictions.labels) \
        if 0 < int(np.sum(predictions.labels)) < len(predictions.labels) else {}
    return {"record": record, "measured": measured, "f1": best}


def threshold_table(check: dict[str, Any]) -> pd.DataFrame:
    """One row per threshold (calibrated, test-F1): value, target and measured false-alarm and miss rates."""
    if not check:
        return pd.DataFrame(columns=["threshold_from", "threshold", "target_false_alarm_rate", "false_alarm_rate",
                                     "miss_rate", "false_alarms", "misses", "num_normal", "num_anomalous"])
    record, measured = check["record"], check["measured"]
    rows = [{"threshold_from": f"normal train images ({record['folds']} folds)", "threshold": record["threshold"],
             "target_false_alarm_rate": record["false_alarm_rate"], **measured}]
    return pd.DataFrame(rows)


def plot_threshold(check: dict[str, Any], predictions: Any, title: str = "") -> Any:
    """Test scores of normal and defect images with the calibrated (and F1-optimal) threshold."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    scores, labels = np.asarray(predictions.scores), np.asarray(predictions.labels)
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(scores[labels == 0], bins=bins.tolist(), alpha=0.6, color="C0", label="normal test images")
    ax.hist(scores[labels == 1], bins=bins.tolist(), alpha=0.6, color="C3", label="defect test images")
    if check:
        measured = check["measured"]
        ax.axvline(check["record"]["threshold"], color="k", lw=2,
                   label=f"calibrated (target {100 * check['record']['false_alarm_rate']:g}% false alarms): "
                         f"{100 * measured['false_alarm_rate']:.1f}% false alarms, "
                         f"{100 * measured['miss_rate']:.1f}% misses")
        if check.get("f1"):
            ax.axvline(check["f1"]["threshold"], color="grey", ls="--", lw=1.5,
                       label=f"F1-optimal on the test labels (F1 {check['f1']['f1']:.2f})")
    ax.set(xlabel="image score", ylabel="images", title=title or "Threshold from normal images only")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: never over the bars
    fig.tight_layout()
    return fig
