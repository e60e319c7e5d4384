"""One content-addressed store for everything resumable: one key function, one layout, one integrity check.

Every result that is reused instead of recomputed (patch features, coreset-ablation rows, notebook runs,
evaluated categories, predictions, sweep points) is looked up here by a key made by :func:`content_key` from
the code that computes it, its parameters and the content of its data. Machine paths never enter a key: a
path enters as the content fingerprint of what it points to (:func:`path_fingerprint`).

Layout (a store is any folder; results written next to their user-visible outputs use ``<out>/.store``)::

    <root>/<kind>/<key>.json     the record: key, kind, slot, value (JSON), output hashes, checksum
    <root>/<kind>/<key>.pt       the tensors of a record, when it has any (sealed, checked on load)

A record is used only when its checksum matches its content, its key is the one asked for, and every output
file it lists (relative to the store's ``base`` folder, by default the folder holding ``.store``) exists with
the SHA-256 recorded when it was written; anything else counts as missing and the result is recomputed.
Records are written atomically, last (after their outputs). ``slot`` names what a record stands for (e.g. a
notebook run ``04_evaluate-bottle``): writing a record removes the older records of its slot, so a store
next to outputs holds one record per output, never a stale one beside it.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from patchcore_lib.utils.files import atomic_torch_save, atomic_write_text, read_json_or_none
from patchcore_lib.utils.fingerprint import cache_base, file_sha256, files_under, tree_fingerprint
from patchcore_lib.utils.integrity import checksum_problem, seal

STORE_FORMAT = "patchcore_lib.store/1"
STORE_FOLDER = ".store"


def canonical_json(value: Any) -> str:
    """The JSON text a key hashes: sorted keys, tuples as lists, other objects by ``str``."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def content_key(kind: str, *, code: Any, params: Any = None, data: Any = None) -> str:
    """The key of a result: SHA-256 (32 hex digits) of its kind, the fingerprint of the code that computes it,
    its parameters and the content fingerprint(s) of its data (JSON-serialisable values)."""
    payload = {"format": STORE_FORMAT, "kind": kind, "code": code, "params": params, "data": data}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]


def path_fingerprint(path: str | os.PathLike | None) -> str:
    """What a path parameter contributes to a key: ``""`` for none, ``file:<sha256>`` of a file's bytes,
    ``tree:<sha256>`` over the relative paths and contents of a folder's files (symbolic links followed),
    ``missing`` when nothing is there. Never the path itself."""
    if path is None or str(path) == "":
        return ""
    target = Path(path).expanduser()
    if target.is_file():
        return "file:" + file_sha256(target)
    if target.is_dir():
        return "tree:" + tree_fingerprint(target, files_under(target))
    return "missing"


def file_parameter(value: Any) -> Any:
    """A parameter that may name a file (e.g. ``weights``) as it enters a key: the content fingerprint of the
    file or folder it names (:func:`path_fingerprint`), else the value itself (``None``, ``"random"``)."""
    if isinstance(value, str) and value and Path(value).expanduser().exists():
        return path_fingerprint(value)
    return value


def default_store_root() -> Path:
    """The store of results not tied to an output folder (features, ablation rows):
    ``$PATCHCORE_CACHE/store`` (default ``~/.cache/patchcore_lib/store``)."""
    return cache_base() / "store"


