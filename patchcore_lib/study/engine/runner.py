"""The study runner: every notebook of ``notebooks/`` executed with papermill, skipped when already complete.

::

    python -m patchcore_lib.study -f params/quick.yaml
    python -m patchcore_lib.study -f params/paper_im224_wr50.yaml --data-root /data/mvtec_ad --categories bottle cable

runs the notebooks in name order (report notebooks, e.g. ``05_report``, last and once), per category for
notebooks that declare a ``category`` parameter, writes ``reports/executed/<notebook>-<category>.ipynb`` +
``.html`` and the run's record in the reports folder's store (``reports/.store/notebook/``, :mod:`.keys`,
:mod:`patchcore_lib.utils.store`); a run whose key has a record there and whose HTML report is unchanged is
skipped (the executed ``.ipynb`` is a local by-product: completeness never depends on a git-ignored file, so a
clone of committed reports skips them). ``--check`` (:mod:`.check`) says which runs are current without
executing anything. SIGTERM is handled as Ctrl-C: one line, finished notebooks kept.

``--cluster`` (:mod:`.cluster`): by default the runs are Dask tasks on a local cluster of worker processes
(report notebooks after the runs they summarise; per category, notebooks reading the feature cache after
the one that fills it), ``tcp://HOST:PORT`` uses an existing scheduler, ``none`` runs them here one after
another. Each task returns its files and this process writes them (:mod:`.tasks`), holding the
reports-folder lock throughout. ``python -m patchcore_lib.study sweep -f SWEEP.yaml``: :mod:`.sweep`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from patchcore_lib.errors import ConfigError, PatchCoreError
from patchcore_lib.study.engine.cluster import NONE, Unit, cluster_has_gpus, open_client, resolve_cluster, run_units
from patchcore_lib.study.engine.check import RunCheck, check_runs, recorded_fingerprints, save_data_manifests
from patchcore_lib.study.engine.keys import NOTEBOOK, assign_keys, data_fingerprints, rekey_report
from patchcore_lib.study.engine.plan import Run, discover_notebooks, plan_runs
from patchcore_lib.study.engine.presets import preset_reports_dir, resolve_categories, resolve_roots, roots_of
from patchcore_lib.study.engine.tasks import (NotebookTask, execute_notebook, execute_notebook_task, machine_summary,
                                              render_html, report_inputs, write_task_files)
from patchcore_lib.study.outputs import repository_root
from patchcore_lib.utils.files import check_writable_dir, output_lock
from patchcore_lib.utils.store import Store


class StudyError(PatchCoreError):
    """One or more notebooks of a study failed."""


def run_store(reports: str | Path) -> Store:
    """The store of a reports folder (``<reports>/.store``): one record per finished run."""
    return Store.beside(reports)


def run_record(reports: str | Path, name: str) -> dict[str, Any] | None:
    """The record of the last finished run ``name`` (``<notebook stem>[-<category>]``), else None."""
    return run_store(reports).latest(NOTEBOOK, name)


def record_checksums(store: Store) -> Callable[[str], str | None]:
    """key -> the checksum of the store's valid record of that notebook run (None when there is none)."""
    def checksum(key: str) -> str | None:
        record = store.record(NOTEBOOK, key)
        return (str(record.get("checksum") or "")[:16] or None) if record is not None else None
    return checksum


def _is_skipped(run: Run, store: Store, force: bool) -> bool:
    """True (and status ``skipped``) when the store holds the run's key with its outputs unchanged."""
    if not force and store.lookup(NOTEBOOK, run.key, require=[run.html]) is not None:
        run.status, run.seconds = "skipped", 0.0
        return True
    return False


def run_outputs(run: Run, since: float) -> list[Path]:
    """The files a run wrote (modified at or after ``since``, seconds since the epoch), besides its HTML: those
    of its run folders (``<reports>/<notebook>/<category>-*/``; a report notebook: ``<reports>/<notebook>/`` and
    the files at the top of the reports folder, e.g. ``summary.md``). Recorded with their hashes, so a deleted or
    edited ``metrics.json`` makes the run stale."""
    reports = run.html.parent.parent
    folder = reports / run.notebook.stem
    if run.category is None:
        candidates = [*folder.rglob("*"), *reports.glob("*")]
    else:
        candidates = [p for sub in folder.glob(f"{run.category}-*") for p in sub.rglob("*")]
    found = []
    for path in candidates:
        try:
            if path.is_file() and not path.name.startswith(".") and path.stat().st_mtime >= since:
                found.append(path)
        except OSError:
            continue
    return sorted(found)


