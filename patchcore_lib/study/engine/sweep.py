"""A sweep: a grid of PatchCore settings x categories, each point evaluated with the library (no notebook).

::

    python -m patchcore_lib.study sweep -f params/sweep_example.yaml [--cluster tcp://HOST:8786]

The YAML file names ``data_root``, ``categories``, fixed ``parameters`` (PatchCoreConfig fields) and a
``grid`` (field -> list of values). Every point (one category, one combination of the grid) is fitted and
evaluated by :func:`patchcore_lib.evaluation.evaluate_category`; each finished point appends one row to
``results.csv`` (rewritten atomically from the records of the folder's store, :mod:`patchcore_lib.utils.store`),
so an interrupted sweep resumes where it stopped: a point whose key (the evaluation code, the category, every
config field but ``device`` with a weights file by its content, the data's content) has a record is skipped.
Points run as Dask tasks (:mod:`.cluster`) or, with ``--cluster none``, one after another here.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from patchcore_lib.data import dataset_fingerprint, ensure_default_dataset
from patchcore_lib.detectors import PatchCoreConfig, make_detector
from patchcore_lib.errors import ConfigError, PatchCoreError
from patchcore_lib.evaluation import evaluate_category
from patchcore_lib.evaluation.runner import evaluation_code
from patchcore_lib.study.engine.cluster import (NONE, Unit, add_cluster_options, cluster_has_gpus, open_client,
                                                resolve_cluster, run_units)
from patchcore_lib.study.engine.presets import read_yaml_mapping
from patchcore_lib.study.engine.tasks import apply_task_threads, worker_identity
from patchcore_lib.study.outputs import default_reports_dir
from patchcore_lib.utils.files import atomic_write_text, output_lock
from patchcore_lib.utils.store import Store, content_key, file_parameter
from patchcore_lib.utils.schema import schema_fields

SWEEP_KEYS = ("name", "description", "data_root", "categories", "parameters", "grid", "results")
METRICS = ("image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds_per_image", "memory_bank_size",
           "num_train", "num_test")
SYNTHETIC_KINDS = {"synthetic_texture": "texture", "synthetic_object": "object"}
#: the store kind of a sweep point (``<results folder>/.store/sweep_point/``)
SWEEP_POINT = "sweep_point"


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file; ConfigError naming the file and the key or value at fault."""
    path = Path(path)
    data = read_yaml_mapping(path, "sweep file", SWEEP_KEYS)
    fields = schema_fields(PatchCoreConfig)
    sweep: dict[str, Any] = {"name": data.get("name") or path.stem, "data_root": data.get("data_root") or "",
             "categories": list(data.get("categories") or []), "parameters": dict(data.get("parameters") or {}),
             "grid": dict(data.get("grid") or {}), "results": data.get("results") or ""}
    for section in ("parameters", "grid"):
        bad = sorted(set(sweep[section]) - set(fields))
        if bad:
            raise ConfigError(f"sweep file {path}: {section} {', '.join(bad)} are no PatchCore settings; "
                              f"known: {', '.join(sorted(fields))}")
    for name, values in sweep["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path}: grid.{name} must be a non-empty list, got {values!r}")
    if not sweep["categories"]:
        raise ConfigError(f"sweep file {path}: 'categories' must list at least one category")
    if not sweep["data_root"]:
        bad = [c for c in sweep["categories"] if c not in SYNTHETIC_KINDS]
        if bad:
            raise ConfigError(f"sweep file {path}: with an empty data_root (the embedded synthetic data) the "
                              f"categories must be among {', '.join(SYNTHETIC_KINDS)}, got {', '.join(bad)}")
    return sweep


@dataclass
class SweepPoint:
    """One point: a category and a full PatchCore configuration (``config`` as ``to_dict()``)."""

    key: str
    category: str
    data_root: str
    grid: dict[str, Any]
    config: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.category} " + " ".join(f"{k}={v}" for k, v in self.grid.items())


