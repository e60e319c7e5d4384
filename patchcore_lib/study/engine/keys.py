"""Keys of notebook runs: when a run of the study is complete with the same inputs.

A run's key (:func:`~patchcore_lib.utils.store.content_key`) covers the notebook's code, the library code it
can run (:func:`notebook_code_fingerprint`: the static import closure of its imports and of the executing task,
so an edit to one notebook's module reruns that notebook, not every one), its parameters with every path
replaced by the content of what it points to (:func:`key_parameters`), the content fingerprint of the data it
reads and, for a report notebook, the keys of the runs before it (whose outputs it reads). The record in the
reports folder's store also holds the hashes of the run's output files, so an emptied or replaced report is
not a finished run.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import nbformat

from patchcore_lib.data import dataset_fingerprint, resolve_data_root
from patchcore_lib.study.engine.plan import Run
from patchcore_lib.utils.source_fingerprint import code_fingerprint, code_manifest, imported_names, library_modules
from patchcore_lib.utils.store import content_key, file_parameter

#: the modules that execute a notebook and write its outputs (part of every run's code)
TASK_MODULES = ("patchcore_lib.study.engine.tasks",)
#: the store kind of a notebook run (``<reports>/.store/notebook/``)
NOTEBOOK = "notebook"
#: parameters naming where data, outputs or caches are: their content enters a key as data fingerprints and
#: earlier runs' keys, never the location (a study regenerated from another checkout has the same keys)
LOCATION_PARAMETERS = ("data_root", "reports_dir", "cache_dir")
#: parameters that may name a file whose content matters (a weights file): its SHA-256 enters the key
FILE_PARAMETERS = ("weights",)


def notebook_code_hash(path: str | Path) -> str:
    """Hash of a notebook's cell sources and tags (outputs and metadata are ignored)."""
    nb = nbformat.read(str(path), as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.cell_type.encode())
        digest.update(json.dumps(sorted(cell.get("metadata", {}).get("tags", []))).encode())
        digest.update(cell.source.encode())
    return digest.hexdigest()


def key_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as they enter a key: no location (:data:`LOCATION_PARAMETERS`), a file named by a
    :data:`FILE_PARAMETERS` value by its content."""
    out = {k: v for k, v in params.items() if k not in LOCATION_PARAMETERS}
    for name in FILE_PARAMETERS:
        if name in out:
            out[name] = file_parameter(out[name])
    return out


def run_key(notebook: str | Path, params: dict[str, Any], data: Any = None) -> str:
    """The store key of one execution: the notebook's code and the library code it can run
    (:func:`notebook_code_fingerprint`), its parameters (:func:`key_parameters`) and the fingerprints of the
    data it reads (``data``)."""
    return content_key(NOTEBOOK, **_key_inputs(notebook, params), data=data)


def _key_inputs(notebook: str | Path, params: dict[str, Any]) -> dict[str, Any]:
    """The ``code`` and ``params`` a run's key is made of (each computed once: a weights file is hashed once)."""
    return {"code": {"notebook": notebook_code_hash(notebook), "library": notebook_code_fingerprint(notebook)},
            "params": key_parameters(params)}


def notebook_modules(path: str | Path) -> list[str]:
    """The modules a notebook's code cells import (IPython magics and shell lines left out); every module of
    the library when a cell cannot be parsed (a key then covers too much, never too little)."""
    names: set[str] = set()
    for cell in nbformat.read(str(path), as_version=4).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            names |= imported_names(source)
        except SyntaxError:
            return library_modules()
    return sorted(names)


@functools.cache
def _fingerprint_of(modules: tuple[str, ...]) -> str:
    return code_fingerprint(modules)


def _closure_roots(path: str | Path) -> tuple[str, ...]:
    return tuple(sorted({*notebook_modules(path), *TASK_MODULES}))


def notebook_code_fingerprint(path: str | Path) -> str:
    """``<version>+<sha256>`` of the library sources a notebook can run: the import closure of its imports
    and of :data:`TASK_MODULES` (:func:`~patchcore_lib.utils.source_fingerprint.code_fingerprint`)."""
    return _fingerprint_of(_closure_roots(path))


@functools.cache
def _manifest_of(modules: tuple[str, ...]) -> dict[str, str]:
    return code_manifest(modules)


def notebook_code_manifest(path: str | Path) -> dict[str, str]:
    """``{library file: hash}`` behind :func:`notebook_code_fingerprint`: which module changed, for
    ``--check``."""
    return dict(_manifest_of(_closure_roots(path)))


def category_root(category: str, data_root: str, roots: Mapping[str, str] | None = None) -> str:
    """The data root of ``category``: its own from ``roots``, else ``data_root``; the synthetic set (generated if
    missing) for a synthetic category without a root."""
    root = (roots or {}).get(category) or data_root
    return root or str(resolve_data_root("", category, download=False)[0])


def data_fingerprints(data_root: str, categories: Sequence[str], roots: Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """Content fingerprint of each category's data (:func:`category_root`)."""
    return {category: dataset_fingerprint(category_root(category, data_root, roots), category)
            for category in categories}


def rekey_report(report: Run, record_checksum: Callable[[str], str | None]) -> None:
    """A report's key over what it reads now: the keys of the runs it summarises (set by :func:`assign_keys`)
    and, for each, the checksum of its finished record (None while it has none). A run finished, re-run or
    lost since the report was made changes the report's key, so the report is never current over other outputs."""
    data = dict(report.inputs["data"])
    data["outputs"] = [record_checksum(key) for key in data["runs"]]
    inputs = _key_inputs(report.notebook, report.parameters)
    report.key = content_key(NOTEBOOK, **inputs, data=data)
    report.inputs = {**report.inputs, "data": data}


def assign_keys(runs: list[Run], fingerprints: dict[str, str] | None = None) -> None:
    """Set each run's ``key``: code, parameters, library and the content fingerprint of its category (all
    categories for a report notebook, with the keys of the runs before it, whose outputs it reads, so a changed
    evaluation never leaves a stale report)."""
    fingerprints = fingerprints or {}
    earlier: list[str] = []
    for run in runs:
        data: Any = fingerprints.get(run.category) if run.category is not None else dict(fingerprints)
        if run.is_report:
            data = {"data": data, "runs": list(earlier)}
        inputs = _key_inputs(run.notebook, run.parameters)
        run.key = content_key(NOTEBOOK, **inputs, data=data)  # = run_key(run.notebook, run.parameters, data)
        # recorded beside the result: what ``--check`` compares to explain a changed key (engine.check)
        run.inputs = {"library": inputs["code"]["library"], "notebook": inputs["code"]["notebook"],
                      "modules": notebook_code_manifest(run.notebook), "parameters": inputs["params"], "data": data}
        earlier.append(run.key)
