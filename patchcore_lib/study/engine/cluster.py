"""Where the study's units of work run: Dask distributed clusters, and the client-side scheduling loop.

``--cluster`` chooses (:func:`resolve_cluster`):

* ``local`` (default): a :class:`distributed.LocalCluster` of worker *processes* sized to this machine; with
  GPUs, one worker per GPU (dask-cuda's ``LocalCUDACluster`` when installed, else one nanny per GPU with its
  own ``CUDA_VISIBLE_DEVICES``), each advertising the Dask resource ``GPU=1``;
* ``tcp://HOST:PORT`` (or any scheme Dask knows; also ``$DASK_SCHEDULER_ADDRESS``): an existing scheduler,
  e.g. started by dask-jobqueue on Slurm/PBS or by dask-kubernetes;
* ``none``: no Dask at all, today's in-process sequential execution.

:func:`run_units` submits units whose dependencies have finished, hands each result to the caller (who
writes files atomically on the client), and logs progress: units done / total and what every worker runs.
A worker that dies mid-task is replaced by Dask and its task re-run elsewhere
(``distributed.scheduler.allowed-failures`` times); the caller only ever sees complete results.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from patchcore_lib.errors import ConfigError

#: the ``--cluster`` values that are no scheduler address
LOCAL, NONE = "local", "none"
SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def resolve_cluster(option: str | None) -> str:
    """``--cluster`` value -> ``"local"``, ``"none"`` or a scheduler address.

    Not given: ``$DASK_SCHEDULER_ADDRESS`` when set, else ``local``. A bare ``HOST:PORT`` gets ``tcp://``.
    """
    value = (option if option is not None else os.environ.get("DASK_SCHEDULER_ADDRESS") or LOCAL).strip()
    if value.lower() in (LOCAL, NONE):
        return value.lower()
    if value.startswith(SCHEMES):
        return value
    host, sep, port = value.rpartition(":")
    if sep and host and port.isdigit():
        return f"tcp://{value}"
    raise ConfigError(f"--cluster {value!r}: expected 'local', 'none' or a scheduler address such as "
                      f"tcp://HOST:8786 (also read from DASK_SCHEDULER_ADDRESS)")


def local_sizing(cpus: int | None = None, gpus: int = 0) -> tuple[int, int]:
    """(workers, torch threads per worker) of the default local cluster.

    One worker per GPU when there are GPUs (the CPU cores are split among them); on CPU only, tasks of up to
    4 threads: 2 cores -> 2 x 1, 8 -> 4 x 2, 16 -> 4 x 4, 64 -> 16 x 4.
    """
    cpus = max(1, cpus or os.cpu_count() or 1)
    if gpus > 0:
        return gpus, max(1, cpus // gpus)
    threads = min(4, max(1, cpus // 4))
    return max(1, cpus // threads), threads


def _thread_env(threads: int) -> dict[str, str]:
    """Worker environment: BLAS/OpenMP threads per task (Dask's default is 1) for torch and notebook kernels."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATCHCORE_THREADS")
    return {name: str(threads) for name in names}


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def start_local_cluster(workers: int | None = None, threads: int | None = None, dashboard: str = ":8787",
                        gpus: int | None = None) -> Any:
    """A local cluster of worker processes (one task at a time each); see :func:`local_sizing`."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = _gpu_count() if gpus is None else gpus
    default_workers, default_threads = local_sizing(gpus=gpus)
    workers, threads = workers or default_workers, threads or default_threads
    env = _thread_env(threads)
    common = dict(dashboard_address=dashboard, silence_logs=logging.ERROR)
    if gpus > 0:
        try:
            from dask_cuda import LocalCUDACluster  # optional: pins one GPU per worker itself
        except ImportError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None:
            return LocalCUDACluster(n_workers=min(workers, gpus), threads_per_worker=1, resources={"GPU": 1},
                                    memory_limit=0, env=env, **common)
        specs = {f"gpu-{i}": {"cls": Nanny, "options": {
            "nthreads": 1, "memory_limit": 0, "resources": {"GPU": 1}, "name": f"gpu-{i}",
            "env": {**env, "CUDA_VISIBLE_DEVICES": str(i)}}} for i in range(min(workers, gpus))}
        return SpecCluster(workers=specs, scheduler={"cls": Scheduler,
                                                     "options": {"dashboard_address": dashboard}},
                           silence_logs=logging.ERROR)
    # memory_limit=0: the nanny must not kill a worker for the memory a large category's features need
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0, env=env,
                        **common)


@contextmanager
def open_client(cluster: str, workers: int | None = None, threads: int | None = None, dashboard: str = ":8787",
                log: Callable[[str], None] = print) -> Iterator[Any]:
    """A :class:`distributed.Client` of ``cluster`` (``local`` or an address); closed (and a local cluster
    shut down) on exit. Logs the scheduler, the workers and the dashboard address."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError(f"--cluster {cluster} needs Dask distributed: pip install 'patchcore_lib[cluster]' "
                          f"(or use --cluster none)") from exc
    local = None
    try:
        if cluster == LOCAL:
            local = start_local_cluster(workers, threads, dashboard)
            client = Client(local)
        else:
            try:
                client = Client(cluster, timeout="30s")
            except OSError as exc:
                raise ConfigError(f"--cluster {cluster}: cannot reach the Dask scheduler ({exc})") from exc
        try:
            info = client.scheduler_info()
            n = len(info.get("workers", {}))
            log(f"dask: scheduler {info.get('address', cluster)}, {n} worker(s)"
                f"{' (local processes)' if local is not None else ''}; dashboard: {client.dashboard_link}")
            yield client
        finally:
            client.close()
    finally:
        if local is not None:
            local.close()


