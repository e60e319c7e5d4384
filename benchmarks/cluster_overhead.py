"""Per-task overhead of running the study's units on Dask instead of in this process.

::

    python -m benchmarks.cluster_overhead [--tasks 6] [--out results/cluster_overhead.json]

Measures, on a local cluster of 2 worker processes (1 thread each):

* ``dask_roundtrip_s``: submit one no-op task and get its result, on warm workers (median of ``--tasks * 5``);
* ``notebook_inprocess_s``: a one-cell notebook executed with papermill + rendered to HTML in this process;
* ``notebook_task_s``: the same notebook as a study task (staging folder, bytes back, atomic writes on
  the client), one at a time on warm workers: the difference is the study's per-task overhead;
* ``cluster_start_s``: starting the local cluster and connecting a client.

Memory (GiB, :class:`benchmarks.memory.PeakMemory` with ``children=True``): ``memory`` holds, per measurement
(``notebook_inprocess``, ``cluster_start``, ``dask_roundtrip``, ``notebook_task``), the peak resident set of this
process (``peak_rss_gib``, ``peak_rss_above_start_gib``) and of this process plus its descendants (the Jupyter
kernels, the Dask scheduler and workers: ``tree_peak_rss_gib``, resident sets summed, shared pages counted in
each process).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from benchmarks.memory import PeakMemory
from patchcore_lib.study.engine.cluster import start_local_cluster
from patchcore_lib.study.engine.tasks import (NotebookTask, execute_notebook, execute_notebook_task, render_html,
                                       write_task_files)


def _noop(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from distributed import Client

    folder = Path(tempfile.mkdtemp(prefix="cluster-overhead-"))
    params = new_code_cell("reports_dir = None")
    params.metadata["tags"] = ["parameters"]
    notebook = folder / "01_tiny.ipynb"
    nbformat.write(new_notebook(cells=[params, new_code_cell(
        "from pathlib import Path\n(Path(reports_dir) / 'out.txt').write_text('x')")], metadata={"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}}), str(notebook))

    memory = {}
    inprocess = []
    with PeakMemory(children=True) as meter:
        for k in range(args.tasks):
            t0 = time.perf_counter()
            out = folder / "inprocess" / f"{k}.ipynb"
            execute_notebook(notebook, out, {"reports_dir": str(folder / "inprocess")})
            render_html(out)
            inprocess.append(time.perf_counter() - t0)
    memory["notebook_inprocess"] = meter.as_dict()

    with PeakMemory(children=True) as meter:
        t0 = time.perf_counter()
        cluster = start_local_cluster(workers=2, threads=1, dashboard=":0", gpus=0)
        client = Client(cluster)
        client.run(lambda: __import__("patchcore_lib.study.engine.tasks"))  # warm: the library on every worker
        start_s = time.perf_counter() - t0
    memory["cluster_start"] = meter.as_dict()
    try:
        trips = []
        with PeakMemory(children=True) as meter:
            for k in range(args.tasks * 5):
                t0 = time.perf_counter()
                client.submit(_noop, k, pure=False).result()
                trips.append(time.perf_counter() - t0)
        memory["dask_roundtrip"] = meter.as_dict()
        tasks = []
        reports = folder / "dask"
        with PeakMemory(children=True) as meter:
            for k in range(args.tasks):
                t0 = time.perf_counter()
                task = NotebookTask(notebook.name, notebook.read_bytes(), {"reports_dir": str(reports)},
                                    str(reports), f"executed/{k}.ipynb", f"executed/{k}.html")
                result = client.submit(execute_notebook_task, task, pure=False).result()
                write_task_files(reports, result["files"])
                tasks.append(time.perf_counter() - t0)
        memory["notebook_task"] = meter.as_dict()
    finally:
        client.close()
        cluster.close()
    record = {"cluster_start_s": start_s, "dask_roundtrip_s": statistics.median(trips),
              "notebook_inprocess_s": statistics.median(inprocess), "notebook_task_s": statistics.median(tasks),
              "per_task_overhead_s": statistics.median(tasks) - statistics.median(inprocess),
              "runs": {"inprocess": inprocess, "task": tasks}, "memory": memory}
    print(json.dumps(record, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
