"""The study runner: every notebook of ``notebooks/`` executed with papermill, skipped when already complete.

::

    python -m patchcore_lib.study -f params/quick.yaml
    python -m patchcore_lib.study -f params/paper_im224_wr50.yaml --data-root /data/mvtec_ad --categories bottle cable

runs the notebooks in name order (report notebooks, e.g. ``05_report``, last and once), per category for
notebooks that declare a ``category`` parameter, writes ``reports/executed/<notebook>-<category>.ipynb`` +
``.html`` and a ``.done.json`` with the hash of the notebook's code, its parameters, the content fingerprint of
the data it reads (its category; every category for report notebooks) and the library version, plus the
SHA-256 of the executed notebook and its HTML; a run whose ``.done.json`` matches and whose outputs are
unchanged is skipped. SIGTERM is handled as Ctrl-C: one line, finished notebooks kept.

``--cluster`` (:mod:`.cluster`): by default the runs are Dask tasks on a local cluster of worker processes
(report notebooks after the runs they summarise; per category, notebooks reading the feature cache after
the one that fills it), ``tcp://HOST:PORT`` uses an existing scheduler, ``none`` runs them here one after
another. Each task returns its files and this process writes them (:mod:`.tasks`), holding the
reports-folder lock throughout. ``python -m patchcore_lib.study sweep -f SWEEP.yaml``: :mod:`.sweep`.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import yaml

from patchcore_lib.data import (category_roots, check_category, check_category_name, default_category,
                                list_categories)
from patchcore_lib.errors import ConfigError, DatasetError, PatchCoreError
from patchcore_lib.study.cluster import (NONE, Unit, add_cluster_options, cluster_has_gpus, open_client,
                                         resolve_cluster, run_units)
from patchcore_lib.study import sweep
from patchcore_lib.study.outputs import default_reports_dir, repository_root
from patchcore_lib.study.run_keys import assign_hashes, data_fingerprints, is_complete, output_hashes
from patchcore_lib.study.tasks import (NotebookTask, execute_notebook, execute_notebook_task, render_html,
                                       report_inputs, write_task_files)
from patchcore_lib.utils.files import atomic_write_text, output_lock, read_json_or_none
from patchcore_lib.utils.signals import exit_status, interrupts_raise


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a study preset (YAML): ``data_root``, ``categories``, ``parameters`` (for every notebook that
    declares them), ``notebook_parameters`` (``{notebook-prefix: {name: value}}``), ``category_parameters``
    (``{category: {parameters: {...}, notebook_parameters: {...}}}``, applied last), optional ``notebooks`` and
    ``reports_dir`` (relative to the checkout; default ``reports/<name>``, see :func:`preset_reports_dir`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read study preset {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"study preset {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"study preset {path} must be a mapping, got {type(data).__name__}")
    known = {"name", "description", "data_root", "categories", "parameters", "notebook_parameters",
             "category_parameters", "notebooks", "reports_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"study preset {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    data.setdefault("name", path.stem)
    data["data_root"] = data.get("data_root") or ""
    data["categories"] = list(data.get("categories") or [])
    data["parameters"] = dict(data.get("parameters") or {})
    data["notebook_parameters"] = dict(data.get("notebook_parameters") or {})
    data["category_parameters"] = dict(data.get("category_parameters") or {})
    for category, entry in data["category_parameters"].items():
        extra = sorted(set(entry or {}) - {"parameters", "notebook_parameters"}) if isinstance(entry, dict) else None
        if extra is None or extra:
            raise ConfigError(f"study preset {path}: category_parameters.{category} must be a mapping with "
                              f"'parameters' and/or 'notebook_parameters', got {entry!r}")
    return data


def preset_reports_dir(preset: dict[str, Any]) -> Path:
    """Where a preset's study writes: its ``reports_dir`` (relative to the checkout), else
    ``<default reports folder>/<preset name>`` (``reports/quick`` for the default study), so that only
    the preset made for it (``params/real_reports.yaml``) writes the committed reports."""
    if preset.get("reports_dir"):
        path = Path(preset["reports_dir"]).expanduser()
        return path if path.is_absolute() else repository_root() / path
    return default_reports_dir() / str(preset.get("name") or "study")


def discover_notebooks(folder: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Notebooks of ``folder`` in name order, report notebooks (name containing ``report``) last.

    ``only``: keep notebooks whose name starts with one of these prefixes (e.g. ``["04", "05"]``).
    """
    paths = sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(str(o)) for o in only)]
    return [p for p in paths if "report" not in p.stem] + [p for p in paths if "report" in p.stem]


