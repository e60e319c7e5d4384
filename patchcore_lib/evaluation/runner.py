"""Evaluate PatchCore on categories of an MVTec-AD-layout dataset and write the result files.

Output directory layout::

    out/run.json                  configuration, package versions, git commit, dataset fingerprints, run id
    out/results.csv               one row per category plus a ``mean`` row (AUROC/PRO as fractions 0..1)
    out/<category>/metrics.json   the category's row, per-defect image AUROC, timings
    out/<category>/scores.csv     per-image scores (path, defect_type, label, score)
    out/<category>/model.pt       the fitted model (with ``save_model``)

Every file is written atomically; a category is not computed again (resume after interruption) when the store
of the folder (``out/.store``, :mod:`patchcore_lib.utils.store`) holds its record under the same key (this code,
the configuration with a weights file by its content, the evaluation options, layout, the data's content) and
its outputs (``scores.csv``, ``metrics.json``, ``model.pt`` when a model is asked for) are those it recorded.
A recomputed category without ``save_model`` loses an older ``model.pt``: no model of another configuration
stays beside new metrics. A lock file refuses a second study writing into the same directory at
the same time. Outputs never go inside the data root.
"""
from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from patchcore_lib.data import LAYOUTS, dataset_fingerprint, open_split, resolve_layout
from patchcore_lib.detectors import DETECTORS, Detector, Predictions
from patchcore_lib.evaluation.provenance import config_hash, faiss_info, git_commit, package_versions
from patchcore_lib.version import __version__
from patchcore_lib.errors import OutputError
from patchcore_lib.utils.files import atomic_write_text, check_writable_dir, output_lock
from patchcore_lib.utils.store import Store, content_key, file_parameter
from patchcore_lib.utils.source_fingerprint import code_fingerprint
from patchcore_lib.evaluation.metrics import PixelMetrics, image_auroc, per_defect_image_auroc, pixel_metrics
from patchcore_lib.evaluation.options import EvaluationOptions

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["category", "image_auroc", "pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro",
                  "fit_seconds", "predict_seconds", "predict_seconds_per_image", "memory_bank_size", "num_train",
                  "num_test", "anomalous_pixels", "run_id", "method", "mask_convention", "layout", "note"]
# ``memory_bank_size`` is the number of stored patches (PatchCore) or of per-position Gaussians (PaDiM/OrthoAD).
# ``anomalous_pixels``: ground-truth anomalous pixels of the test split at the evaluated size (mask convention).
# ``pixel_auroc``/``pro``: over all test images; ``anomaly_*``: over the anomalous test images only (the
# official code's ``anomaly_pixel_auroc`` / ``anomaly_pro``).
_TEXT_COLUMNS = ("category", "run_id", "method", "mask_convention")

#: the store kind of an evaluated category (``<out>/.store/evaluation/``)
EVALUATION = "evaluation"


#: the note of a result whose pixel metrics could not be computed
NO_MASKS_NOTE = "pixel metrics unavailable: not every defect image has a ground-truth mask (reported as NaN)"


@functools.cache
def evaluation_code() -> str:
    """Fingerprint of the library code an evaluation runs (the import closure of this module): a saved
    category is reused only while that code is unchanged, not merely the version number."""
    return code_fingerprint((__name__,))


def prediction_metrics(predictions: Predictions, has_masks: bool = True,
                       pixel: PixelMetrics | None = None) -> dict[str, Any]:
    """Image AUROC, pixel AUROC and PRO (all images, and anomalous images only), per-defect image AUROC
    (``has_masks`` False: the pixel metrics are NaN, not computed from empty masks). The pixel metrics come from
    one sort of the maps (:func:`~patchcore_lib.evaluation.metrics.pixel_metrics`), or from ``pixel`` when the
    caller already has them for these predictions."""
    nan = float("nan")
    image = image_auroc(predictions.labels, predictions.scores)
    if has_masks and pixel is None:
        pixel = pixel_metrics(predictions.masks, predictions.maps, predictions.labels)
    return {
        "image_auroc": image,
        **{key: getattr(pixel, key) if has_masks and pixel is not None else nan
           for key in ("pixel_auroc", "pro", "anomaly_pixel_auroc", "anomaly_pro")},
        "per_defect_image_auroc": per_defect_image_auroc(predictions.defect_types, predictions.labels,
                                                         predictions.scores),
    }


