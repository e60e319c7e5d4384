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
import dataclasses
import io
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import MVTecDataset, check_category, dataset_fingerprint
from .io_utils import atomic_write_text, check_writable_dir, output_lock
from .metrics import image_auroc, per_defect_image_auroc, pixel_auroc, pro_score
from .model import PatchCore, PatchCoreConfig, Predictions

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


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("patchcore_lib", "torch", "torchvision", "timm", "faiss-cpu", "faiss-gpu", "numpy", "scipy",
                 "scikit-learn", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "patchcore_lib" not in versions:
        from . import __version__

        versions["patchcore_lib"] = __version__
    return versions


def git_commit() -> str | None:
    """The project's git commit (with ``-dirty`` when the tree has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_hash(config: PatchCoreConfig) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _write_scores(path: Path, predictions: Predictions) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "defect_type", "label", "score"])
    for row in zip(predictions.paths, predictions.defect_types, predictions.labels.tolist(),
                   predictions.scores.tolist()):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def evaluate_category(data_root: str | Path, category: str, config: PatchCoreConfig,
                      out_dir: str | Path | None = None, save_model: bool = False, show_progress: bool = True,
                      run_id: str = "", model: PatchCore | None = None, method: str = "patchcore",
                      method_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], Predictions]:
    """Fit on ``train/good``, predict the test split, compute metrics; write files when ``out_dir`` is given.

    ``method`` (patchcore, padim, orthoad) and ``method_options`` (e.g. ``{"k": 300}``) choose the
    detector through :func:`patchcore_lib.detectors.make_detector`; ``model`` overrides both.
    """
    from .detectors import detector_size, make_detector

    train = MVTecDataset(data_root, category, "train", config.resize, config.imagesize)
    test = MVTecDataset(data_root, category, "test", config.resize, config.imagesize)
    if model is None:
        model = PatchCore(config) if method == "patchcore" and not method_options else \
            make_detector(method, config, **(method_options or {}))
    method = getattr(model.config, "method", "patchcore")
    model.fit(train, show_progress=show_progress)
    predictions = model.predict_dataset(test, show_progress=show_progress)
    metrics = prediction_metrics(predictions)
    row = {
        "category": category,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pro": metrics["pro"],
        "fit_seconds": model.timings["fit_seconds"],
        "predict_seconds": predictions.seconds,
        "predict_seconds_per_image": predictions.seconds / len(test),
        "memory_bank_size": detector_size(model),
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
            model.save(folder / "model.pt")
        record = {"row": row, "per_defect_image_auroc": metrics["per_defect_image_auroc"],
                  "timings": model.timings, "config": (config if method == "patchcore" else model.config).to_dict(),
                  "dataset_fingerprint": dataset_fingerprint(data_root, category)}
        atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2, default=float))
    return row, predictions


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


def _finished_row(folder: Path, config: PatchCoreConfig, fingerprint: str) -> dict[str, Any] | None:
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


def evaluate(data_root: str | Path, categories: Sequence[str], config: PatchCoreConfig, out_dir: str | Path,
             save_model: bool = False, show_progress: bool = True, resume: bool = True,
             method: str = "patchcore", method_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate several categories into ``out_dir``; returns the rows (without the mean row).

    ``method``/``method_options``: see :func:`evaluate_category`. For PaDiM/OrthoAD, ``run.json``,
    the resume check and the run id use the method's full configuration.
    """
    if method != "patchcore" or method_options:
        from .detectors import method_config

        config = method_config(method, config, **(method_options or {}))
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
                    row, _ = evaluate_category(data_root, category, config, out, save_model, show_progress, run_id,
                                               method=method, method_options=None)
                    rows.append(row)
                # run record and table only once a category is finished: a failed run leaves no result files
                atomic_write_text(out / "run.json", json.dumps(run_info, indent=2))
                write_results_csv(out / "results.csv", rows)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the folder this run created holds nothing: do not leave it behind
        raise
    return rows


def config_from_options(**options: Any) -> PatchCoreConfig:
    """Build a config from keyword options, ignoring ``None`` (= default)."""
    known = {f.name for f in dataclasses.fields(PatchCoreConfig)}
    return PatchCoreConfig(**{k: v for k, v in options.items() if k in known and v is not None})