def _finish_run(run: Run, store: Store, error: str | None, seconds: float, where: str = "",
                machine: str | None = None, written: Sequence[Path] | None = None) -> str:
    """Record the outcome: on success the run's record in the store (written last) with the hashes of its HTML
    and of the files it wrote (``written``, those a cluster task returned; else :func:`run_outputs`), never of
    the git-ignored executed ``.ipynb`` and kernel log; returns the log status."""
    run.seconds = seconds
    if error is None:
        wrote = run_outputs(run, time.time() - seconds - 2.0) if written is None else \
            [p for p in written if p.parent != run.html.parent]
        store.save(NOTEBOOK, run.key, {"notebook": run.notebook.name, "category": run.category},
                   outputs=[run.html, *wrote], slot=run.name, parameters=run.parameters, inputs=run.inputs,
                   seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%dT%H:%M:%S"), worker=where or None,
                   machine=machine or machine_summary())
        run.status = "done"
        return f"done in {seconds:.1f} s{' on ' + where if where else ''} -> {run.html}"
    run.status, run.error = "failed", error
    return f"FAILED after {seconds:.1f} s{' on ' + where if where else ''}: {error} (see {run.ipynb})"


def _execute_runs(runs: list[Run], store: Store, force: bool, kernel: str | None,
                  log: Callable[[str], None]) -> list[Run]:
    """Execute (or skip) each planned run in order, in this process; returns the failed ones."""
    for k, run in enumerate(runs, 1):
        label = f"[{k}/{len(runs)}] {run.name}"
        if run.is_report:  # over the outputs the runs before it left (some may have finished just now)
            rekey_report(run, record_checksums(store))
        if _is_skipped(run, store, force):
            log(f"{label}: complete with the same parameters, skipped")
            continue
        t0 = time.perf_counter()
        error = None
        try:
            store.forget_slot(NOTEBOOK, run.name)
            execute_notebook(run.notebook, run.ipynb, run.parameters, kernel=kernel)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            text = str(exc).strip()
            error = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        if run.ipynb.is_file():
            try:
                render_html(run.ipynb, run.html, run.data_root)
            except Exception as exc:  # rendering a broken partial notebook must not hide the real error
                log(f"{label}: HTML rendering failed: {exc}")
        log(f"{label}: {_finish_run(run, store, error, time.perf_counter() - t0)}")
    return [r for r in runs if r.status == "failed"]


def _dependencies(runs: list[Run]) -> dict[str, tuple[str, ...]]:
    """Unit key -> keys it waits for: a report notebook waits for every other run; per category, notebooks
    that read the feature store (declare ``cache_dir``) wait for the first of them, which fills it."""
    deps: dict[str, tuple[str, ...]] = {}
    first_cache: dict[Any, str] = {}
    for run in runs:
        if run.is_report:
            deps[run.name] = tuple(r.name for r in runs if not r.is_report)
        elif run.uses_cache:
            producer = first_cache.setdefault(run.category, run.name)
            deps[run.name] = (producer,) if producer != run.name else ()
        else:
            deps[run.name] = ()
    return deps


