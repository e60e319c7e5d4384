"""One unit of work of the study: one notebook for one category and parameter set, runnable on any worker.

A worker need not share a filesystem with the client. :func:`execute_notebook_task` runs the notebook in a
private staging folder that stands in for the reports folder (the notebook's ``reports_dir`` points there,
and the input files the client shipped, e.g. the ``metrics.json`` files a report reads, are put there
first), renders the HTML, and returns every file the run wrote as bytes, with the staging path replaced by
the client's reports folder in text files. The client then writes them with :func:`write_task_files`, each
atomically: a worker that dies mid-task leaves nothing behind in the reports folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
import torch

from patchcore_lib.errors import OutputError
from patchcore_lib.study.outputs import repository_root
from patchcore_lib.utils.files import atomic_write_bytes, atomic_write_text

#: seconds between two progress-bar updates in a notebook the study executes (tqdm's TQDM_MININTERVAL)
BATCH_PROGRESS_SECONDS = 30
#: file types whose text may name the staging folder (replaced by the reports folder)
TEXT_SUFFIXES = (".ipynb", ".json", ".csv", ".md", ".txt", ".html", ".yaml")


def execute_notebook(notebook: Path, output: Path, params: dict[str, Any], kernel: str | None = None,
                     cwd: Path | None = None, log_output: bool = False) -> None:
    """Execute one notebook with papermill into ``output`` (the partially executed notebook is kept on error).

    The kernel's own stderr (its start-up warnings, and the traceback it prints when it is shut down while a
    cell runs, e.g. on Ctrl-C) goes to ``<output>.kernel.log``, not to the terminal."""
    import papermill  # optional heavy dependency (study extra): imported when executing
    from jupyter_client import AsyncKernelManager  # papermill's dependency

    output.parent.mkdir(parents=True, exist_ok=True)
    # progress bars in a batch run: one update per BATCH_PROGRESS_SECONDS, not ten per second (each update is an
    # output of the executed notebook and its HTML report); the kernel inherits this process's environment
    os.environ.setdefault("TQDM_MININTERVAL", str(BATCH_PROGRESS_SECONDS))
    with open(output.with_suffix(".kernel.log"), "wb") as log:
        async def launch(self: Any, kernel_cmd: list[str], **kw: Any) -> None:
            await AsyncKernelManager._async_launch_kernel(self, kernel_cmd, **{**kw, "stderr": log})

        manager = type("LoggedKernelManager", (AsyncKernelManager,), {"_async_launch_kernel": launch})
        papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel,
                                   language="python", cwd=str(cwd or notebook.parent), progress_bar=False, log_output=log_output,
                                   kernel_manager_class=manager)


#: wide tables (many columns) scroll inside their output instead of running past the page's right edge
WIDE_TABLES_CSS = ("<style>.jp-OutputArea-output.jp-RenderedHTMLCommon, .jp-RenderedHTML "
                   "{ overflow-x: auto; max-width: 100%; }</style>\n")


def render_html(ipynb: str | Path, html: str | Path | None = None, data_root: str = "") -> Path:
    """Render an executed notebook to standalone HTML (nbconvert), written atomically next to it.

    Machine paths (the injected parameters, tracebacks) are shown without the machine's folders: the data root
    as ``$DATA_ROOT``, the checkout as ``$CHECKOUT``, the home folder as ``~``."""
    from nbconvert import HTMLExporter  # optional heavy dependency (study extra): imported when rendering

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    body = body.replace("</head>", WIDE_TABLES_CSS + "</head>", 1)
    for path, shown in ((data_root, "$DATA_ROOT"), (str(repository_root().resolve()), "$CHECKOUT"),
                        (str(Path.home()), "~")):
        if path and len(path) > 1:
            body = body.replace(path, shown)
    return atomic_write_text(html, body)


@dataclass
class NotebookTask:
    """Everything a worker needs to run one notebook: its source, parameters and input files.

    ``ipynb``/``html``: paths of the executed notebook relative to the reports folder;
    ``inputs``: ``{relative path: bytes}`` put into the staging folder before the run, with the
    modification times of ``input_mtimes`` (a report picks the latest run of a setting by them).
    """

    name: str
    source: bytes
    parameters: dict[str, Any]
    reports_dir: str
    ipynb: str
    html: str
    kernel: str | None = None
    inputs: dict[str, bytes] = field(default_factory=dict)
    input_mtimes: dict[str, float] = field(default_factory=dict)


def _relative(path: Path, root: Path) -> str:
    return PurePosixPath(path.relative_to(root)).as_posix()


def _escaped(path: bytes, suffix: str) -> bytes:
    """``path`` as it must appear inside a file of type ``suffix``: JSON-escaped in JSON files (a ``"`` or ``\\``
    in the reports path would otherwise break them), as is elsewhere."""
    if suffix in (".ipynb", ".json"):
        return json.dumps(path.decode())[1:-1].encode()
    return path


def _staged_files(stage: Path, inputs: dict[str, bytes], old: bytes, new: bytes) -> dict[str, bytes]:
    """Files under ``stage`` that the run wrote (not unchanged inputs, no temporary files), paths fixed."""
    files = {}
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        rel = _relative(path, stage)
        if rel.startswith("_notebook/") or path.name.endswith(".tmp") or path.name == ".lock":
            continue
        data = path.read_bytes()
        if path.suffix in TEXT_SUFFIXES:
            data = data.replace(old, _escaped(new, path.suffix))
        if inputs.get(rel) == data:
            continue
        files[rel] = data
    return files


def apply_task_threads() -> int | None:
    """``$PATCHCORE_THREADS`` (set by the local cluster, or by a job script) as the torch/BLAS threads of the
    tasks of this worker process and of the notebook kernels it starts; None when unset."""
    value = os.environ.get("PATCHCORE_THREADS", "").strip()
    if not value.isdigit() or int(value) < 1:
        return None
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = value
    torch.set_num_threads(int(value))
    return int(value)


#: staging folders of tasks: ``<tmp>/patchcore-task-<pid of the worker>-<random>``
STAGE_PREFIX = "patchcore-task-"


def remove_stale_stages(folder: str | Path | None = None) -> list[Path]:
    """Remove the staging folders that workers killed while running a task left behind (their process is gone);
    returns them."""
    removed = []
    for stage in Path(folder or tempfile.gettempdir()).glob(f"{STAGE_PREFIX}*-*"):
        pid = stage.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
        except PermissionError:
            continue  # alive, another user's
    return removed


def execute_notebook_task(task: NotebookTask) -> dict[str, Any]:
    """Run ``task`` in a private staging folder; return ``files`` (``{relative path: bytes}``), ``error``
    (None, or the last line of the failure), ``seconds``, ``worker``, ``host`` and ``pid``.

    A failing notebook is not an exception here: its partial notebook and HTML come back for reading.
    """
    start = time.perf_counter()
    apply_task_threads()
    remove_stale_stages()
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
    try:
        for rel, data in task.inputs.items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if rel in task.input_mtimes:
                os.utime(target, (task.input_mtimes[rel], task.input_mtimes[rel]))
        notebook = stage / "_notebook" / task.name
        notebook.parent.mkdir(parents=True)
        notebook.write_bytes(task.source)
        params = dict(task.parameters)
        if "reports_dir" in params:
            params["reports_dir"] = str(stage)
        ipynb = stage / task.ipynb
        error = None
        try:
            execute_notebook(notebook, ipynb, params, kernel=task.kernel, cwd=notebook.parent)
        except Exception as exc:  # papermill's execution error carries the failing cell's traceback
            text = str(exc).strip()
            error = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        old, new = str(stage).encode(), str(task.reports_dir).encode()
        if ipynb.is_file():
            ipynb.write_bytes(ipynb.read_bytes().replace(old, _escaped(new, ".ipynb")))
            try:
                render_html(ipynb, stage / task.html, str(task.parameters.get("data_root") or ""))
            except Exception as exc:  # rendering a broken partial notebook must not hide the real error
                error = error or f"HTML rendering failed: {exc}"
        files = _staged_files(stage, task.inputs, old, new)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"files": files, "error": error, "seconds": time.perf_counter() - start, **worker_identity()}


def machine_summary() -> str:
    """The machine a run is timed on, in words: CPU cores (torch threads) and the GPU when one is visible."""
    text = f"{os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads)"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def worker_identity() -> dict[str, Any]:
    """Where a task ran: the Dask worker address (None outside a worker), host name, process id, machine."""
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = None
    return {"worker": address, "host": socket.gethostname(), "pid": os.getpid(), "machine": machine_summary()}


def write_task_files(reports_dir: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write a task's files under ``reports_dir``, each atomically; refuses paths that leave the folder."""
    root = Path(reports_dir).resolve()
    written = []
    for rel, data in files.items():
        target = (root / rel).resolve()
        if root != target and root not in target.parents:
            raise OutputError(f"a task returned the file {rel!r}, outside the reports folder {root}")
        written.append(atomic_write_bytes(target, data))
    return written


def report_inputs(reports_dir: str | Path) -> tuple[dict[str, bytes], dict[str, float]]:
    """The files a report notebook reads from the reports folder, every run's ``metrics.json``, and their
    modification times."""
    root = Path(reports_dir)
    paths = sorted(root.glob("*/*/metrics.json"))
    return ({_relative(p, root): p.read_bytes() for p in paths}, {_relative(p, root): p.stat().st_mtime for p in paths})
