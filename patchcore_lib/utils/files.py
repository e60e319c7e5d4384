"""Safe output: atomic file writes (a temporary file in the same folder, then an atomic rename), writable
output folders, and the lock that keeps two studies out of one output folder."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import torch

from patchcore_lib.errors import OutputError


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync, then rename it onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {path.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old or the complete new file."""
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write ``torch.save(obj)``, streamed to the temporary file (no in-memory copy)."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"output directory {path} is not writable: {exc.strerror or exc}") from exc
    return path


@contextmanager
def output_lock(out_dir: Path, option: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for the duration of a study; refuse clearly if held
    (``option`` is the command-line option that chooses the folder, named in the message)."""
    import fcntl

    path = out_dir / ".lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(f"output directory {out_dir} is in use by another study ({holder}); "
                              f"wait for it to finish or choose another {option}") from None
        try:  # the holder removes the file when it finishes: make sure ours is still the one at `path`
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock: no stale .lock is left behind
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