def _execute_runs_on_cluster(runs: list[Run], store: Store, force: bool, kernel: str | None, client: Any,
                             reports: Path, log: Callable[[str], None]) -> list[Run]:
    """Execute the runs as Dask tasks (dependencies respected); the client writes every returned file
    atomically, then the run's record. Returns the failed runs."""
    todo = []
    reruns = any(not r.is_report and not _is_skipped(r, store, force) for r in runs)
    for run in runs:
        if not (run.is_report and reruns) and _is_skipped(run, store, force):
            log(f"{run.name}: complete with the same parameters, skipped")
        else:
            previous = store.latest(NOTEBOOK, run.name)
            seconds = previous.get("seconds") if isinstance(previous, dict) else None
            # the last run's duration: notebooks are handed out by critical path (cluster.critical_path_seconds)
            run.expected_seconds = float(seconds) if isinstance(seconds, (int, float)) else 0.0
            store.forget_slot(NOTEBOOK, run.name)
            todo.append(run)
    if not todo:
        return []
    gpu = cluster_has_gpus(client)
    deps = _dependencies(todo)
    by_name = {r.name: r for r in todo}

    def make_task(run: Run) -> Callable[[], NotebookTask]:
        def build() -> NotebookTask:  # called when submitted: a report reads what its dependencies wrote
            inputs, mtimes = report_inputs(reports) if run.is_report else ({}, {})
            return NotebookTask(run.notebook.name, run.notebook.read_bytes(), run.parameters, str(reports),
                                run.ipynb.relative_to(reports).as_posix(), run.html.relative_to(reports).as_posix(),
                                kernel, inputs, mtimes)
        return build

    def wants_gpu(run: Run) -> bool:
        device = str(run.parameters.get("device", "") or "")
        return device.startswith("cuda") or (device == "auto" and gpu)

    units = [Unit(name, execute_notebook_task, make_task(run), deps[name], {"GPU": 1} if wants_gpu(run) else None,
                  expected_seconds=run.expected_seconds) for name, run in by_name.items()]

    def on_result(unit: Unit, result: dict[str, Any]) -> str:
        run = by_name[unit.key]
        if run.is_report:  # its dependencies are recorded by now: keyed over their outputs
            rekey_report(run, record_checksums(store))
        written = write_task_files(reports, result["files"])
        where = f"{result['host']}/{result['worker'] or result['pid']}"
        run.worker = result["worker"] or str(result["pid"])
        return _finish_run(run, store, result["error"], result["seconds"], where, result.get("machine"), written)

    def on_error(unit: Unit, exc: BaseException) -> str:
        return _finish_run(by_name[unit.key], store, f"{type(exc).__name__}: {exc}", 0.0)

    log(f"{len(todo)} task(s) on the cluster; {len(runs) - len(todo)} skipped")
    run_units(client, units, on_result, on_error, log)
    return [r for r in todo if r.status == "failed"]


#: the kernel every notebook runs in unless ``--kernel`` says otherwise: the generic ``python3`` of the Python
#: running the study, whatever kernelspec a JupyterLab save wrote into the notebook's metadata
DEFAULT_KERNEL = "python3"


@dataclass
class StudyPlan:
    """A study resolved against its data: the runs (keys assigned), where they write, where the data is."""

    runs: list[Run]
    reports: Path
    data_root: str
    roots: dict[str, str]
    categories: list[str]
    fingerprints: dict[str, str]


def plan_study(preset: dict[str, Any], *, categories: Sequence[str] | None = None,
               data_root: str | Sequence[str] | None = None, reports_dir: str | Path | None = None,
               notebooks_dir: str | Path | None = None, only: Sequence[str] | None = None, download: bool = True,
               recorded_data: bool = False) -> StudyPlan:
    """The runs of a study with their keys. ``recorded_data``: take each category's data fingerprint from the
    reports folder's records instead of reading the data (no data needed: a check of code and parameters)."""
    data_root = preset.get("data_root", "") if data_root is None else data_root
    data_roots = [data_root] if isinstance(data_root, str) else list(data_root)
    data_roots = [str(Path(r).expanduser().resolve()) for r in data_roots if r]
    roots: dict[str, str] = {}
    if recorded_data:
        categories = list(categories or preset.get("categories") or [])
        data_root = data_roots[0] if data_roots else ""
    elif len(data_roots) > 1:  # each category from the first root that holds it
        categories, roots = roots_of(data_roots, categories or preset.get("categories") or [])
        data_root = data_roots[0]
    else:
        data_root = data_roots[0] if data_roots else ""
        categories = resolve_categories(data_root, categories or preset.get("categories") or [])
        roots = resolve_roots(data_root, categories, download)
    reports = Path(reports_dir or preset_reports_dir(preset)).expanduser().resolve()
    folder = Path(notebooks_dir or repository_root() / "notebooks")
    notebooks = discover_notebooks(folder, preset.get("notebooks"))
    selected = set(discover_notebooks(folder, only)) if only else set(notebooks)
    if not notebooks or not selected & set(notebooks):
        raise ConfigError(f"no notebooks found in {folder}" + (f" starting with {', '.join(map(str, only))}"
                                                               if only else ""))
    runs = plan_runs(preset, notebooks, list(categories), data_root, reports, roots)
    if data_root and reports.is_relative_to(Path(data_root)):
        raise ConfigError(f"reports folder {reports} is inside the data root {data_root}; choose a --reports-dir "
                          "outside the dataset")
    if recorded_data:
        fingerprints = recorded_fingerprints(runs, run_store(reports))
    else:
        fingerprints = data_fingerprints(data_root, categories, roots)
    assign_keys(runs, fingerprints)  # every run of the preset: a report's key covers them all, whatever --only says
    checksum = record_checksums(run_store(reports))
    for run in runs:
        if run.is_report:
            rekey_report(run, checksum)
    runs = [run for run in runs if run.notebook in selected]
    return StudyPlan(runs, reports, data_root, roots, list(categories), fingerprints)


