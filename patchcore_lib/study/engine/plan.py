"""What a study runs: the notebooks, and one :class:`Run` per notebook and category with its parameters."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nbformat

from patchcore_lib.errors import ConfigError


@dataclass
class Run:
    """One execution of one notebook (for one category, or once for a report notebook) and its outcome."""

    notebook: Path
    category: str | None
    parameters: dict[str, Any]
    ipynb: Path                    # the executed notebook
    html: Path                     # its rendering
    data_root: str = ""
    uses_cache: bool = False       # declares ``cache_dir``: reads the feature store another run may fill
    is_report: bool = False        # summarises every other run (:func:`is_report`): runs once, last
    key: str = ""                  # the store key (:func:`~patchcore_lib.study.engine.keys.assign_keys`)
    inputs: dict[str, Any] = field(default_factory=dict)  # what the key covers, recorded beside the result
    status: str = "planned"        # planned, done, skipped or failed
    seconds: float = 0.0
    expected_seconds: float = 0.0  # the last run's duration (critical-path scheduling on a cluster)
    error: str | None = None
    worker: str | None = None

    @property
    def name(self) -> str:
        """``<notebook stem>[-<category>]``: the run's slot in the store and its output file names."""
        return self.ipynb.stem

def is_report(notebook: Path, declared: dict[str, str] | None = None) -> bool:
    """A report notebook (``05_report``) declares the ``categories`` it summarises and no ``category``: it
    reads every other run's outputs, so it runs once, after them. ``declared``: its parameters, when already
    read (:func:`notebook_parameters`)."""
    declared = notebook_parameters(notebook) if declared is None else declared
    return "categories" in declared and "category" not in declared


def discover_notebooks(folder: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Notebooks of ``folder`` in name order, report notebooks (:func:`is_report`) last.

    ``only``: keep notebooks whose name starts with one of these prefixes (e.g. ``["04", "05"]``).
    """
    paths = sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(str(o)) for o in only)]
    reports = {p for p in paths if is_report(p)}
    return [p for p in paths if p not in reports] + [p for p in paths if p in reports]


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
              reports_dir: Path, roots: dict[str, str] | None = None) -> list[Run]:
    """The list of executions: notebook, category (None for report notebooks), parameters, outputs.

    ``roots``: the data root of each category where it differs from ``data_root`` (see
    :func:`~patchcore_lib.study.engine.presets.resolve_roots`)."""
    runs = []
    executed = reports_dir / "executed"
    for notebook in notebooks:
        declared = notebook_parameters(notebook)
        values = dict(preset.get("parameters", {}))
        for prefix, overrides in preset.get("notebook_parameters", {}).items():
            if notebook.stem.startswith(str(prefix)):
                values.update(overrides or {})
        common = {"data_root": data_root, "reports_dir": str(reports_dir), "categories": list(categories)}
        per_category = "category" in declared
        for category in (categories if per_category else [None]):
            params = {**values, **common}
            if category is not None:
                params.update(_category_overrides(preset, category, notebook.stem))
                params["category"] = category
                params["data_root"] = (roots or {}).get(category, data_root)
            params = {k: v for k, v in params.items() if k in declared}
            stem = f"{notebook.stem}-{category}" if category is not None else notebook.stem
            runs.append(Run(notebook, category, params, executed / f"{stem}.ipynb", executed / f"{stem}.html",
                            data_root=params.get("data_root", data_root) or "", uses_cache="cache_dir" in declared,
                            is_report=is_report(notebook, declared)))
    return runs
