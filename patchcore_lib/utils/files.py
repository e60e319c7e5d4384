"""Safe output: atomic file writes (a temporary file in the same folder, then an atomic rename), writable
output folders, and the lock that keeps two studies out of one output folder.

Temporary files are named ``.<name>.<8 random characters>.tmp`` (:data:`TEMP_PATTERN`); a run killed
with SIGKILL leaves them behind, and the next run that takes the folder's lock removes them. Files get the
permissions of the user's umask (``0666 & ~umask``), as with a plain ``open``."""
from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import filelock  # output-folder locks on POSIX and Windows (a dependency; installed with torch too)

from patchcore_lib.errors import OutputError

#: names of this module's temporary files (``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``)
TEMP_PATTERN = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode a plain create would have."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


class _Recorder:
    """File wrapper that remembers the OSError of a failed write (torch reports it as a RuntimeError)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync, then rename it onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {path.parent}: {exc.strerror or exc}") from exc
    recorder = None
    try:
        with os.fdopen(fd, "wb") as handle:
            recorder = _Recorder(handle)
            write(recorder)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        failed = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(failed, OSError):  # disk full, quota, file size limit: one line naming the file
            raise OutputError(f"cannot write {path}: {failed.strerror or failed}") from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old or the complete new file."""
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write ``torch.save(obj)``, streamed to the temporary file (no in-memory copy). torch is
    imported here, not with this module: writing CSV and JSON (``patchcore predict`` with an ONNX model) needs none."""
    torch = importlib.import_module("torch")
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def read_json_or_none(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object of ``path``, or None when it is missing or unreadable (a record still being written
    atomically never appears half-written, so None means: not there)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"output directory {path} is not writable: {exc.strerror or exc}") from exc
    return path


@contextmanager
def output_lock(out_dir: Path, option: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (its ``.lock`` file, through :mod:`filelock`: ``flock`` on
    POSIX, ``msvcrt`` on Windows) for the duration of a run; refuse clearly if another process holds it
    (``option`` is the command-line option that chooses the folder, named in the message)."""
    path = Path(out_dir) / ".lock"
    while True:
        try:  # the holder's note, read before trying (a contender's open may truncate the file)
            holder = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            holder = ""
        lock = filelock.FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise OutputError(f"output directory {out_dir} is in use by another run ({holder or 'pid unknown'}); "
                              f"wait for it to finish or choose another {option}") from None
        if path.exists():  # the previous holder removes the file as it finishes: ours must still be at `path`
            break
        lock.release()
    try:
        with open(path, "w") as note:
            note.write(f"pid {os.getpid()}")
    except OSError:
        pass
    remove_stale_temporaries(out_dir)  # only we write here now: temporaries are leftovers of killed runs
    try:
        yield
    finally:
        if os.name == "posix":  # removed while still held: no stale .lock is left behind
            path.unlink(missing_ok=True)
        lock.release()
        if os.name != "posix":  # Windows cannot remove a locked file
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete this module's temporary files (:data:`TEMP_PATTERN`) under ``folder``; call it only while
    holding the folder's :func:`output_lock`. Returns the removed paths."""
    removed = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if TEMP_PATTERN.fullmatch(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed.append(Path(dirpath) / name)
                except OSError:
                    pass
    return removed