def check_study(preset: dict[str, Any], *, recorded_data: bool = False, **where: Any) -> list[RunCheck]:
    """``--check``: every run of the study as current or stale (with the inputs that changed); nothing is
    executed. ``where``: the location options of :func:`plan_study`."""
    plan = plan_study(preset, recorded_data=recorded_data, **where)
    return check_runs(plan.runs, run_store(plan.reports), plan.data_root, plan.roots)


def run_study(preset: dict[str, Any], *, categories: Sequence[str] | None = None, data_root: str | Sequence[str] | None = None,
              reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              only: Sequence[str] | None = None, force: bool = False, kernel: str | None = None,
              cluster: str = NONE, workers: int | None = None, threads: int | None = None,
              dashboard: str = ":8787", log: Callable[[str], None] = print,
              download: bool = True) -> list[Run]:
    """Run (or skip, when complete with the same parameters) every notebook of the study; return the runs
    with ``status`` (``done``, ``skipped`` or ``failed``) and ``seconds``. Raises :class:`StudyError` at the
    end when a notebook failed (the others still run).

    ``kernel``: the Jupyter kernel (default :data:`DEFAULT_KERNEL`, never the kernelspec a notebook was last
    saved with). ``cluster``: ``none`` (in this process, one after another), ``local`` (a local Dask cluster
    of ``workers`` processes with ``threads`` threads each) or a Dask scheduler address
    (:func:`patchcore_lib.study.engine.cluster.resolve_cluster`)."""
    start = time.perf_counter()
    plan = plan_study(preset, categories=categories, data_root=data_root, reports_dir=reports_dir,
                      notebooks_dir=notebooks_dir, only=only, download=download)
    runs, reports = plan.runs, plan.reports
    log(f"study '{preset.get('name', 'study')}': {len({r.notebook for r in runs})} notebooks x categories "
        f"{', '.join(plan.categories)} -> {len(runs)} runs; reports in {reports}")
    check_writable_dir(reports)  # an unwritable reports folder: one line naming it, before any run
    store = run_store(reports)
    kernel = kernel or DEFAULT_KERNEL
    cluster = resolve_cluster(cluster)
    with output_lock(reports, "--reports-dir"):  # two studies into one reports folder: the second refuses
        save_data_manifests(store, plan.fingerprints, plan.data_root, plan.roots)
        if cluster == NONE:
            failures = _execute_runs(runs, store, force, kernel, log)
        else:
            with open_client(cluster, workers, threads, dashboard, log) as client:
                failures = _execute_runs_on_cluster(runs, store, force, kernel, client, reports, log)
    wall = time.perf_counter() - start
    log(f"study wall time: {wall:.1f} s ({wall / 60:.1f} min); "
        f"{sum(r.status == 'done' for r in runs)} run, {sum(r.status == 'skipped' for r in runs)} skipped, "
        f"{len(failures)} failed")
    summary = reports / "summary.md"
    if summary.is_file():
        log(f"summary: {summary}")
    if failures:
        raise StudyError(f"{len(failures)} notebook run(s) failed: "
                         + ", ".join(r.ipynb.name for r in failures))
    return runs