def _write_scores(path: Path, predictions: Predictions) -> None:
    """Per-image scores; image paths relative to the category folder (``test/<defect>/<file>``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "defect_type", "label", "score"])
    paths = ["/".join(Path(p).parts[-3:]) for p in predictions.paths]
    for row in zip(paths, predictions.defect_types, predictions.labels.tolist(),
                   predictions.scores.tolist()):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def evaluate_category(detector: Detector, data_root: str | Path, category: str, out_dir: str | Path | None = None,
                      save_model: bool = False, show_progress: bool = True, run_id: str = "",
                      layout: str = "auto", options: EvaluationOptions | None = None,
                      fingerprint: str | None = None) -> tuple[dict[str, Any], Predictions]:
    """Fit ``detector`` on the category's nominal training images (``options.train_shots`` of them when set),
    predict the test split (masks by ``options.mask_convention``), compute metrics; write ``scores.csv``,
    ``metrics.json`` (and ``model.pt``) under ``out_dir/category`` when given, recorded under the data's content
    ``fingerprint`` (taken here, before scoring, when not given). ``layout``: a registered dataset layout, or
    "auto" (detected). Without masks (folder layout) the pixel metrics are NaN and the row's ``note`` says why."""
    config = detector.config
    options = options or EvaluationOptions()
    layout = resolve_layout(data_root, category, layout)
    train = open_split(data_root, category, "train", config.resize, config.imagesize, layout=layout,
                       shots=options.train_shots, shots_seed=options.shots_seed, crop=config.crop)
    test = open_split(data_root, category, "test", config.resize, config.imagesize, layout=layout,
                      mask_convention=options.mask_convention, crop=config.crop)
    method = method_name(detector)
    log.debug("%s: %d training and %d test images (layout %s) under %s", category, len(train), len(test), layout,
              data_root)
    if out_dir is not None and fingerprint is None:  # before scoring: data edited meanwhile is not "done"
        fingerprint = dataset_fingerprint(data_root, category)
    detector.fit(train, show_progress=show_progress)
    predictions = detector.predict_dataset(test, show_progress=show_progress)
    has_masks = bool(getattr(test, "has_masks", True))
    metrics = prediction_metrics(predictions, has_masks)
    row = {
        "category": category,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pro": metrics["pro"],
        "anomaly_pixel_auroc": metrics["anomaly_pixel_auroc"],
        "anomaly_pro": metrics["anomaly_pro"],
        "fit_seconds": detector.timings["fit_seconds"],
        "predict_seconds": predictions.seconds,
        "predict_seconds_per_image": predictions.seconds / len(test),
        "memory_bank_size": detector.memory_bank_size,
        "num_train": len(train),
        "num_test": len(test),
        "anomalous_pixels": int(np.asarray(predictions.masks).astype(bool).sum()) if has_masks else "",
        "run_id": run_id,
        "method": method,
        "mask_convention": options.mask_convention,
        "layout": layout,
        "note": "" if has_masks else NO_MASKS_NOTE,
    }
    if out_dir is not None:
        folder = Path(out_dir) / category
        folder.mkdir(parents=True, exist_ok=True)
        _write_scores(folder / "scores.csv", predictions)
        if save_model:
            detector.save(folder / "model.pt")
        else:
            (folder / "model.pt").unlink(missing_ok=True)  # an older run's model: not of these metrics
        record = {"row": row, "per_defect_image_auroc": metrics["per_defect_image_auroc"],
                  "timings": detector.timings, "config": config.to_dict(), "evaluation": options.to_dict(),
                  "dataset_fingerprint": fingerprint, "library_version": __version__,
                  "code_fingerprint": evaluation_code()}
        atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2, default=float))
        outputs = [folder / name for name in ("scores.csv", "metrics.json", "model.pt") if (folder / name).is_file()]
        if dataset_fingerprint(data_root, category) != fingerprint:  # edited while it ran: not recorded as done
            warnings.warn(f"the data of {category} under {data_root} changed while it was evaluated; its results "
                          "are written but not recorded as done (a re-run evaluates it again)", stacklevel=2)
            return row, predictions
        Store.beside(out_dir).save(EVALUATION, evaluation_key(config, options, category, layout, fingerprint), row,
                                   outputs, slot=category)
    return row, predictions


def method_name(detector: Detector) -> str:
    """The registry name of a detector instance."""
    for name, cls in DETECTORS.items():
        if type(detector) is cls:
            return name
    return type(detector).__name__.lower()


