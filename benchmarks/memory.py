"""Peak memory of one block of code (a benchmark row, a stage), not of the whole process.

``resource.getrusage(...).ru_maxrss`` is the peak of the process's whole life: after a large first row every
later row reports the same number. :class:`PeakMemory` measures the block it wraps::

    from benchmarks.memory import PeakMemory

    with PeakMemory() as memory:
        model.fit(train)
    row.update(memory.as_dict())          # peak_rss_gib, peak_rss_above_start_gib, rss_at_start_gib, ...

How (Linux): a background thread reads the resident set size from ``/proc/self/statm`` every ``interval``
seconds (default 2 ms; reading it costs a few microseconds, and the thread sleeps in between, so the measured
code is not slowed down) and keeps the largest value. A spike shorter than the interval can fall between two
samples; when the block raised the process's lifetime peak (``ru_maxrss`` grew while it ran), that kernel-kept
peak is exact and is used instead. ``children=True`` also adds the resident sets of every descendant process
(Dask workers, Jupyter kernels; sampled every 20 ms at least, the process list refreshed every 0.2 s).
On CUDA (when torch is already imported and a GPU is in use), ``torch.cuda.reset_peak_memory_stats`` at entry and
``max_memory_allocated`` at exit give the block's peak of allocated GPU memory (torch's caching allocator; the
CUDA context itself is not included).

For a command run as a child process, :func:`run_child` returns the child's own peak resident set (sampled from
``/proc/<pid>/statm``, or exact from ``os.wait4``'s ``ru_maxrss`` when that is above what the child inherited).

Units: GiB (2**30 bytes) in every key ending in ``_gib``. This module imports no torch.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

GIB = 1024**3
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def current_rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (this one by default) in bytes; 0 when it cannot be read (no /proc,
    or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def lifetime_peak_rss_bytes() -> int:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


def descendant_pids(root: int | None = None) -> list[int]:
    """Process ids of every descendant of ``root`` (this process by default), from ``/proc/*/stat``."""
    root = os.getpid() if root is None else root
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: fields after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _torch_cuda(initialise: bool) -> Any:
    """torch.cuda when torch is already imported and a GPU is in use (or only usable, with ``initialise``);
    None otherwise. Never imports torch, and never starts CUDA in a CPU-only run unless asked to."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        usable = torch.cuda.is_available() and (initialise or torch.cuda.is_initialized())
        return torch.cuda if usable else None
    except Exception:  # a broken CUDA install: no GPU numbers
        return None


class PeakMemory:
    """Context manager: the peak resident set (and GPU memory) while its block runs.

    After the block: ``start_bytes`` (RSS at entry), ``peak_bytes`` (largest RSS seen, >= start), ``end_bytes``,
    ``peak_above_start_bytes``; with ``children=True`` also ``tree_peak_bytes`` (this process plus its
    descendants, summed per sample); on CUDA ``gpu_start_bytes`` and ``gpu_peak_bytes`` (torch's allocated
    memory). :meth:`as_dict` gives them in GiB under stable keys.
    """

    def __init__(self, interval: float = 0.002, children: bool = False, cuda: bool | None = None) -> None:
        """``interval``: seconds between RSS samples; ``children``: also sum the descendants' resident sets;
        ``cuda``: None = GPU numbers when CUDA is already initialised, True = whenever a GPU is usable, False =
        never."""
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.interval = float(interval)
        self.children = bool(children)
        self._cuda_wanted = cuda
        self.start_bytes = self.peak_bytes = self.end_bytes = 0
        self.tree_peak_bytes: int | None = None
        self.gpu_start_bytes: int | None = None
        self.gpu_peak_bytes: int | None = None
        self.samples = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda: Any = None

    # ------------------------------------------------------------------ sampling
    def _sample_tree(self, pids: list[int]) -> int:
        return current_rss_bytes() + sum(current_rss_bytes(pid) for pid in pids)

    def _run(self) -> None:
        tree_interval = max(self.interval, 0.02)
        pids: list[int] = []
        next_tree = next_refresh = 0.0
        while not self._stop.is_set():
            rss = current_rss_bytes()
            if rss > self.peak_bytes:
                self.peak_bytes = rss
            self.samples += 1
            if self.children:
                now = time.monotonic()
                if now >= next_refresh:
                    pids, next_refresh = descendant_pids(), now + 0.2
                if now >= next_tree:
                    self.tree_peak_bytes = max(self.tree_peak_bytes or 0, self._sample_tree(pids))
                    next_tree = now + tree_interval
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._cuda = None if self._cuda_wanted is False else _torch_cuda(initialise=self._cuda_wanted is True)
        if self._cuda is not None:
            self._cuda.synchronize()
            self._cuda.reset_peak_memory_stats()
            self.gpu_start_bytes = int(self._cuda.memory_allocated())
        self._lifetime_at_start = lifetime_peak_rss_bytes()
        self.start_bytes = self.peak_bytes = current_rss_bytes()
        if self.children:
            self.tree_peak_bytes = self._sample_tree(descendant_pids())
        self._started = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="PeakMemory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cuda is not None:
            self._cuda.synchronize()
            self.gpu_peak_bytes = int(self._cuda.max_memory_allocated())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.end_bytes = current_rss_bytes()
        self.peak_bytes = max(self.peak_bytes, self.end_bytes)
        lifetime = lifetime_peak_rss_bytes()
        if lifetime > self._lifetime_at_start:  # a new lifetime peak was reached inside the block: exact
            self.peak_bytes = max(self.peak_bytes, lifetime)
        if self.children and self.tree_peak_bytes is not None:
            self.tree_peak_bytes = max(self.tree_peak_bytes, self.peak_bytes)
        self.seconds = time.perf_counter() - self._started

    # ------------------------------------------------------------------ results
    @property
    def peak_above_start_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    @property
    def peak_above_start_gib(self) -> float:
        return self.peak_above_start_bytes / GIB

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}peak_rss_gib`` (absolute peak of the process's resident set during the block),
        ``{prefix}peak_rss_above_start_gib`` (that minus the RSS at entry: what the block itself added),
        ``{prefix}rss_at_start_gib``; with children ``{prefix}tree_peak_rss_gib``; on CUDA
        ``{prefix}peak_gpu_gib`` and ``{prefix}peak_gpu_above_start_gib``. Values rounded to 1 MiB."""
        out = {f"{prefix}peak_rss_gib": round(self.peak_gib, 4),
               f"{prefix}peak_rss_above_start_gib": round(self.peak_above_start_gib, 4),
               f"{prefix}rss_at_start_gib": round(self.start_bytes / GIB, 4)}
        if self.tree_peak_bytes is not None:
            out[f"{prefix}tree_peak_rss_gib"] = round(self.tree_peak_bytes / GIB, 4)
        if self.gpu_peak_bytes is not None and self.gpu_start_bytes is not None:
            out[f"{prefix}peak_gpu_gib"] = round(self.gpu_peak_bytes / GIB, 4)
            added = max(0, self.gpu_peak_bytes - self.gpu_start_bytes)
            out[f"{prefix}peak_gpu_above_start_gib"] = round(added / GIB, 4)
        return out


def run_child(command: Sequence[str], interval: float = 0.002,
              **kwargs: Any) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` like ``subprocess.run(command, capture_output=True, text=True, **kwargs)`` and return
    (the completed process, the child's own peak resident set in GiB).

    The kernel's ``ru_maxrss`` of the child (``os.wait4``) is exact however short the peak, but Linux folds the
    parent's high-water mark into it at ``exec`` (the child starts as a copy of this process): it is used only
    when it exceeds this process's own lifetime peak at the start. Otherwise the child's ``/proc/<pid>/statm`` as
    sampled every ``interval`` seconds is the answer."""
    kwargs.setdefault("text", True)
    timeout = kwargs.pop("timeout", None)
    parent_peak = lifetime_peak_rss_bytes()
    sampled = [0]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as process:
        outputs: dict[str, Any] = {}
        done = threading.Event()

        def read(name: str, stream: Any) -> None:
            outputs[name] = stream.read()

        def sample() -> None:
            while not done.is_set():
                sampled[0] = max(sampled[0], current_rss_bytes(process.pid))
                done.wait(interval)

        threads = [threading.Thread(target=read, args=(name, stream), daemon=True)
                   for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
        threads.append(threading.Thread(target=sample, daemon=True))
        for thread in threads:
            thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # os.wait4, not Popen.wait: it returns the child's resource usage
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                process.returncode = -9
                done.set()
                raise subprocess.TimeoutExpired(command, timeout)
            time.sleep(0.005)
        done.set()
        process.returncode = os.waitstatus_to_exitcode(status)
        for thread in threads:
            thread.join()
    kernel = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    peak = kernel if kernel > parent_peak else sampled[0]
    completed = subprocess.CompletedProcess(command, process.returncode, outputs.get("stdout"), outputs.get("stderr"))
    return completed, peak / GIB
