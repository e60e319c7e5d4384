"""Predict new images into a folder: ``predictions.csv``, heat-map overlays and (optionally) raw maps.

Output folder::

    out/predictions.csv     path, score, threshold, is_anomalous, map, sha256, error (one row per input image)
    out/predictions.json    the model's file hash and the threshold the rows were written with
    out/.store/             the record that lets a re-run reuse the rows (:mod:`patchcore_lib.utils.store`)
    out/maps/<name>.png     the anomaly map as a heat-map overlay on the image at its own size, outside the crop
                            dimmed, with a colour bar and the threshold marked (:mod:`.overlays`)
    out/maps/<name>.npy     the float anomaly map [S, S] (with ``save_raw_maps``)

``<name>`` is ``<file stem>_<first 8 hex digits of the image's sha256>``: two images never share a map file, also
across runs into one folder. The CSV is rewritten atomically after every ``flush_every`` images (rounded up to
whole batches), so an interrupted run keeps the rows it wrote. A re-run whose key (the model file's content, the
threshold, the outputs asked for and this code) has a record in the folder's store reuses a row only for an input
of this run whose content (sha256, taken before scoring) is unchanged; rows of images no longer given are dropped.
An image that cannot be read or scored gets a row with an empty score and the reason in ``error`` (a warning
too); the run goes on, and a re-run tries it again. An image whose content changes while it is scored gets no
row (a re-run scores it). Rows of another model or
threshold are never reused (the run starts over and says so).
"""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import time
import warnings
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from patchcore_lib.data.image_files import load_rgb
from patchcore_lib.data.model_input import model_input
from patchcore_lib.detectors.overlays import render_overlay
from patchcore_lib.errors import ConfigError, PatchCoreError
from patchcore_lib.utils.fingerprint import file_sha256
from patchcore_lib.utils.files import atomic_write_bytes, atomic_write_text, check_writable_dir, output_lock
from patchcore_lib.utils.source_fingerprint import code_fingerprint
from patchcore_lib.utils.store import Store, content_key

log = logging.getLogger(__name__)

COLUMNS = ["path", "score", "threshold", "is_anomalous", "map", "sha256", "error"]
#: the store kind of a predictions folder
PREDICTIONS = "predictions"


@functools.cache
def prediction_code() -> str:
    """Fingerprint of the code that scores images and writes the rows (every detector and this module)."""
    return code_fingerprint(("patchcore_lib.detectors", __name__))


def file_hash(path: str | Path) -> str:
    """16 hex digits of the sha256 of a file's bytes (identifies a model file or an input image)."""
    return file_sha256(path)[:16]


def _hash_or_none(path: Path) -> str | None:
    try:
        return file_hash(path)
    except OSError:
        return None