def point_key(category: str, data_fingerprint: str, config: dict[str, Any]) -> str:
    """The store key of a point's result: the evaluation code, the category, every setting but the device (a
    weights file by its content) and the content fingerprint of the category's data (never the data root's path)."""
    settings = {k: v for k, v in config.items() if k != "device"}
    if "weights" in settings:
        settings["weights"] = file_parameter(settings["weights"])
    return content_key(SWEEP_POINT, code=evaluation_code(), params={"category": category, "config": settings},
                       data=data_fingerprint)


def plan_points(sweep: dict[str, Any]) -> list[SweepPoint]:
    """Every category x grid combination, each configuration validated here (device checked on workers); the
    embedded synthetic data is generated here, once, before workers read it."""
    names = list(sweep["grid"])
    points = []
    for category in sweep["categories"]:
        fingerprint = dataset_fingerprint(*dataset_of(sweep["data_root"], category))  # once per category
        for values in itertools.product(*(sweep["grid"][n] for n in names)):
            grid = dict(zip(names, values))
            settings = {**sweep["parameters"], **grid}
            device = settings.pop("device", "auto")
            try:
                config = PatchCoreConfig(**settings, device="cpu").to_dict()
            except (TypeError, PatchCoreError) as exc:
                raise ConfigError(f"sweep point {category} {grid}: {exc}") from exc
            config["device"] = device
            points.append(SweepPoint(point_key(category, fingerprint, config), category,
                                     sweep["data_root"], grid, config))
    return points


def dataset_of(data_root: str, category: str) -> tuple[str, str]:
    """(data root, category) to read; an empty root is the embedded synthetic data (generated if missing)."""
    if data_root:
        return data_root, category
    root, name = ensure_default_dataset(kind=SYNTHETIC_KINDS[category])
    return str(root), name


def evaluate_point(point: SweepPoint) -> dict[str, Any]:
    """Fit and evaluate one point (on a worker or here); the results-table row."""
    start = time.perf_counter()
    apply_task_threads()
    data_root, category = dataset_of(point.data_root, point.category)
    detector = make_detector("patchcore", PatchCoreConfig.from_dict(point.config))
    row, _ = evaluate_category(detector, data_root, category, show_progress=False)
    where = worker_identity()
    return {"point": point.key, "category": point.category, **point.grid, **{m: row.get(m) for m in METRICS},
            "seconds": round(time.perf_counter() - start, 3),
            "worker": f"{where['host']}/{where['worker'] or where['pid']}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": json.dumps(point.config, sort_keys=True)}


def results_path(sweep: dict[str, Any], reports_dir: str | Path | None = None) -> Path:
    """``results`` of the sweep file, else ``<reports>/sweeps/<name>/results.csv``."""
    if sweep["results"]:
        return Path(sweep["results"]).expanduser().resolve()
    return Path(reports_dir or default_reports_dir()).expanduser().resolve() / "sweeps" / sweep["name"] / "results.csv"


def read_results(path: str | Path) -> pd.DataFrame:
    """The results table of a sweep (empty when it does not exist yet); e.g. for the ablation notebooks."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["point"])
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep results {path} are not a readable CSV table: {exc}") from exc


def ablation_table(results: pd.DataFrame, category: str | None = None) -> pd.DataFrame:
    """A sweep's rows in the layout of notebook 02's coreset table (``sampler``, ``ratio``, metrics, ``status``),
    so its plots (:func:`patchcore_lib.study.coreset_ablation.plot_coreset_metrics`) can show a sweep; the
    sampler and ratio come from each row's full config when the grid did not vary them."""
    rows = results if category is None else results[results["category"] == category]
    configs = [json.loads(c) for c in rows["config"]]
    table = pd.DataFrame({"sampler": [c["sampler"] for c in configs], "ratio": [c["coreset_ratio"] for c in configs]})
    for name in ("category", "image_auroc", "pixel_auroc", "pro", "memory_bank_size", "seed"):
        if name in rows:
            table[name] = rows[name].to_numpy()
    table["status"] = "ok"
    return table.sort_values(["sampler", "ratio"]).reset_index(drop=True)