def cluster_has_gpus(client: Any) -> bool:
    """True when a connected worker advertises the Dask resource ``GPU``."""
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers.values())


@dataclass
class Unit:
    """One unit of work: ``function(argument())`` on a worker, after the units named in ``depends``.

    ``argument`` is called on the client when the unit is submitted (so it can read files its
    dependencies wrote); ``resources`` are Dask resources the worker must offer (e.g. ``{"GPU": 1}``);
    ``expected_seconds``: how long it took last time (0: unknown), see :func:`critical_path_seconds`.
    """

    key: str
    function: Callable[[Any], Any]
    argument: Callable[[], Any]
    depends: tuple[str, ...] = ()
    resources: dict[str, float] | None = None
    label: str = ""
    expected_seconds: float = 0.0
    submitted: float = field(default=0.0, repr=False)


def critical_path_seconds(units: Sequence[Unit]) -> dict[str, float]:
    """Per unit key: its ``expected_seconds`` plus the longest chain of expected seconds of the units that
    (directly or not) wait for it -- how long the study takes after the unit starts, with workers to spare."""
    dependents: dict[str, list[str]] = {u.key: [] for u in units}
    for unit in units:
        for dependency in unit.depends:
            dependents.setdefault(dependency, []).append(unit.key)
    expected = {u.key: u.expected_seconds for u in units}
    path: dict[str, float] = {}

    def length(key: str, seen: tuple[str, ...] = ()) -> float:
        if key not in path:
            if key in seen:
                raise ConfigError(f"units {list(seen)} depend on each other (dependency cycle)")
            path[key] = expected.get(key, 0.0) + max(
                (length(d, seen + (key,)) for d in dependents.get(key, [])), default=0.0)
        return path[key]

    return {u.key: length(u.key) for u in units}


def ready_units(waiting: Sequence[Unit], finished: set[str], priority: dict[str, float]) -> list[Unit]:
    """The units of ``waiting`` whose dependencies have finished, highest ``priority`` first (e.g. each unit's
    :func:`critical_path_seconds`, computed once for the whole run; ties and unknown units keep their order):
    the notebooks that hold up the most work start early instead of leaving one worker busy at the end while
    the others idle."""
    ready = [u for u in waiting if all(d in finished for d in u.depends)]
    return sorted(ready, key=lambda u: -priority.get(u.key, 0.0))