def map_name(path: Path, content: str) -> str:
    """The map file name (without extension) of an image: its stem and 8 hex digits of its content hash."""
    return f"{path.stem}_{content[:8]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _score_chunk(model: Any, chunk: list[Path]) -> tuple[list[tuple[Path, float, np.ndarray]], dict[str, str]]:
    """Score ``chunk`` in one batch: ``([(path, score, map [S, S])], {path: why it failed})``. When the batch
    fails, the images that cannot be read are found one by one and the others are scored together (batched as
    they would be without the bad ones); an unreadable or unsupported image fails alone, never its batch."""
    try:
        predictions = model.predict_images(chunk)
    except (PatchCoreError, OSError, ValueError) as exc:
        if len(chunk) == 1:
            return [], {str(chunk[0]): _first_line(exc)}
        config, failed, readable = model.config, {}, []
        for path in chunk:
            try:
                model_input(load_rgb(path), config.resize, config.imagesize, config.crop, str(path))
            except (PatchCoreError, OSError, ValueError) as bad:
                failed[str(path)] = _first_line(bad)
            else:
                readable.append(path)
        if not failed:  # every image reads: the batch failed for another reason, so each is tried alone
            scored: list[tuple[Path, float, np.ndarray]] = []
            for path in chunk:
                one, why = _score_chunk(model, [path])
                scored += one
                failed.update(why)
            return scored, failed
        scored, more = _score_chunk(model, readable) if readable else ([], {})
        return scored, {**failed, **more}
    return [(p, float(s), predictions.maps[i]) for i, (p, s) in enumerate(zip(chunk, predictions.scores.tolist()))], {}


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()  # fast (a third of an overlay's time): zlib level 1, run-length (also the smaller file)
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
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
                      resume: bool = True, show_progress: bool = True, keep_other_rows: bool = False
                      ) -> dict[str, Any]:
    """Score ``inputs`` (image files) with ``model`` (anything with ``predict_images``) into ``out``.

    ``threshold``: images scoring strictly above it are anomalous (None: no decision, empty columns);
    ``model_id``: identifies the model (its file hash), so rows of another model are never reused;
    ``keep_other_rows``: keep the rows of images not in ``inputs`` (a watch adds new images to the rows).
    Returns counts and the scoring throughput (images/s, new images only, maps included).
    """
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold}")
    out = check_writable_dir(out)
    batch = max(1, int(getattr(model.config, "batch_size", 1)))
    flush_every = -(-max(1, flush_every) // batch) * batch  # whole batches: a resumed run batches images alike
    inputs = list(dict.fromkeys(Path(p) for p in inputs))
    meta = {"model": model_id, "threshold": threshold}
    key = content_key(PREDICTIONS, code=prediction_code(), data=model_id,
                      params={"threshold": threshold, "maps": save_maps, "raw_maps": save_raw_maps})
    csv_path, meta_path = out / "predictions.csv", out / "predictions.json"
    store = Store.beside(out)
    with output_lock(out):
        content: dict[str, str] = {}  # taken before any scoring: rows are keyed by these
        unreadable: dict[str, str] = {}
        for path in inputs:
            try:
                content[str(path)] = file_hash(path)
            except OSError as exc:
                unreadable[str(path)] = f"cannot be read ({exc.strerror or exc})"
        rows: list[dict[str, Any]] = []
        if resume and csv_path.is_file():
            if store.lookup(PREDICTIONS, key) is not None:
                given = {str(p) for p in inputs}
                rows = [r for r in _read_rows(csv_path) if (r["path"] in content and content[r["path"]] == r.get("sha256"))
                        or (keep_other_rows and r["path"] not in given)]
            else:
                log.info("%s was written with another model, threshold or code: scoring every image again", csv_path)
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
        store.save(PREDICTIONS, key, meta, slot="predictions")
        done = {r["path"] for r in rows}
        todo = [p for p in inputs if str(p) not in done and str(p) not in unreadable]
        changed: list[str] = []
        failed: dict[str, str] = dict(unreadable)
        shown = "" if threshold is None else repr(float(threshold))
        rows += [{"path": path, "score": "", "map": "", "is_anomalous": "", "sha256": "", "error": why,
                  "threshold": shown} for path, why in unreadable.items()]
        if save_maps or save_raw_maps:
            (out / "maps").mkdir(exist_ok=True)
        start = time.perf_counter()
        progress = tqdm(total=len(todo), desc="Predicting", disable=not show_progress, leave=False)
        _write_rows(csv_path, rows)  # rows of inputs no longer given (or changed since) are dropped now
        shown = "" if threshold is None else repr(float(threshold))

        def finish(scored: list[tuple[Path, float, np.ndarray]]) -> list[dict[str, Any]]:
            """Maps and rows of a scored chunk (in the writer thread, while the next chunk is scored)."""
            done_rows = []
            for path, score, amap in scored:
                sha = content[str(path)]
                if _hash_or_none(path) != sha:  # replaced while it was scored: its score may be of either version
                    changed.append(str(path))
                    continue
                name = map_name(path, sha)
                if save_maps:
                    low, high = (0.0, 2.0 * threshold) if threshold and threshold > 0 \
                        else (float(amap.min()), float(amap.max()))
                    picture = render_overlay(load_rgb(path), amap, model.config.resize, model.config.imagesize,
                                             model.config.crop, low, high, threshold)
                    atomic_write_bytes(out / "maps" / f"{name}.png", _png_bytes(picture))
                if save_raw_maps:
                    buffer = io.BytesIO()
                    np.save(buffer, amap.astype(np.float32))
                    atomic_write_bytes(out / "maps" / f"{name}.npy", buffer.getvalue())
                done_rows.append({"path": str(path), "score": repr(float(score)), "threshold": shown,
                                  "is_anomalous": "" if threshold is None else int(score > threshold),
                                  "map": f"maps/{name}.png" if save_maps else "", "sha256": sha, "error": ""})
            return done_rows

        # decode + score a batch here while the maps of the batches before are written in one thread (pipelined);
        # rows are added once their maps exist, the CSV rewritten every flush_every images and when interrupted
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(max_workers=1) as writer:
            try:
                for begin in range(0, len(todo), batch):
                    chunk = todo[begin:begin + batch]
                    scored, why = _score_chunk(model, chunk)
                    failed.update(why)
                    rows.extend({"path": str(p), "score": "", "map": "", "is_anomalous": "", "threshold": shown,
                                 "sha256": content[str(p)], "error": why[str(p)]} for p in chunk if str(p) in why)
                    while pending and pending[0].done():
                        rows.extend(pending.popleft().result())
                    pending.append(writer.submit(finish, scored))
                    progress.update(len(chunk))
                    if (begin + len(chunk)) % flush_every == 0:
                        _write_rows(csv_path, rows)
            finally:
                while pending:
                    rows.extend(pending.popleft().result())
                _write_rows(csv_path, rows)
        progress.close()
        seconds = time.perf_counter() - start
    for name in changed:  # the user's files: Python warnings (the command line shows them as one line each)
        warnings.warn(f"{name} changed while it was scored: no row written (run again to score it)", stacklevel=2)
    for name, reason in failed.items():
        warnings.warn(f"{name} not scored: {reason}", stacklevel=2)
    flagged = sum(1 for r in rows if str(r.get("is_anomalous")) == "1")
    return {"images": len(rows) - len(failed), "scored": len(todo) - len(changed) - len(failed),
            "skipped": len(inputs) - len(todo), "changed": changed, "failed": failed, "anomalous": flagged,
            "seconds": seconds, "images_per_second": len(todo) / seconds if todo and seconds > 0 else float("nan"),
            "csv": str(csv_path)}


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def watch_folder(model: Any, find_inputs: Callable[[], list[Path]], out: str | Path, threshold: float | None,
                 model_id: str, poll_seconds: float = 1.0, save_maps: bool = True, save_raw_maps: bool = False,
                 report: Callable[[dict[str, Any]], None] | None = None, max_polls: int | None = None,
                 already: Sequence[Path] = ()) -> None:
    """Keep ``model`` loaded and score every image that ``find_inputs()`` lists and that is new or changed since
    the last poll, into ``out`` (rows appended; the folder's earlier rows kept), until interrupted (Ctrl-C,
    SIGTERM) or after ``max_polls`` polls. A file is scored once its size and modification time stayed the same
    for one poll (so a file still being copied in is not read half-written). ``report`` gets each batch's summary;
    ``already``: files scored before the watch started."""
    seen: dict[Path, tuple[int, int] | None] = {Path(p): _signature(Path(p)) for p in already}
    pending: dict[Path, tuple[int, int] | None] = {}
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        ready = []
        for path in find_inputs():
            signature = _signature(path)
            if signature is None or seen.get(path) == signature:
                continue
            if pending.get(path) == signature:
                ready.append(path)
            else:
                pending[path] = signature
        if ready:
            summary = predict_to_folder(model, ready, out, threshold, model_id, save_maps=save_maps,
                                        save_raw_maps=save_raw_maps, show_progress=False, keep_other_rows=True)
            for path in ready:
                seen[path] = pending.pop(path)
            if report is not None:
                report(summary)
        time.sleep(poll_seconds)