def write_results(path: Path, store: Store, points: Sequence[SweepPoint]) -> None:
    """The results table: the stored row of every finished point of the sweep, in grid order, rewritten
    atomically (readers never see half a table)."""
    rows = [row for row in (store.lookup(SWEEP_POINT, p.key) for p in points) if row is not None]
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False) if rows else "point\n")


def run_sweep(sweep: dict[str, Any], *, reports_dir: str | Path | None = None, cluster: str = NONE,
              workers: int | None = None, threads: int | None = None, dashboard: str = ":8787",
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Evaluate every point without a record in the results folder's store; returns the table. Failed points are logged and
    left out of the table (a re-run tries them again); :class:`ConfigError` at the end names them."""
    start = time.perf_counter()
    points = plan_points(sweep)
    path = results_path(sweep, reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    store = Store.beside(path.parent)
    with output_lock(path.parent, "results folder of the sweep"):
        todo = [p for p in points if store.lookup(SWEEP_POINT, p.key) is None]
        log(f"sweep '{sweep['name']}': {len(points)} points ({len(sweep['categories'])} categories x "
            f"{len(points) // len(sweep['categories'])} settings), {len(points) - len(todo)} already in {path}")
        def on_result(point: SweepPoint, row: dict[str, Any]) -> str:
            store.save(SWEEP_POINT, point.key, row, slot=point.label)
            write_results(path, store, points)
            return (f"image AUROC {row['image_auroc']:.2%}, pixel AUROC {row['pixel_auroc']:.2%}, PRO "
                    f"{row['pro']:.2%} in {row['seconds']:.1f} s on {row['worker']}")

        def on_error(point: SweepPoint, exc: BaseException) -> str:
            failed.append(point.label)
            return f"FAILED: {type(exc).__name__}: {exc}"

        cluster = resolve_cluster(cluster)
        if cluster == NONE:
            for k, point in enumerate(todo, 1):
                try:
                    status = on_result(point, evaluate_point(point))
                except (PatchCoreError, RuntimeError, ValueError) as exc:
                    status = on_error(point, exc)
                log(f"[{k}/{len(todo)}] {point.label}: {status}")
        elif todo:
            with open_client(cluster, workers, threads, dashboard, log) as client:
                gpu = cluster_has_gpus(client)
                by_key = {p.key: p for p in todo}
                units = [Unit(p.key, evaluate_point, functools.partial(_same, p), (), _gpu_resources(p, gpu), p.label)
                         for p in todo]
                run_units(client, units, lambda u, r: on_result(by_key[u.key], r),
                          lambda u, e: on_error(by_key[u.key], e), log)
        write_results(path, store, points)
    wall = time.perf_counter() - start
    log(f"sweep wall time: {wall:.1f} s; {len(todo) - len(failed)} point(s) evaluated, {len(failed)} failed; "
        f"results: {path}")
    if failed:
        raise ConfigError(f"{len(failed)} sweep point(s) failed: {'; '.join(failed)} (a re-run retries them)")
    return read_results(path)


def _same(point: SweepPoint) -> SweepPoint:
    """A sweep unit's argument: its point."""
    return point


def _gpu_resources(point: SweepPoint, cluster_gpus: bool) -> dict[str, float] | None:
    device = str(point.config.get("device") or "auto")
    return {"GPU": 1} if device.startswith("cuda") or (device == "auto" and cluster_gpus) else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study sweep",
                                     description="Evaluate a grid of PatchCore settings x categories; one results "
                                                 "row per point, appended as points finish; resumable.")
    parser.add_argument("-f", "--file", required=True, help="sweep YAML (e.g. params/sweep_example.yaml)")
    parser.add_argument("--reports-dir", default=None,
                        help="results go to <reports-dir>/sweeps/<name>/results.csv unless the file sets 'results'")
    add_cluster_options(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_sweep(load_sweep(args.file), reports_dir=args.reports_dir, cluster=resolve_cluster(args.cluster),
                  workers=args.workers, threads=args.threads, dashboard=args.dashboard)
    except PatchCoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished points are in the results table and a re-run skips them",
              file=sys.stderr)
        return 130
    return 0