class Store:
    """A folder of records (see the module docstring). ``root`` None: a disabled store (nothing is found,
    nothing is written). ``base``: the folder output paths are recorded relative to (default: ``root``'s
    parent)."""

    def __init__(self, root: str | os.PathLike | None, base: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.base = Path(base) if base is not None else (self.root.parent if self.root is not None else None)

    @classmethod
    def beside(cls, folder: str | os.PathLike) -> "Store":
        """The store of an output folder: ``<folder>/.store``, outputs recorded relative to ``folder``."""
        return cls(Path(folder) / STORE_FOLDER, folder)

    def _path(self, kind: str, key: str, suffix: str = ".json") -> Path:
        assert self.root is not None
        return self.root / kind / f"{key}{suffix}"

    def _relative(self, path: str | os.PathLike) -> str:
        assert self.base is not None
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(self.base))).as_posix()

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The whole record of ``key`` when it is valid (checksum, key, outputs unchanged), else None."""
        if self.root is None:
            return None
        record = read_json_or_none(self._path(kind, key))
        if not isinstance(record, dict) or checksum_problem(record) is not None:
            return None
        if record.get("format") != STORE_FORMAT or record.get("kind") != kind or record.get("key") != key:
            return None
        outputs = record.get("outputs")
        if not isinstance(outputs, dict):
            return None
        for name, digest in outputs.items():
            try:
                if file_sha256(self.base / name) != digest:
                    return None
            except OSError:
                return None
        return record

    def lookup(self, kind: str, key: str, require: Iterable[str | os.PathLike] = ()) -> Any | None:
        """The stored value of ``key`` (None when absent or not valid); ``require``: outputs that must be among
        the record's (e.g. a model file asked for this time)."""
        record = self.record(kind, key)
        if record is None:
            return None
        if any(self._relative(p) not in record["outputs"] for p in require):
            return None
        return record.get("value")

    def save(self, kind: str, key: str, value: Any = None, outputs: Iterable[str | os.PathLike] = (),
             slot: str | None = None, **info: Any) -> None:
        """Record ``value`` (JSON) for ``key`` with the hashes of ``outputs`` (written before: call this last).
        ``info``: extra fields shown in the record (durations, workers), never compared."""
        if self.root is None:
            return
        hashes = {self._relative(p): file_sha256(p) for p in outputs}
        record = seal(json.loads(json.dumps({"format": STORE_FORMAT, "kind": kind, "key": key, "slot": slot,
                                             "value": value, "outputs": hashes, **info}, default=str)))
        if slot is not None:
            self.forget_slot(kind, slot, keep=key)
        atomic_write_text(self._path(kind, key), json.dumps(record, indent=1, default=str))

    def latest(self, kind: str, slot: str) -> dict[str, Any] | None:
        """The record of ``slot`` whatever its key (valid or not: e.g. the last run's duration), else None."""
        for path in self._slot_records(kind, slot):
            return read_json_or_none(path)
        return None

    def _slot_records(self, kind: str, slot: str) -> list[Path]:
        folder = self.root / kind if self.root is not None else None
        if folder is None or not folder.is_dir():
            return []
        found = []
        for path in folder.glob("*.json"):
            record = read_json_or_none(path)
            if isinstance(record, dict) and record.get("slot") == slot:
                found.append(path)
        return found

    def forget_slot(self, kind: str, slot: str, keep: str | None = None) -> None:
        """Remove the records (and tensors) of ``slot``, except the one of ``keep``: its outputs are about to
        be replaced."""
        for path in self._slot_records(kind, slot):
            if path.stem != keep:
                path.unlink(missing_ok=True)
                path.with_suffix(".pt").unlink(missing_ok=True)

    def load_tensors(self, kind: str, key: str) -> dict[str, Any] | None:
        """The tensor payload of ``key`` (its record valid, its own checksum and key matching), else None."""
        if self.record(kind, key) is None:
            return None
        torch = importlib.import_module("torch")  # here: records without tensors (predictions, runs) need none
        try:
            payload = torch.load(io.BytesIO(self._path(kind, key, ".pt").read_bytes()), map_location="cpu",
                                 weights_only=True)
        except Exception:
            return None
        if not isinstance(payload, dict) or payload.get("key") != key or checksum_problem(payload) is not None:
            return None
        return payload

    def save_tensors(self, kind: str, key: str, payload: Mapping[str, Any], value: Any = None) -> None:
        """Store a dict of tensors (and JSON values) for ``key``, then its record (``value``)."""
        if self.root is None:
            return
        atomic_torch_save(seal({**payload, "key": key}), self._path(kind, key, ".pt"))
        self.save(kind, key, value)
