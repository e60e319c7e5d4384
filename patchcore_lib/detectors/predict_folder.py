"""Predict new images into a folder: ``predictions.csv``, heat-map overlays and (optionally) raw maps.

Output folder::

    out/predictions.csv     path, score, threshold, is_anomalous, map (one row per image)
    out/predictions.json    the model's file hash and the threshold the rows were written with
    out/.store/             the record that lets a re-run reuse the rows (:mod:`patchcore_lib.utils.store`)
    out/maps/<name>.png     the anomaly map as a heat-map overlay on the (resized, centre-cropped) image
    out/maps/<name>.npy     the float anomaly map [S, S] (with ``save_raw_maps``)

``<name>`` is the image's file stem; stems shared by several inputs get ``_<8 hex digits of the path>``.
The CSV is rewritten atomically after every ``flush_every`` images (rounded up to whole batches), so an interrupted run keeps the rows it
wrote; a re-run whose key (the model file's content, the threshold, the outputs asked for and this code) has a
record in the folder's store skips them. Rows of another model or threshold are never
reused (the run starts over and says so).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image
from tqdm.auto import tqdm

from patchcore_lib.data import ImageList
from patchcore_lib.utils.files import atomic_write_bytes, atomic_write_text, check_writable_dir, output_lock
from patchcore_lib.utils.source_fingerprint import code_fingerprint
from patchcore_lib.utils.store import Store, content_key

COLUMNS = ["path", "score", "threshold", "is_anomalous", "map"]
#: the store kind of a predictions folder
PREDICTIONS = "predictions"


@functools.cache
def prediction_code() -> str:
    """Fingerprint of the code that scores images and writes the rows (every detector and this module)."""
    return code_fingerprint(("patchcore_lib.detectors", __name__))


def file_hash(path: str | Path) -> str:
    """16 hex digits of the sha256 of a file's bytes (identifies a model file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def map_names(paths: Sequence[Path]) -> list[str]:
    """A unique, deterministic file name (without extension) per input path."""
    stems = [p.stem for p in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else f"{stem}_{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
            for stem, p in zip(stems, paths)]


def overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB [S, S, 3]: ``amap`` [S, S] coloured with 'jet' on [vmin, vmax], blended over ``image``."""
    scaled = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    heat = colormaps["jet"](scaled)[..., :3] * 255.0
    return (alpha * heat + (1 - alpha) * image.astype(np.float64) + 0.5).astype(np.uint8)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error):
        return []
    return [r for r in rows if r.get("path") and r.get("score")]


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def predict_to_folder(model: Any, inputs: Sequence[Path], out: str | Path, threshold: float | None,
                      model_id: str, save_maps: bool = True, save_raw_maps: bool = False, flush_every: int = 64,
                      resume: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Score ``inputs`` (image files) with ``model`` (anything with ``predict_images``) into ``out``.

    ``threshold``: images scoring strictly above it are anomalous (None: no decision, empty columns);
    ``model_id``: identifies the model (its file hash), so rows of another model are never reused.
    Returns counts and the scoring throughput (images/s, new images only, maps included).
    """
    out = check_writable_dir(out)
    batch = max(1, int(getattr(model.config, "batch_size", 1)))
    flush_every = -(-max(1, flush_every) // batch) * batch  # whole batches: a resumed run batches images alike
    inputs = [Path(p) for p in inputs]
    names = dict(zip((str(p) for p in inputs), map_names(inputs)))
    meta = {"model": model_id, "threshold": threshold}
    key = content_key(PREDICTIONS, code=prediction_code(), data=model_id,
                      params={"threshold": threshold, "maps": save_maps, "raw_maps": save_raw_maps})
    csv_path, meta_path = out / "predictions.csv", out / "predictions.json"
    store = Store.beside(out)
    with output_lock(out):
        rows: list[dict[str, Any]] = []
        if resume and csv_path.is_file():
            if store.lookup(PREDICTIONS, key) is not None:
                rows = _read_rows(csv_path)
            else:
                print(f"{csv_path} was written with another model, threshold or code: scoring every image again",
                      file=sys.stderr)
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
        store.save(PREDICTIONS, key, meta, slot="predictions")
        done = {r["path"] for r in rows}
        todo = [p for p in inputs if str(p) not in done]
        if save_maps or save_raw_maps:
            (out / "maps").mkdir(exist_ok=True)
        start = time.perf_counter()
        progress = tqdm(total=len(todo), desc="Predicting", disable=not show_progress, leave=False)
        for begin in range(0, len(todo), flush_every):
            chunk = todo[begin:begin + flush_every]
            predictions = model.predict_images(chunk)
            display = ImageList(chunk, model.config.resize, model.config.imagesize,
                                crop=model.config.crop)
            for index, (path, score) in enumerate(zip(chunk, predictions.scores.tolist())):
                name = names[str(path)]
                amap = predictions.maps[index]
                if save_maps:
                    image = display.preprocess.denormalise(display[index]["image"])
                    low, high = (0.0, 2.0 * threshold) if threshold and threshold > 0 else (float(amap.min()), float(amap.max()))
                    atomic_write_bytes(out / "maps" / f"{name}.png", _png_bytes(overlay(image, amap, low, high)))
                if save_raw_maps:
                    buffer = io.BytesIO()
                    np.save(buffer, amap.astype(np.float32))
                    atomic_write_bytes(out / "maps" / f"{name}.npy", buffer.getvalue())
                rows.append({"path": str(path), "score": repr(float(score)),
                             "threshold": "" if threshold is None else repr(float(threshold)),
                             "is_anomalous": "" if threshold is None else int(score > threshold),
                             "map": f"maps/{name}.png" if save_maps else ""})
            _write_rows(csv_path, rows)
            progress.update(len(chunk))
        progress.close()
        seconds = time.perf_counter() - start
        if not csv_path.is_file():
            _write_rows(csv_path, rows)
    flagged = sum(1 for r in rows if str(r.get("is_anomalous")) == "1")
    return {"images": len(rows), "scored": len(todo), "skipped": len(inputs) - len(todo), "anomalous": flagged,
            "seconds": seconds, "images_per_second": len(todo) / seconds if todo and seconds > 0 else float("nan"),
            "csv": str(csv_path)}
