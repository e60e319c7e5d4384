"""The study runner: every notebook of ``notebooks/`` executed with papermill, skipped when already complete.

::

    python -m patchcore_lib.study -f params/quick.yaml
    python -m patchcore_lib.study -f params/paper_im224_wr50.yaml --data-root /data/mvtec_ad --categories bottle cable

runs the notebooks in name order (report notebooks, e.g. ``05_report``, last and once), per category for
notebooks that declare a ``category`` parameter, writes ``reports/executed/<notebook>-<category>.ipynb`` +
``.html`` and a ``.done.json`` with the hash of the notebook's code and parameters; a run whose ``.done.json``
matches is skipped.
"""
from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import yaml

from patchcore_lib import __version__
from patchcore_lib.data import check_category, dataset_fingerprint, default_category, list_categories, resolve_data_root
from patchcore_lib.data.roots import synthetic_kind_of
from patchcore_lib.errors import ConfigError, DatasetError, PatchCoreError
from patchcore_lib.study.outputs import default_reports_dir, repository_root
from patchcore_lib.utils.files import atomic_write_text, output_lock


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a study preset (YAML): ``data_root``, ``categories``, ``parameters`` (for every notebook that
    declares them), ``notebook_parameters`` (``{notebook-prefix: {name: value}}``), optional ``notebooks`` and
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
    known = {"name", "description", "data_root", "categories", "parameters", "notebook_parameters", "notebooks",
             "reports_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"study preset {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    data.setdefault("name", path.stem)
    data["data_root"] = data.get("data_root") or ""
    data["categories"] = list(data.get("categories") or [])
    data["parameters"] = dict(data.get("parameters") or {})
    data["notebook_parameters"] = dict(data.get("notebook_parameters") or {})
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


def notebook_code_hash(path: str | Path) -> str:
    """Hash of a notebook's cell sources and tags (outputs and metadata are ignored)."""
    nb = nbformat.read(str(path), as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.cell_type.encode())
        digest.update(json.dumps(sorted(cell.get("metadata", {}).get("tags", []))).encode())
        digest.update(cell.source.encode())
    return digest.hexdigest()


def run_hash(notebook: str | Path, params: dict[str, Any], inputs: dict[str, Any] | None = None) -> str:
    """Hash identifying one execution: the notebook's code, the parameters passed and ``inputs`` (what else
    the outputs depend on: the library's sources, the dataset's fingerprint; see :func:`run_inputs`)."""
    payload = {"code": notebook_code_hash(notebook), "parameters": params, "inputs": inputs or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def library_fingerprint() -> str:
    """``<version>+<sha256 of every source file of patchcore_lib>``: changes with any library change,
    committed or not (so a skip never reuses a report computed by other code)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".csv", ".json") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


def run_inputs(category: str | None, data_root: str = "") -> dict[str, Any]:
    """The skip key's inputs besides code and parameters: the library fingerprint and, for a run with a
    category, the dataset fingerprint (file names and sizes; a synthetic category is generated if missing)."""
    inputs: dict[str, Any] = {"library": library_fingerprint()}
    if category:
        root, category = resolve_data_root(data_root, category, download=False)
        inputs["dataset"] = dataset_fingerprint(root, category)
    return inputs


def is_complete(done_path: Path, expected_hash: str, outputs: Sequence[Path]) -> bool:
    """True when ``done_path`` records ``expected_hash`` and every output file exists."""
    record = _read_json(done_path)
    return bool(record) and record.get("hash") == expected_hash and all(Path(p).is_file() for p in outputs)


def render_html(ipynb: str | Path, html: str | Path | None = None, data_root: str = "") -> Path:
    """Render an executed notebook to standalone HTML (nbconvert), written atomically next to it.

    Machine paths (the injected parameters, tracebacks) are shown without the machine's folders: the data root
    as ``$DATA_ROOT``, the checkout as ``$CHECKOUT``, the home folder as ``~``."""
    from nbconvert import HTMLExporter  # optional heavy dependency (study extra): imported when rendering

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    for path, shown in ((data_root, "$DATA_ROOT"), (str(repository_root().resolve()), "$CHECKOUT"),
                        (str(Path.home()), "~")):
        if path and len(path) > 1:
            body = body.replace(path, shown)
    return atomic_write_text(html, body)


class StudyError(PatchCoreError):
    """One or more notebooks of a study failed."""


def execute_notebook(notebook: Path, output: Path, params: dict[str, Any], kernel: str | None = None,
                     cwd: Path | None = None, log_output: bool = False) -> None:
    """Execute one notebook with papermill into ``output`` (the partially executed notebook is kept on error)."""
    import papermill  # optional heavy dependency (study extra): imported when executing

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel,
                               cwd=str(cwd or notebook.parent), progress_bar=False, log_output=log_output)


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
                params["category"] = category
                params["data_root"] = (roots or {}).get(category, data_root)
            params = {k: v for k, v in params.items() if k in declared}
            stem = f"{notebook.stem}-{category}" if category is not None else notebook.stem
            runs.append({"notebook": notebook, "category": category, "parameters": params,
                         "data_root": (roots or {}).get(category, data_root) if category is not None else data_root,
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
    return {c: str(resolve_data_root("", c, download=download)[0]) for c in categories if not synthetic_kind_of(c)}


def resolve_categories(data_root: str, categories: Sequence[str]) -> list[str]:
    """Categories to run: the given ones, else every category under ``data_root``, else the embedded default."""
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


def _execute_runs(runs: list[dict[str, Any]], force: bool, kernel: str | None,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Execute (or skip) each planned run in order; returns the failed ones."""
    failures = []
    earlier: list[str] = []  # the keys of the runs before: a report notebook reads their outputs
    for k, run in enumerate(runs, 1):
        label = f"[{k}/{len(runs)}] {run['ipynb'].stem}"
        inputs = run_inputs(run["category"], run["data_root"])
        if run["category"] is None:
            inputs["runs"] = list(earlier)
        digest = run_hash(run["notebook"], run["parameters"], inputs)
        earlier.append(digest)
        if not force and is_complete(run["done"], digest, [run["ipynb"], run["html"]]):
            run.update(status="skipped", seconds=0.0)
            log(f"{label}: complete with the same parameters, skipped")
            continue
        t0 = time.perf_counter()
        error = None
        try:
            run["done"].unlink(missing_ok=True)
            execute_notebook(run["notebook"], run["ipynb"], run["parameters"], kernel=kernel)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            error = exc
        if run["ipynb"].is_file():
            try:
                render_html(run["ipynb"], run["html"], run.get("data_root", ""))
            except Exception as exc:  # rendering a broken partial notebook must not hide the real error
                log(f"{label}: HTML rendering failed: {exc}")
        seconds = time.perf_counter() - t0
        if error is None:
            record = {"hash": digest, "notebook": str(run["notebook"]), "category": run["category"],
                      "parameters": run["parameters"], "inputs": inputs, "seconds": round(seconds, 2),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_text(run["done"], json.dumps(record, indent=2, default=str))
            run.update(status="done", seconds=seconds)
            log(f"{label}: done in {seconds:.1f} s -> {run['html']}")
        else:
            run.update(status="failed", seconds=seconds, error=str(error).strip().splitlines()[-1:] or [""])
            failures.append(run)
            log(f"{label}: FAILED after {seconds:.1f} s: {type(error).__name__}: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''} (see {run['ipynb']})")
    return failures


def run_study(preset: dict[str, Any], *, categories: Sequence[str] | None = None, data_root: str | Sequence[str] | None = None,
              reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              only: Sequence[str] | None = None, force: bool = False, kernel: str | None = None,
              log: Callable[[str], None] = print, download: bool = True) -> list[dict[str, Any]]:
    """Run (or skip, when complete with the same parameters) every notebook of the study; return the runs
    with ``status`` (``done``, ``skipped`` or ``failed``) and ``seconds``. Raises :class:`StudyError` at the
    end when a notebook failed (the others still run)."""
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
    reports.mkdir(parents=True, exist_ok=True)
    with output_lock(reports, "--reports-dir"):  # two studies into one reports folder: the second refuses
        failures = _execute_runs(runs, force, kernel, log)
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
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study",
                                     description="Run the notebook study (papermill) and render HTML reports.")
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
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        preset = load_preset(args.preset or repository_root() / "params" / "quick.yaml")
        preset["parameters"].update(parse_overrides(args.overrides))
        run_study(preset, categories=args.categories, data_root=args.data_root, reports_dir=args.reports_dir,
                  notebooks_dir=args.notebooks_dir, only=args.only, force=args.force, kernel=args.kernel,
                  download=not args.no_download)
    except PatchCoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished notebooks are kept and a re-run skips them", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
