"""Evaluate PatchCore on categories of an MVTec-AD-layout dataset and write the result files.

Output directory layout::

    out/run.json                  configuration, package versions, git commit, dataset fingerprints, run id
    out/results.csv               one row per category plus a ``mean`` row (AUROC/PRO as fractions 0..1)
    out/<category>/metrics.json   the category's row, per-defect image AUROC, timings
    out/<category>/scores.csv     per-image scores (path, defect_type, label, score)
    out/<category>/model.pt       the fitted model (with ``save_model``)

Every file is written atomically; a category whose ``metrics.json`` matches the current configuration and
dataset fingerprint is not computed again (resume after interruption). A lock file refuses a second study
writing into the same directory at the same time.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from patchcore_lib.data import check_category, dataset_fingerprint, open_split
from patchcore_lib.detectors import DETECTORS, Detector, Predictions
from patchcore_lib.evaluation.provenance import config_hash, git_commit, package_versions
from patchcore_lib.utils.files import atomic_write_text, check_writable_dir, output_lock
from patchcore_lib.evaluation.metrics import image_auroc, per_defect_image_auroc, pixel_auroc, pro_score

RESULT_COLUMNS = ["category", "image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds",
                  "predict_seconds_per_image", "memory_bank_size", "num_train", "num_test", "run_id", "method"]
# ``memory_bank_size`` is the number of stored patches (PatchCore) or of per-position Gaussians (PaDiM/OrthoAD).


def prediction_metrics(predictions: Predictions) -> dict[str, Any]:
    """Image AUROC, pixel AUROC, PRO and per-defect image AUROC of a set of predictions."""
    return {
        "image_auroc": image_auroc(predictions.labels, predictions.scores),
        "pixel_auroc": pixel_auroc(predictions.masks, predictions.maps),
        "pro": pro_score(predictions.masks, predictions.maps),
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
                      layout: str = "mvtec") -> tuple[dict[str, Any], Predictions]:
    """Fit ``detector`` on the category's nominal training images, predict the test split, compute metrics;
    write ``scores.csv``, ``metrics.json`` (and ``model.pt``) under ``out_dir/category`` when given."""
    config = detector.config
    train = open_split(data_root, category, "train", config.resize, config.imagesize, layout=layout,
                       crop=getattr(config, "crop", "center"))
    test = open_split(data_root, category, "test", config.resize, config.imagesize, layout=layout,
                       crop=getattr(config, "crop", "center"))
    method = method_name(detector)
    detector.fit(train, show_progress=show_progress)
    predictions = detector.predict_dataset(test, show_progress=show_progress)
    metrics = prediction_metrics(predictions)
    row = {
        "category": category,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pro": metrics["pro"],
        "fit_seconds": detector.timings["fit_seconds"],
        "predict_seconds": predictions.seconds,
        "predict_seconds_per_image": predictions.seconds / len(test),
        "memory_bank_size": detector.memory_bank_size,
        "num_train": len(train),
        "num_test": len(test),
        "run_id": run_id,
        "method": method,
    }
    if out_dir is not None:
        folder = Path(out_dir) / category
        folder.mkdir(parents=True, exist_ok=True)
        _write_scores(folder / "scores.csv", predictions)
        if save_model:
            detector.save(folder / "model.pt")
        record = {"row": row, "per_defect_image_auroc": metrics["per_defect_image_auroc"],
                  "timings": detector.timings, "config": config.to_dict(),
                  "dataset_fingerprint": dataset_fingerprint(data_root, category)}
        atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2, default=float))
    return row, predictions


def method_name(detector: Detector) -> str:
    """The registry name of a detector instance."""
    for name, cls in DETECTORS.items():
        if type(detector) is cls:
            return name
    return type(detector).__name__.lower()


def results_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows plus a ``mean`` row (mean of every numeric column)."""
    rows = list(rows)
    if not rows:
        return rows
    mean: dict[str, Any] = {"category": "mean", "run_id": rows[0].get("run_id", "")}
    for column in RESULT_COLUMNS:
        if column in ("category", "run_id"):
            continue
        if column == "method":
            mean[column] = rows[0].get("method", "patchcore")
            continue
        values = [float(r[column]) for r in rows if r.get(column) is not None]
        mean[column] = float(np.nanmean(values)) if values else float("nan")
    return rows + [mean]


def write_results_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in results_table(rows):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _finished_row(folder: Path, config: Any, fingerprint: str) -> dict[str, Any] | None:
    """The saved row of a finished category if it was computed with the same config and data."""
    try:
        record = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("config") != config.to_dict() or record.get("dataset_fingerprint") != fingerprint:
        return None
    if not (folder / "scores.csv").is_file():
        return None
    return record["row"]


def evaluate(detector: Detector, data_root: str | Path, categories: Sequence[str], out_dir: str | Path,
             save_model: bool = False, show_progress: bool = True, resume: bool = True,
             layout: str = "mvtec") -> list[dict[str, Any]]:
    """Fit and evaluate ``detector`` (re-fitted per category) on each category into ``out_dir``; returns the
    rows (without the mean row). ``run.json``, the resume check and the run id use its full configuration."""
    config = detector.config
    for category in categories:
        check_category(data_root, category)
    created = not Path(out_dir).exists()
    out = check_writable_dir(out_dir)
    fingerprints = {c: dataset_fingerprint(data_root, c) for c in categories}
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + config_hash(config)
    rows: list[dict[str, Any]] = []
    run_info = {
        "run_id": run_id,
        "config": config.to_dict(),
        "data_root": str(Path(data_root).resolve()),
        "categories": list(categories),
        "dataset_fingerprints": fingerprints,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": sys.argv,
        "reused": {},  # category -> run id of the earlier run whose finished result was kept
    }
    try:
        with output_lock(out):
            for category in categories:
                done = _finished_row(out / category, config, fingerprints[category]) if resume else None
                if done is not None:
                    print(f"{category}: already done with the same settings, reusing "
                          f"{out / category / 'metrics.json'}", file=sys.stderr)
                    run_info["reused"][category] = done.get("run_id", "")
                    rows.append(done)
                else:
                    row, _ = evaluate_category(detector, data_root, category, out, save_model, show_progress, run_id,
                                               layout=layout)
                    rows.append(row)
                # run record and table only once a category is finished: a failed run leaves no result files
                atomic_write_text(out / "run.json", json.dumps(run_info, indent=2))
                write_results_csv(out / "results.csv", rows)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the folder this run created holds nothing: do not leave it behind
        raise
    return rows