def _short(address: str) -> str:
    return address.split("://", 1)[-1]


def worker_states(client: Any, names: dict[str, str]) -> str:
    """``host:port running <unit> | idle`` for every worker (``names``: Dask key -> unit key)."""
    try:
        processing = client.processing()
    except Exception:  # the scheduler is going away: progress is best effort
        return ""
    parts = []
    for address in sorted(processing):
        keys = [names.get(str(k), str(k)) for k in processing[address]]
        parts.append(f"{_short(address)} {'running ' + ', '.join(keys) if keys else 'idle'}")
    return "; ".join(parts)


def task_slots(client: Any) -> int:
    """How many tasks the connected workers run at once (their threads; at least 1 while none is there)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def run_units(client: Any, units: Sequence[Unit], on_result: Callable[[Unit, Any], str],
              on_error: Callable[[Unit, BaseException], str], log: Callable[[str], None] = print,
              poll_seconds: float = 5.0) -> None:
    """Run ``units`` on ``client``: each as soon as its dependencies have finished (whatever their outcome).

    At most as many units are handed to Dask as the workers have task slots (re-read every
    ``poll_seconds``, so workers that join later are used): no worker holds a queue of long tasks while
    another idles, and the per-worker state shows what really runs. ``on_result(unit, result)`` /
    ``on_error(unit, exception)`` run on the client as each unit finishes and return a short status for the
    progress line ``[done/total] unit: status | worker states``.
    """
    from distributed import wait

    by_key = {u.key: u for u in units}
    for unit in units:
        missing = [d for d in unit.depends if d not in by_key]
        if missing:
            raise ConfigError(f"unit {unit.key} depends on unknown units {missing}")
    waiting = list(units)
    priority = critical_path_seconds(units)
    finished: set[str] = set()
    in_flight: dict[Any, Unit] = {}
    labels: dict[str, str] = {}
    token = uuid.uuid4().hex[:8]

    def submit_ready() -> None:
        slots = task_slots(client) - len(in_flight)
        for unit in ready_units(waiting, finished, priority)[:max(0, slots)]:
            waiting.remove(unit)
            unit.submitted = time.perf_counter()
            future = client.submit(unit.function, unit.argument(), key=f"{unit.key}-{token}", pure=False,
                                   resources=unit.resources, retries=0)
            labels[str(future.key)] = unit.label or unit.key
            in_flight[future] = unit

    total = len(units)
    while len(finished) < total:
        submit_ready()
        if not in_flight:
            raise ConfigError(f"units {[u.key for u in waiting]} can never run (dependency cycle)")
        try:
            done = wait(list(in_flight), timeout=poll_seconds, return_when="FIRST_COMPLETED").done
        except (TimeoutError, asyncio.TimeoutError):  # nothing finished yet: look again for new workers
            continue
        for future in done:
            unit = in_flight.pop(future)
            try:
                result, error = future.result(), None
            except Exception as exc:  # the task raised, or its worker died too often (KilledWorker)
                result, error = None, exc
            finally:
                future.release()
            status = on_result(unit, result) if error is None else on_error(unit, error)
            finished.add(unit.key)
            submit_ready()
            states = worker_states(client, labels)
            log(f"[{len(finished)}/{total}] {unit.label or unit.key}: {status}" + (f" | {states}" if states else ""))


def add_cluster_options(parser: Any) -> None:
    """``--cluster``, ``--workers``, ``--threads``, ``--dashboard`` (shared by ``run`` and ``sweep``)."""
    workers, threads = local_sizing()
    parser.add_argument("--cluster", default=None,
                        help="where tasks run: 'local' (default; a Dask LocalCluster of processes, one worker per "
                             "GPU when there are GPUs), a scheduler address such as tcp://HOST:8786 (default "
                             "$DASK_SCHEDULER_ADDRESS when set), or 'none' (in this process, one after another)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"workers of the local cluster (default here: {workers})")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch/BLAS threads per local worker (default here: {threads})")
    parser.add_argument("--dashboard", default=":8787",
                        help="dashboard address of the local cluster (':0' for any free port)")