def results_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows plus a ``mean`` row. A column's mean is taken only when every category has a value (a mean over
    the categories where a metric happens to be defined would compare unlike sets); otherwise it is NaN and
    a warning names the categories without a value (e.g. pixel AUROC of a category without defect masks)."""
    rows = list(rows)
    if not rows:
        return rows
    mean: dict[str, Any] = {"category": "mean", "run_id": rows[0].get("run_id", "")}
    for column in RESULT_COLUMNS:
        if column in ("category", "run_id"):
            continue
        if column in _TEXT_COLUMNS:
            mean[column] = rows[0].get(column, "patchcore" if column == "method" else "")
            continue
        if column in ("layout", "note"):
            mean[column] = "; ".join(dict.fromkeys(str(r.get(column) or "") for r in rows if r.get(column)))
            continue
        if all(r.get(column) in (None, "") for r in rows):
            mean[column] = float("nan")
            continue
        values = [float("nan") if r.get(column) in (None, "") else float(r[column]) for r in rows]
        undefined = [str(r.get("category")) for r, v in zip(rows, values) if not np.isfinite(v)]
        if undefined:
            warnings.warn(f"mean row: {column} is undefined for {', '.join(undefined)}; its mean is NaN "
                          "(not a mean over the other categories)", stacklevel=2)
        mean[column] = float("nan") if undefined else float(np.mean(values))
    return rows + [mean]


def write_results_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in results_table(rows):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def evaluation_key(config: Any, options: EvaluationOptions, category: str, layout: str, fingerprint: str) -> str:
    """The store key of one evaluated category: this code, the detector's configuration (a weights file by its
    content), the evaluation options, the category and its layout, and the content of its data."""
    settings = config.to_dict()
    if "weights" in settings:
        settings["weights"] = file_parameter(settings["weights"])
    return content_key(EVALUATION, code=evaluation_code(), data=fingerprint,
                       params={"config": settings, "evaluation": options.to_dict(), "category": category,
                               "layout": layout})


def check_out_outside_data(out_dir: str | Path, data_root: str | Path, categories: Sequence[str]) -> None:
    """Refuse (:class:`OutputError`) an output folder inside the data root, or whose folder for a category is, or
    contains, the data root or that category's data: its outputs would be written into, and its clean-up would
    touch, the dataset."""
    root = Path(data_root).resolve()
    if Path(out_dir).resolve().is_relative_to(root):
        raise OutputError(f"output directory {out_dir} is inside the data root {data_root}; "
                          "choose an --out outside the dataset")
    for category in categories:
        if Path(category).name != category or category in (".", ".."):
            continue  # not a folder name: refused as such when the data is opened
        target = (Path(out_dir) / category).resolve()
        for data in (root, (root / category).resolve()):
            if target == data or target in data.parents:
                raise OutputError(f"output directory {out_dir}: its folder for category {category!r} ({target}) "
                                  f"is or contains the data under {data_root}; choose an --out outside the data")


def evaluate(detector: Detector, data_root: str | Path, categories: Sequence[str], out_dir: str | Path,
             save_model: bool = False, show_progress: bool = True, resume: bool = True,
             layout: str = "auto", options: EvaluationOptions | None = None) -> list[dict[str, Any]]:
    """Fit and evaluate ``detector`` (re-fitted per category) on each category into ``out_dir``; returns the
    rows (without the mean row). ``run.json``, the resume check and the run id use its full configuration
    and the evaluation ``options`` (mask convention, few-shot draw)."""
    config = detector.config
    options = options or EvaluationOptions()
    categories = list(dict.fromkeys(categories))  # a category named twice is evaluated (and averaged) once
    layouts = {category: resolve_layout(data_root, category, layout) for category in categories}
    for category in categories:
        check = getattr(LAYOUTS.get(layouts[category]), "check", None)
        if check is not None:
            check(data_root, category)
    check_out_outside_data(out_dir, data_root, categories)
    created = not Path(out_dir).exists()
    out = check_writable_dir(out_dir)
    fingerprints = {c: dataset_fingerprint(data_root, c) for c in categories}
    store = Store.beside(out)
    # microsecond resolution: two runs started within one second get different ids
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S%f") + "-" + config_hash(config)
    if options != EvaluationOptions():
        run_id += "-" + config_hash(options)
    rows: list[dict[str, Any]] = []
    run_info = {
        "run_id": run_id,
        "config": config.to_dict(),
        "evaluation": options.to_dict(),
        "data_root": str(Path(data_root).resolve()),
        "categories": list(categories),
        "dataset_fingerprints": fingerprints,
        "versions": package_versions(),
        **faiss_info(),
        "layouts": layouts,
        "git_commit": git_commit(),
        "command": sys.argv,
        "reused": {},  # category -> run id of the earlier run whose finished result was kept
    }
    try:
        with output_lock(out):
            for category in categories:
                key = evaluation_key(config, options, category, layouts[category], fingerprints[category])
                done = (store.lookup(EVALUATION, key, require=[out / category / "model.pt"] if save_model else [])
                        if resume else None)
                if done is not None:
                    log.info("%s: already done with the same settings, reusing %s", category,
                             out / category / "metrics.json")
                    run_info["reused"][category] = done.get("run_id", "")
                    rows.append(done)
                else:
                    row, _ = evaluate_category(detector, data_root, category, out, save_model, show_progress, run_id,
                                               layout=layouts[category], options=options,
                                               fingerprint=fingerprints[category])
                    rows.append(row)
                # run record and table only once a category is finished: a failed run leaves no result files
                atomic_write_text(out / "run.json", json.dumps(run_info, indent=2))
                write_results_csv(out / "results.csv", rows)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the folder this run created holds nothing: do not leave it behind
        raise
    return rows
