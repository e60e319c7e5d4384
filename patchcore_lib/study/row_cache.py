"""A cache of finished result rows, one JSON file per row, for ablations that take hours on a CPU.

A row's key is the content of its inputs (:func:`content_digest` of the cached features and test targets), the
options that make the row (sampler, ratio, seed, the model config, ...) and the fingerprint of the library code
that computes it. An ablation interrupted, or extended by more ratios later, computes only the rows it does not
have; a row of other inputs, options or code is never reused. Files are written atomically; an unreadable one
counts as missing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchcore_lib.study.cache import default_cache_dir
from patchcore_lib.utils.files import atomic_write_text, read_json_or_none

ROW_FORMAT = "patchcore_lib.rows/1"


def content_digest(*arrays: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of the shapes, dtypes and bytes of tensors / arrays (hashed in place, no copy of a contiguous one)."""
    digest = hashlib.sha256()
    for array in arrays:
        data = np.ascontiguousarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
        digest.update(f"{data.shape}|{data.dtype}|".encode())
        digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def row_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``<feature cache dir>/rows`` (default: under ``$PATCHCORE_CACHE/features``)."""
    return Path(cache_dir or default_cache_dir()) / "rows"


class RowCache:
    """Rows of one computation (``name``) on one set of inputs (``inputs``: a :func:`content_digest`) by one
    version of the code (``code``); ``folder`` None disables it (every row is computed)."""

    def __init__(self, folder: str | Path | None, name: str, inputs: str, code: str) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.base = {"format": ROW_FORMAT, "name": name, "inputs": inputs, "code": code}

    def key(self, **options: Any) -> str:
        """The file name of the row made with ``options`` (JSON-serialisable)."""
        payload = json.dumps({**self.base, "options": options}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored row, None when absent, unreadable or not of this computation."""
        if self.folder is None:
            return None
        record = read_json_or_none(self.folder / f"{key}.json")
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("row"), dict):
            return None
        return record["row"]

    def put(self, key: str, row: dict[str, Any]) -> None:
        """Store ``row`` (JSON-serialisable) atomically."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / f"{key}.json",
                              json.dumps({"key": key, **self.base, "row": row}, default=float))
