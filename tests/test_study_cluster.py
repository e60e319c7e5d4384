"""The study and sweeps on Dask distributed: a LocalCluster of 2 worker processes gives the same metrics as
in-process execution, a killed worker loses nothing, a second client into the same reports folder is refused."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")
distributed = pytest.importorskip("distributed")

from patchcore_lib.errors import ConfigError, OutputError  # noqa: E402
from patchcore_lib.study.engine import cluster as cl  # noqa: E402
from patchcore_lib.study import engine as runner
from patchcore_lib.study.engine import sweep  # noqa: E402
from patchcore_lib.study.engine.tasks import write_task_files  # noqa: E402
from helpers import ROOT  # noqa: E402

TINY = {"resize": 64, "imagesize": 64, "coreset_ratio": 0.2, "device": "cpu"}


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of 2 worker processes (1 thread each), shared by this module's tests."""
    local = cl.start_local_cluster(workers=2, threads=1, dashboard=":0", gpus=0)
    try:
        yield local.scheduler_address
    finally:
        local.close()


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".write-test")]


def test_cluster_option_and_local_sizing(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert cl.resolve_cluster(None) == "local"
    assert cl.resolve_cluster("None") == "none"
    assert cl.resolve_cluster("node7:8786") == "tcp://node7:8786"
    assert cl.resolve_cluster("tls://10.0.0.1:8786") == "tls://10.0.0.1:8786"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://head:8786")
    assert cl.resolve_cluster(None) == "tcp://head:8786"
    with pytest.raises(ConfigError, match="--cluster 'my cluster'"):
        cl.resolve_cluster("my cluster")
    assert cl.local_sizing(2) == (2, 1) and cl.local_sizing(16) == (4, 4) and cl.local_sizing(64) == (16, 4)
    assert cl.local_sizing(16, gpus=2) == (2, 8)


def test_task_files_cannot_leave_the_reports_folder(tmp_path):
    write_task_files(tmp_path, {"a/b.txt": b"ok"})
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"ok"
    with pytest.raises(OutputError, match="outside the reports folder"):
        write_task_files(tmp_path, {"../escape.txt": b"no"})
    assert not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.notebook
def test_quick_study_on_two_workers_matches_in_process_and_locks_its_folder(scheduler, notebook_root, tmp_path):
    preset = runner.load_preset(ROOT / "params" / "quick.yaml")
    preset["parameters"].update(TINY)
    kwargs = dict(categories=["tiny"], data_root=str(notebook_root), only=["04", "05"], log=lambda line: None)
    runner.run_study(preset, reports_dir=tmp_path / "none", cluster="none", **kwargs)

    lines: list[str] = []
    errors: list[BaseException] = []

    def on_cluster() -> None:
        try:
            runner.run_study(preset, reports_dir=tmp_path / "dask", cluster=scheduler,
                             **{**kwargs, "log": lines.append})
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=on_cluster)
    thread.start()
    deadline = time.time() + 60
    while not any(line.startswith("dask: scheduler") for line in lines) and time.time() < deadline:
        time.sleep(0.2)
    with pytest.raises(OutputError, match="in use by another run"):  # a second client, same folder
        runner.run_study(preset, reports_dir=tmp_path / "dask", cluster=scheduler, **kwargs)
    thread.join(timeout=600)
    assert not errors, errors
    assert any("dashboard: http" in line for line in lines)
    assert any(line.startswith("[1/2] ") for line in lines) and any(line.startswith("[2/2] 05_report") for line in lines)

    def metrics(reports: Path) -> tuple[str, dict]:
        (path,) = (reports / "04_evaluate").glob("*/metrics.json")
        return path.parent.name, json.loads(path.read_text())

    run_none, record_none = metrics(tmp_path / "none")
    run_dask, record_dask = metrics(tmp_path / "dask")
    assert run_none == run_dask
    for name in ("image_auroc", "pixel_auroc", "pro", "memory_bank_size"):
        assert record_dask["metrics"][name] == pytest.approx(record_none["metrics"][name], abs=1e-6), name
    # written by the client as if the worker had written into the reports folder itself
    assert record_dask["parameters"]["reports_dir"] == str(tmp_path / "dask")
    assert (tmp_path / "dask" / "summary.csv").read_text() == (tmp_path / "none" / "summary.csv").read_text()
    for stem in ("04_evaluate-tiny", "05_report"):
        done = runner.run_record(tmp_path / "dask", stem)
        assert done["worker"].split("/", 1)[1].startswith("tcp://")
        assert "<html" in (tmp_path / "dask" / "executed" / f"{stem}.html").read_text().lower()
    assert not _leftovers(tmp_path / "dask") and not (tmp_path / "dask" / ".lock").exists()

    # resume: the same keys as the in-process skip cache
    runs = runner.run_study(preset, reports_dir=tmp_path / "dask", cluster=scheduler, **kwargs)
    assert [r.status for r in runs] == ["skipped", "skipped"]


