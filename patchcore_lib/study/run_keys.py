"""Skip keys of the study: when a notebook run is complete with the same inputs.

A run's hash covers the notebook's code, the parameters passed, the library code the notebook can run
(:func:`notebook_code_fingerprint`: the static import closure of its imports and of the executing task, so an
edit to one notebook's module reruns that notebook, not every one), the content fingerprint of the data it reads and, for a report notebook, the
hashes of the runs before it (whose outputs it reads); its ``.done.json`` also records the hashes of its output
files, so an emptied or replaced report is not a finished run.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import nbformat

from patchcore_lib.data import dataset_fingerprint, resolve_data_root
from patchcore_lib.utils.files import read_json_or_none
from patchcore_lib.utils.fingerprint import file_sha256
from patchcore_lib.utils.source_fingerprint import code_fingerprint, imported_names, library_modules

#: the modules that execute a notebook and write its outputs (part of every run's code)
TASK_MODULES = ("patchcore_lib.study.tasks",)


def notebook_code_hash(path: str | Path) -> str:
    """Hash of a notebook's cell sources and tags (outputs and metadata are ignored)."""
    nb = nbformat.read(str(path), as_version=4)
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.cell_type.encode())
        digest.update(json.dumps(sorted(cell.get("metadata", {}).get("tags", []))).encode())
        digest.update(cell.source.encode())
    return digest.hexdigest()


def run_hash(notebook: str | Path, params: dict[str, Any], data: Any = None) -> str:
    """Hash identifying one execution: the notebook's code, the parameters passed, the fingerprints of the
    data it reads (``data``) and the library code it can run (:func:`notebook_code_fingerprint`)."""
    payload = {"code": notebook_code_hash(notebook), "parameters": params, "data": data,
               "library": notebook_code_fingerprint(notebook)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def notebook_code_fingerprint(path: str | Path) -> str:
    """``<version>+<sha256>`` of the library sources a notebook can run: the import closure of its imports
    and of :data:`TASK_MODULES` (:func:`~patchcore_lib.utils.source_fingerprint.code_fingerprint`)."""
    return _fingerprint_of(tuple(sorted({*notebook_modules(path), *TASK_MODULES})))


def data_fingerprints(data_root: str, categories: Sequence[str], roots: dict[str, str] | None = None
                      ) -> dict[str, str]:
    """Content fingerprint of each category's data (its own root from ``roots``, else ``data_root``; the
    synthetic set, generated if missing, for a synthetic category without a root)."""
    out = {}
    for category in categories:
        root = (roots or {}).get(category) or data_root
        if not root:
            root = str(resolve_data_root("", category, download=False)[0])
        out[category] = dataset_fingerprint(root, category)
    return out


def output_hashes(outputs: Sequence[Path]) -> dict[str, str]:
    return {Path(p).name: file_sha256(p) for p in outputs if Path(p).is_file()}


def is_complete(done_path: Path, expected_hash: str, outputs: Sequence[Path]) -> bool:
    """True when ``done_path`` records ``expected_hash`` and every output file exists with the content it
    recorded (an emptied or replaced report is not a finished run)."""
    record = read_json_or_none(done_path)
    if not isinstance(record, dict) or record.get("hash") != expected_hash:
        return False
    if not all(Path(p).is_file() for p in outputs):
        return False
    recorded = record.get("outputs")
    return isinstance(recorded, dict) and recorded == output_hashes(outputs)


def assign_hashes(runs: list[dict[str, Any]], fingerprints: dict[str, str] | None = None) -> None:
    """Set each run's ``hash``: code, parameters, library and the content fingerprint of its category (all
    categories for once-only notebooks); a report notebook's hash also holds the hashes of the runs before it,
    whose outputs it reads, so a changed evaluation never leaves a stale report."""
    fingerprints = fingerprints or {}
    earlier: list[str] = []
    for run in runs:
        data: Any = fingerprints.get(run["category"]) if run["category"] is not None else dict(fingerprints)
        if "report" in run["notebook"].stem:
            data = {"data": data, "runs": list(earlier)}
        run["hash"] = run_hash(run["notebook"], run["parameters"], data)
        run["inputs"] = {"library": notebook_code_fingerprint(run["notebook"]), "data": data}  # recorded in .done.json
        earlier.append(run["hash"])