def notebook_parameters(path: str | Path) -> dict[str, str]:
    """The parameters a notebook declares: ``{name: default source}`` of the assignments in the cell tagged
    ``parameters``.

    Parsed with :mod:`ast` rather than papermill's line parser, which skips lines whose comment holds ``=``.
    """
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                raise ConfigError(f"{path}: the parameters cell is not valid Python: {exc}") from exc
            found: dict[str, str] = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = ast.get_source_segment(cell.source, node.value) or ""
            return found
    return {}


class StudyError(PatchCoreError):
    """One or more notebooks of a study failed."""


def _category_overrides(preset: dict[str, Any], category: str, stem: str) -> dict[str, Any]:
    """The preset's ``category_parameters`` of ``category`` for notebook ``stem``: its ``parameters``, then
    its ``notebook_parameters`` whose prefix ``stem`` starts with."""
    entry = (preset.get("category_parameters") or {}).get(category) or {}
    values = dict(entry.get("parameters") or {})
    for prefix, overrides in (entry.get("notebook_parameters") or {}).items():
        if stem.startswith(str(prefix)):
            values.update(overrides or {})
    return values


def plan_runs(preset: dict[str, Any], notebooks: Sequence[Path], categories: Sequence[str], data_root: str,
              reports_dir: Path, roots: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The list of executions: notebook, category (None for once-only notebooks), parameters, outputs.

    ``roots``: the data root of each category where it differs from ``data_root`` (see :func:`resolve_roots`)."""
    runs = []
    executed = reports_dir / "executed"
    for notebook in notebooks:
        declared = notebook_parameters(notebook)
        values = dict(preset.get("parameters", {}))
        for prefix, overrides in preset.get("notebook_parameters", {}).items():
            if notebook.stem.startswith(str(prefix)):
                values.update(overrides or {})
        common = {"data_root": data_root, "reports_dir": str(reports_dir), "categories": list(categories)}
        per_category = "category" in declared and "report" not in notebook.stem
        for category in (categories if per_category else [None]):
            params = {**values, **common}
            if category is not None:
                params.update(_category_overrides(preset, category, notebook.stem))
                params["category"] = category
                params["data_root"] = (roots or {}).get(category, data_root)
            params = {k: v for k, v in params.items() if k in declared}
            stem = f"{notebook.stem}-{category}" if category is not None else notebook.stem
            runs.append({"notebook": notebook, "category": category, "parameters": params,
                         "uses_cache": "cache_dir" in declared,
                         "data_root": params.get("data_root", data_root) or "",
                         "ipynb": executed / f"{stem}.ipynb", "html": executed / f"{stem}.html",
                         "done": executed / f"{stem}.done.json"})
    return runs


def roots_of(data_roots: Sequence[str], categories: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Several dataset roots: (categories, {category: the first root holding it}); with no categories given,
    every category found under the roots. DatasetError naming the roots for a category none holds."""
    found: dict[str, str] = {}
    for root in data_roots:
        for category in list_categories(root):
            found.setdefault(category, root)
    wanted = list(categories) or list(found)
    missing = [c for c in wanted if c not in found]
    if missing or not wanted:
        raise DatasetError(f"categories {missing or '(any)'} not found under any of {', '.join(data_roots)} "
                           f"(found: {', '.join(found) or 'none'})")
    return wanted, {c: found[c] for c in wanted}


def resolve_roots(data_root: str, categories: Sequence[str], download: bool = True) -> dict[str, str]:
    """Without ``data_root``: the folder of each non-synthetic category (``$PATCHCORE_DATA_ROOT``, the per-user
    data folder, or the MVTec AD download; see :func:`patchcore_lib.data.resolve_data_root`), resolved before
    any notebook runs so that a missing category fails at once with one clear error. Synthetic categories keep
    the empty root (each notebook generates the set). With ``data_root``: ``{}``."""
    if data_root:
        return {}
    return {c: str(root) for c, root in category_roots(categories, download, include_synthetic=False).items()}


def resolve_categories(data_root: str, categories: Sequence[str]) -> list[str]:
    """Categories to run: the given ones, else every category under ``data_root``, else the embedded default."""
    for category in categories:
        check_category_name(category)  # names, not paths: outputs are named after them
    if categories:
        if data_root:
            for category in categories:
                check_category(data_root, category)
        return list(categories)
    if data_root:
        found = list_categories(data_root)
        if not found:
            raise ConfigError(f"no categories (folders with train/ and test/) found under {data_root}")
        return found
    return [default_category("texture")]


def _is_skipped(run: dict[str, Any], force: bool) -> bool:
    """True (and status ``skipped``) when the run is complete with its hash (see :func:`assign_hashes`)."""
    if not force and is_complete(run["done"], run["hash"], [run["ipynb"], run["html"]]):
        run.update(status="skipped", seconds=0.0)
        return True
    return False


def _finish_run(run: dict[str, Any], error: str | None, seconds: float, where: str = "") -> str:
    """Record the outcome: on success the ``.done.json`` (written last, atomically); returns the log status."""
    if error is None:
        record = {"hash": run["hash"], "notebook": str(run["notebook"]), "category": run["category"],
                  "parameters": run["parameters"], "inputs": run.get("inputs"), "seconds": round(seconds, 2),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "outputs": output_hashes([run["ipynb"], run["html"]])}
        if where:
            record["worker"] = where
        atomic_write_text(run["done"], json.dumps(record, indent=2, default=str))
        run.update(status="done", seconds=seconds)
        return f"done in {seconds:.1f} s{' on ' + where if where else ''} -> {run['html']}"
    run.update(status="failed", seconds=seconds, error=[error])
    return f"FAILED after {seconds:.1f} s{' on ' + where if where else ''}: {error} (see {run['ipynb']})"


def _execute_runs(runs: list[dict[str, Any]], force: bool, kernel: str | None,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Execute (or skip) each planned run in order, in this process; returns the failed ones."""
    for k, run in enumerate(runs, 1):
        label = f"[{k}/{len(runs)}] {run['ipynb'].stem}"
        if _is_skipped(run, force):
            log(f"{label}: complete with the same parameters, skipped")
            continue
        t0 = time.perf_counter()
        error = None
        try:
            run["done"].unlink(missing_ok=True)
            execute_notebook(run["notebook"], run["ipynb"], run["parameters"], kernel=kernel)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            text = str(exc).strip()
            error = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        if run["ipynb"].is_file():
            try:
                render_html(run["ipynb"], run["html"], run["data_root"])
            except Exception as exc:  # rendering a broken partial notebook must not hide the real error
                log(f"{label}: HTML rendering failed: {exc}")
        log(f"{label}: {_finish_run(run, error, time.perf_counter() - t0)}")
    return [r for r in runs if r["status"] == "failed"]


def _dependencies(runs: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Unit key -> keys it waits for: a report notebook waits for every other run; per category, notebooks
    that read the feature cache (declare ``cache_dir``) wait for the first of them, which fills it."""
    keys = {id(r): r["ipynb"].stem for r in runs}
    deps: dict[str, tuple[str, ...]] = {}
    first_cache: dict[Any, str] = {}
    for run in runs:
        key = keys[id(run)]
        if "report" in run["notebook"].stem:
            deps[key] = tuple(keys[id(r)] for r in runs if "report" not in r["notebook"].stem)
        elif run["uses_cache"]:
            producer = first_cache.setdefault(run["category"], key)
            deps[key] = (producer,) if producer != key else ()
        else:
            deps[key] = ()
    return deps


def _execute_runs_on_cluster(runs: list[dict[str, Any]], force: bool, kernel: str | None, client: Any,
                             reports: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Execute the runs as Dask tasks (dependencies respected); the client writes every returned file
    atomically, then the ``.done.json``. Returns the failed runs."""
    todo = []
    for run in runs:
        if _is_skipped(run, force):
            log(f"{run['ipynb'].stem}: complete with the same parameters, skipped")
        else:
            previous = read_json_or_none(run["done"])
            seconds = previous.get("seconds") if isinstance(previous, dict) else None
            # the last run's duration: notebooks are handed out by critical path (cluster.critical_path_seconds)
            run["expected_seconds"] = float(seconds) if isinstance(seconds, (int, float)) else 0.0
            run["done"].unlink(missing_ok=True)
            todo.append(run)
    if not todo:
        return []
    gpu = cluster_has_gpus(client)
    deps = _dependencies(todo)
    by_key = {r["ipynb"].stem: r for r in todo}

    def make_task(run: dict[str, Any]) -> Callable[[], NotebookTask]:
        def build() -> NotebookTask:  # called when submitted: a report reads what its dependencies wrote
            inputs, mtimes = report_inputs(reports) if "report" in run["notebook"].stem else ({}, {})
            return NotebookTask(run["notebook"].name, run["notebook"].read_bytes(), run["parameters"],
                                str(reports), _relative_to(run["ipynb"], reports),
                                _relative_to(run["html"], reports), kernel, inputs, mtimes)
        return build

    def wants_gpu(run: dict[str, Any]) -> bool:
        device = str(run["parameters"].get("device", "") or "")
        return device.startswith("cuda") or (device == "auto" and gpu)

    units = [Unit(key, execute_notebook_task, make_task(run), deps[key], {"GPU": 1} if wants_gpu(run) else None,
                  expected_seconds=run["expected_seconds"]) for key, run in by_key.items()]

    def on_result(unit: Unit, result: dict[str, Any]) -> str:
        run = by_key[unit.key]
        write_task_files(reports, result["files"])
        where = f"{result['host']}/{result['worker'] or result['pid']}"
        run.update(worker=result["worker"], pid=result["pid"])
        return _finish_run(run, result["error"], result["seconds"], where)

    def on_error(unit: Unit, exc: BaseException) -> str:
        return _finish_run(by_key[unit.key], f"{type(exc).__name__}: {exc}", 0.0)

    log(f"{len(todo)} task(s) on the cluster; {len(runs) - len(todo)} skipped")
    run_units(client, units, on_result, on_error, log)
    return [r for r in todo if r["status"] == "failed"]


def _relative_to(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def run_study(preset: dict[str, Any], *, categories: Sequence[str] | None = None, data_root: str | Sequence[str] | None = None,
              reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              only: Sequence[str] | None = None, force: bool = False, kernel: str | None = None,
              cluster: str = NONE, workers: int | None = None, threads: int | None = None,
              dashboard: str = ":8787", log: Callable[[str], None] = print,
              download: bool = True) -> list[dict[str, Any]]:
    """Run (or skip, when complete with the same parameters) every notebook of the study; return the runs
    with ``status`` (``done``, ``skipped`` or ``failed``) and ``seconds``. Raises :class:`StudyError` at the
    end when a notebook failed (the others still run).

    ``cluster``: ``none`` (in this process, one after another), ``local`` (a local Dask cluster of
    ``workers`` processes with ``threads`` threads each) or a Dask scheduler address
    (:func:`patchcore_lib.study.cluster.resolve_cluster`)."""
    start = time.perf_counter()
    data_root = preset.get("data_root", "") if data_root is None else data_root
    data_roots = [data_root] if isinstance(data_root, str) else list(data_root)
    data_roots = [str(Path(r).expanduser().resolve()) for r in data_roots if r]
    if len(data_roots) > 1:  # each category from the first root that holds it
        categories, roots = roots_of(data_roots, categories or preset.get("categories") or [])
        data_root = data_roots[0]
    else:
        data_root = data_roots[0] if data_roots else ""
        categories = resolve_categories(data_root, categories or preset.get("categories") or [])
        roots = resolve_roots(data_root, categories, download)
    reports = Path(reports_dir or preset_reports_dir(preset)).expanduser().resolve()
    folder = Path(notebooks_dir or repository_root() / "notebooks")
    notebooks = discover_notebooks(folder, only or preset.get("notebooks"))
    if not notebooks:
        raise ConfigError(f"no notebooks found in {folder}")
    runs = plan_runs(preset, notebooks, categories, data_root, reports, roots)
    log(f"study '{preset.get('name', 'study')}': {len(notebooks)} notebooks x categories {', '.join(categories)} "
        f"-> {len(runs)} runs; reports in {reports}")
    if data_root and reports.is_relative_to(Path(data_root)):
        raise ConfigError(f"reports folder {reports} is inside the data root {data_root}; choose a --reports-dir "
                          "outside the dataset")
    assign_hashes(runs, data_fingerprints(data_root, categories, roots))
    reports.mkdir(parents=True, exist_ok=True)
    cluster = resolve_cluster(cluster)
    with output_lock(reports, "--reports-dir"):  # two studies into one reports folder: the second refuses
        if cluster == NONE:
            failures = _execute_runs(runs, force, kernel, log)
        else:
            with open_client(cluster, workers, threads, dashboard, log) as client:
                failures = _execute_runs_on_cluster(runs, force, kernel, client, reports, log)
    wall = time.perf_counter() - start
    log(f"study wall time: {wall:.1f} s ({wall / 60:.1f} min); "
        f"{sum(r['status'] == 'done' for r in runs)} run, {sum(r['status'] == 'skipped' for r in runs)} skipped, "
        f"{len(failures)} failed")
    summary = reports / "summary.md"
    if summary.is_file():
        log(f"summary: {summary}")
    if failures:
        raise StudyError(f"{len(failures)} notebook run(s) failed: "
                         + ", ".join(r["ipynb"].name for r in failures))
    return runs


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["name=value", ...]`` -> ``{name: yaml-parsed value}`` (``imagesize=128`` gives an int)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study [run]",
                                     description="Run the notebook study (papermill) and render HTML reports; "
                                                 "'python -m patchcore_lib.study sweep --help': a grid of settings.")
    parser.add_argument("-f", "--preset", default=None,
                        help="study preset YAML (default: params/quick.yaml of the checkout)")
    parser.add_argument("--data-root", nargs="+", default=None,
                        help="dataset root(s) (MVTec layout); with several, each category is taken from the first "
                             "that holds it; omitted: the preset's, else $PATCHCORE_DATA_ROOT / the per-user data "
                             "folder / the MVTec AD download / the synthetic set for synthetic categories")
    parser.add_argument("--categories", nargs="+", default=None, help="categories (default: preset's, else all)")
    parser.add_argument("--reports-dir", default=None,
                        help="output folder (default: the preset's reports_dir, else reports/<preset name>)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--only", nargs="+", default=None, help="run only notebooks starting with these prefixes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter of the preset (VALUE is read as YAML), e.g. "
                             "--set weights=/models/wide_resnet50_2-95faca4d.pth --set imagesize=128")
    parser.add_argument("--no-download", action="store_true",
                        help="without --data-root: never download a missing MVTec AD category (fail instead)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when complete")
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' python3)")
    add_cluster_options(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``[run] [options]`` runs the notebook study; ``sweep -f SWEEP.yaml`` a grid of settings (.sweep)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:
        return sweep.main(argv[1:])
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        with interrupts_raise():  # SIGTERM as Ctrl-C
            preset = load_preset(args.preset or repository_root() / "params" / "quick.yaml")
            preset["parameters"].update(parse_overrides(args.overrides))
            run_study(preset, categories=args.categories, data_root=args.data_root, reports_dir=args.reports_dir,
                      notebooks_dir=args.notebooks_dir, only=args.only, force=args.force, kernel=args.kernel,
                      cluster=resolve_cluster(args.cluster), workers=args.workers, threads=args.threads,
                      dashboard=args.dashboard, download=not args.no_download)
    except PatchCoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted; finished notebooks are kept and a re-run skips them", file=sys.stderr)
        return exit_status(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
