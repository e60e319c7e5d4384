"""Skip keys of the study: when a notebook run is complete with the same inputs.

A run's hash covers the notebook's code, the parameters passed, the library's sources
(:func:`library_fingerprint`), the content fingerprint of the data it reads and, for a report notebook, the
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

from patchcore_lib import __version__
from patchcore_lib.data import dataset_fingerprint, resolve_data_root
from patchcore_lib.utils.files import read_json_or_none
from patchcore_lib.utils.fingerprint import file_sha256


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
    data it reads (``data``) and the library (:func:`library_fingerprint`)."""
    payload = {"code": notebook_code_hash(notebook), "parameters": params, "data": data,
               "library": library_fingerprint()}
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
        run["inputs"] = {"library": library_fingerprint(), "data": data}  # recorded in .done.json
        earlier.append(run["hash"])