def _write_notebook(path: Path, parameters: str, body: str) -> None:
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell(body)], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), str(path))


SLOW = """import os, time
from pathlib import Path
out = Path(reports_dir) / "slow" / category
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(f"started {os.getpid()}")
if started:  # the test's signal: the kernel is up and about to sleep
    Path(started, category).touch()
time.sleep(seconds)
(out / "metrics.json").write_text(f"complete {category}")
"""


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.notebook
def test_killed_worker_loses_nothing(scheduler, tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    started = tmp_path / "started"  # the slow notebook creates started/<category> before it sleeps
    started.mkdir()
    _write_notebook(notebooks / "01_slow.ipynb", 'category = ""\nreports_dir = None\nseconds = 1.0\nstarted = ""', SLOW)
    _write_notebook(notebooks / "05_report.ipynb", "reports_dir = None\ncategories = []",
                    "from pathlib import Path\n"
                    "slow = Path(reports_dir) / 'slow'\n"
                    "assert [(slow / c / 'metrics.json').read_text() for c in 'ab'] == ['complete a', 'complete b']")
    reports = tmp_path / "reports"
    data = tmp_path / "data"  # categories a and b (the slow notebook reads nothing)
    for category in "ab":
        (data / category / "train" / "good").mkdir(parents=True)
        (data / category / "train" / "good" / "0.png").write_bytes(b"x")
    lines: list[str] = []
    errors: list[BaseException] = []

    def study() -> None:
        try:
            runner.run_study({"name": "slow", "parameters": {"seconds": 8.0, "started": str(started)}},
                             categories=["a", "b"], data_root=str(data),
                             reports_dir=reports, notebooks_dir=notebooks, cluster=scheduler,
                             log=lambda line: lines.append(f"{time.time() - t0:6.1f} s {line}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    t0 = time.time()
    with distributed.Client(scheduler, timeout="30s") as client:
        pids = client.run(os.getpid)
        thread = threading.Thread(target=study)
        thread.start()
        victim, deadline = None, time.time() + 120
        while victim is None and time.time() < deadline:
            busy = [w for w, keys in client.processing().items() if any("01_slow-a" in str(k) for k in keys)]
            victim = busy[0] if busy else None
            time.sleep(0.1)
        assert victim is not None, "the slow task never started"
        while not (started / "a").exists() and time.time() < deadline:
            time.sleep(0.05)  # until the kernel is up and sleeping in the middle of the notebook
        assert any("01_slow-a" in str(k) for k in client.processing()[victim]), "the task finished too early"
        os.kill(pids[victim], signal.SIGKILL)
        lines.append(f"{time.time() - t0:6.1f} s killed {victim}")
        thread.join(timeout=600)
    assert not errors, (errors, lines)
    print("\n".join(lines))
    done = runner.run_record(reports, "01_slow-a")
    assert not done["worker"].endswith(victim), "the killed task was re-run on another worker"
    for category in ("a", "b"):
        assert (reports / "slow" / category / "metrics.json").read_text() == f"complete {category}"
    assert runner.run_record(reports, "05_report") is not None
    assert not _leftovers(reports)


def _tiny_sweep(root: Path, results: Path) -> dict:
    path = results.parent / "tiny_sweep.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: tiny\ndata_root: {root}\ncategories: [tiny]\nresults: {results}\n"
                    "parameters: {backbone: efficientnet_lite0, resize: 64, imagesize: 64, device: cpu}\n"
                    "grid: {coreset_ratio: [0.1, 0.5], seed: [0]}\n")
    return sweep.load_sweep(path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sweep_on_two_workers_matches_in_process_and_resumes(scheduler, notebook_root, tmp_path):
    local = sweep.run_sweep(_tiny_sweep(notebook_root, tmp_path / "none" / "results.csv"), cluster="none",
                            log=lambda line: None)
    spec = _tiny_sweep(notebook_root, tmp_path / "dask" / "results.csv")
    lines: list[str] = []
    table = sweep.run_sweep(spec, cluster=scheduler, log=lines.append)
    assert len(table) == len(local) == 2 and set(table["point"]) == set(local["point"])
    merged = table.merge(local, on="point", suffixes=("", "_local"))
    for name in ("image_auroc", "pixel_auroc", "pro", "memory_bank_size"):
        assert merged[name].to_numpy() == pytest.approx(merged[f"{name}_local"].to_numpy(), abs=1e-6), name
    assert merged["memory_bank_size"].nunique() == 2
    assert all("tcp://" in w for w in table["worker"])
    assert any(line.startswith("[2/2] tiny coreset_ratio=") for line in lines)

    shown = sweep.ablation_table(table, "tiny")  # what notebook 02's plots read
    assert list(shown["ratio"]) == [0.1, 0.5] and set(shown["sampler"]) == {"approx_greedy"}
    assert list(shown["image_auroc"]) == list(table.sort_values("coreset_ratio")["image_auroc"])

    lines.clear()  # resume: every point is in the table
    again = sweep.run_sweep(spec, cluster="none", log=lines.append)
    assert len(again) == 2 and any("2 already in" in line for line in lines)


def test_bad_sweep_files_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("categories: [bottle]\ngrid: {coreset_ratios: [0.1]}\n")
    with pytest.raises(ConfigError, match="coreset_ratios are no PatchCore settings"):
        sweep.load_sweep(path)
    path.write_text("data_root: /data\ncategories: [bottle]\ngrid: {coreset_ratio: 0.1}\n")
    with pytest.raises(ConfigError, match="grid.coreset_ratio must be a non-empty list"):
        sweep.load_sweep(path)
    path.write_text("categories: [bottle]\ngrid: {coreset_ratio: [0.1]}\n")
    with pytest.raises(ConfigError, match="synthetic_texture"):
        sweep.load_sweep(path)
    path.write_text("data_root: /data\ncategories: [bottle]\ngrid: {coreset_ratio: [0.1, 2.0]}\n")
    with pytest.raises(ConfigError, match="coreset_ratio"):
        sweep.plan_points(sweep.load_sweep(path))


def test_example_sweep_plans_two_categories_by_three_ratios():
    points = sweep.plan_points(sweep.load_sweep(ROOT / "params" / "sweep_example.yaml"))
    assert len(points) == 6 and len({p.key for p in points}) == 6
    assert {p.category for p in points} == {"synthetic_texture", "synthetic_object"}


def test_ready_units_start_the_longest_chains_first_and_wait_for_dependencies():
    # 01-a is short, but 02-a and 03-a wait for it: its chain (10 + 900 s) beats 07-b's 600 s
    units = [cl.Unit("01-a", print, dict, expected_seconds=10.0),
             cl.Unit("02-a", print, dict, ("01-a",), expected_seconds=900.0),
             cl.Unit("03-a", print, dict, ("01-a",), expected_seconds=60.0), cl.Unit("03-b", print, dict),
             cl.Unit("07-b", print, dict, expected_seconds=600.0),
             cl.Unit("05", print, dict, ("02-a", "03-a", "03-b", "07-b"), expected_seconds=5.0)]
    assert cl.critical_path_seconds(units) == {"01-a": 915.0, "02-a": 905.0, "03-a": 65.0, "03-b": 5.0,
                                               "07-b": 605.0, "05": 5.0}
    priority = cl.critical_path_seconds(units)
    assert [u.key for u in cl.ready_units(units, set(), priority)] == ["01-a", "07-b", "03-b"]
    assert [u.key for u in cl.ready_units(units[1:], {"01-a"}, priority)] == ["02-a", "07-b", "03-a", "03-b"]
    with pytest.raises(ConfigError, match="cycle"):
        cl.critical_path_seconds([cl.Unit("a", print, dict, ("b",)), cl.Unit("b", print, dict, ("a",))])
