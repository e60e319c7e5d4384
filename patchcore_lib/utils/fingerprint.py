"""Content fingerprints of file trees, with an on-disk cache of file hashes so that re-hashing is cheap.

A file's SHA-256 is reused only while its path, size, mtime (ns), ctime (ns) and inode are those it was
hashed with; any write to the file changes its ctime, so a same-size overwrite (even with the old mtime
restored) is hashed again. The cache is one small JSON file per folder under
``$PATCHCORE_CACHE/fingerprints`` (default ``~/.cache/patchcore_lib/fingerprints``), written atomically;
when it cannot be read or written, files are simply hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from patchcore_lib.errors import OutputError
from patchcore_lib.utils.files import atomic_write_text

_CHUNK = 1 << 20
CACHE_VERSION = 1


def cache_base() -> Path:
    """``$PATCHCORE_CACHE`` or ``~/.cache/patchcore_lib``."""
    return Path(os.environ.get("PATCHCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "patchcore_lib"))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _cache_path(folder: Path) -> Path:
    name = hashlib.sha256(str(folder).encode()).hexdigest()[:24]
    return cache_base() / "fingerprints" / f"{name}.json"


def _read_cache(path: Path, folder: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("folder") != str(folder):
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def files_under(folder: str | os.PathLike) -> list[Path]:
    """Every regular file under ``folder``, folders reached through symbolic links followed (``os.walk`` with
    ``followlinks``: ``Path.rglob`` does not follow them on Python 3.11)."""
    files = (Path(dirpath) / name for dirpath, _, names in os.walk(Path(folder), followlinks=True) for name in names)
    return [path for path in files if path.is_file()]


def tree_manifest(folder: str | os.PathLike, files: Iterable[Path], use_cache: bool = True) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of each of ``files`` (all under ``folder``), in path order; file hashes
    come from the on-disk cache while a file's stat is unchanged."""
    folder = Path(folder)
    cache_file = _cache_path(folder.resolve())
    cached = _read_cache(cache_file, folder.resolve()) if use_cache else {}
    fresh: dict[str, list] = {}
    manifest: dict[str, list] = {}
    for relative in sorted(Path(f).relative_to(folder).as_posix() for f in files):
        path = folder / relative
        stat = path.stat()  # follows symbolic links: the content is what counts
        key = _stat_key(stat)
        entry = cached.get(relative)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == key:
            content = entry[1]
        else:
            content = file_sha256(path)
        fresh[relative] = [key, content]
        manifest[relative] = [stat.st_size, content]
    if use_cache and fresh != cached:
        try:
            atomic_write_text(cache_file, json.dumps({"version": CACHE_VERSION, "folder": str(folder.resolve()),
                                                      "files": fresh}))
        except OutputError:
            pass  # a read-only home: the fingerprint is still right, only slower next time
    return manifest


def manifest_fingerprint(manifest: dict[str, list]) -> str:
    """SHA-256 over a :func:`tree_manifest`'s relative paths, sizes and content hashes."""
    digest = hashlib.sha256()
    for relative in sorted(manifest):
        size, content = manifest[relative]
        digest.update(f"{relative}\t{size}\t{content}\n".encode())
    return digest.hexdigest()


def tree_fingerprint(folder: str | os.PathLike, files: Iterable[Path], use_cache: bool = True) -> str:
    """SHA-256 over the relative path, size and content hash of each of ``files`` (all under ``folder``)."""
    return manifest_fingerprint(tree_manifest(folder, files, use_cache))
