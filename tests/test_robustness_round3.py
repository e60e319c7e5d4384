"""Issue 29 (nothing stale, round 3): predict keyed by image content, map files that never collide, outputs
never inside inputs, finite thresholds, categories counted once, a study run's written files in its record."""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch

from patchcore_lib.cli import main
from patchcore_lib.detectors import PatchCore
from patchcore_lib.detectors.predict_folder import predict_to_folder
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.integrity import seal
from helpers import FAST


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model_file(synthetic_root, tmp_path_factory):
    """A PatchCore model fitted on the tiny category's train split, with a calibrated threshold."""
    out = tmp_path_factory.mktemp("model") / "model.pt"
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(out), *FAST,
                 "--calibration-folds", "3", "--quiet"]) == 0
    return out


def _rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(folder / "predictions.csv")))


def _one_error_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def _good_and_defect(root: Path) -> tuple[Path, Path]:
    test = root / "tiny" / "test"
    good = sorted((test / "good").glob("*.png"))[0]
    defect = sorted(p for p in test.rglob("*.png") if p.parent.name != "good")[0]
    return good, defect


# --- case 1: an image replaced under the same name is scored again; rows of removed inputs are dropped ----------
@pytest.mark.slow
def test_predict_rescores_an_image_replaced_under_the_same_name(model_file, synthetic_root, tmp_path, capsys):
    good, defect = _good_and_defect(synthetic_root)
    frames, out = tmp_path / "frames", tmp_path / "out"
    frames.mkdir()
    shutil.copy(good, frames / "frame.png")
    shutil.copy(good, frames / "other.png")
    assert main(["predict", "--model", str(model_file), str(frames), "--out", str(out), "--quiet"]) == 0
    first = {Path(r["path"]).name: r for r in _rows(out)}
    shutil.copy(defect, frames / "frame.png")
    (frames / "other.png").unlink()
    assert main(["predict", "--model", str(model_file), str(frames), "--out", str(out), "--quiet"]) == 0
    assert "1 images scored, 0 kept" in capsys.readouterr().out
    again = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(again) == {"frame.png"}  # the removed input's row is gone
    assert main(["predict", "--model", str(model_file), str(frames), "--out", str(tmp_path / "fresh"), "--quiet"]) == 0
    fresh = _rows(tmp_path / "fresh")[0]
    assert again["frame.png"]["score"] == fresh["score"] != first["frame.png"]["score"]
    assert again["frame.png"]["is_anomalous"] == fresh["is_anomalous"]
    assert again["frame.png"]["sha256"] == fresh["sha256"] != first["frame.png"]["sha256"]


# --- case 5: two runs into one --out, inputs with one file name: two map files --------------------------------
@pytest.mark.slow
def test_maps_of_two_runs_with_the_same_file_name_never_collide(model_file, synthetic_root, tmp_path):
    good, defect = _good_and_defect(synthetic_root)
    for folder, source in (("pa", good), ("pb", defect)):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "img.png")
    out = tmp_path / "out"
    maps = []
    for folder in ("pa", "pb"):
        assert main(["predict", "--model", str(model_file), str(tmp_path / folder), "--out", str(out), "--quiet"]) == 0
        (row,) = _rows(out)
        maps.append(out / row["map"])
        assert maps[-1].is_file()
    assert maps[0] != maps[1] and maps[0].read_bytes() != maps[1].read_bytes()


# --- case 6: --out inside a folder the inputs search ------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["{d}", "{d}/**/*.png"])
def test_out_inside_the_input_tree_is_refused(pattern, model_file, synthetic_root, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(synthetic_root / "tiny" / "test" / "good", images)
    out = images / "results"
    assert main(["predict", "--model", str(model_file), pattern.format(d=images), "--out", str(out)]) == 2
    assert "is inside the input folder" in _one_error_line(capsys)
    assert not out.exists()


# --- case 7: a repeated --category counts once ------------------------------------------------------------------
@pytest.mark.slow
def test_a_repeated_category_is_evaluated_and_averaged_once(synthetic_root, tmp_path):
    out = tmp_path / "out"
    assert main(["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", "--category", "tiny", *FAST,
                 "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["category"] for r in rows if r["category"] == "tiny"] == ["tiny"]


# --- case 9: thresholds that are not finite numbers -------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_threshold_option_is_refused(value, model_file, synthetic_root, tmp_path, capsys):
    good, _ = _good_and_defect(synthetic_root)
    assert main(["predict", "--model", str(model_file), str(good), "--out", str(tmp_path / "o"),
                 f"--threshold={value}"]) == 2
    assert "--threshold must be a finite number" in _one_error_line(capsys)
    with pytest.raises(ConfigError, match="finite"):
        predict_to_folder(PatchCore.load(model_file), [good], tmp_path / "p", float(value), "m", show_progress=False)


def test_a_model_file_with_a_nan_threshold_is_refused(model_file, synthetic_root, tmp_path, capsys):
    payload = torch.load(model_file, weights_only=True)
    payload.pop("checksum", None)
    payload["threshold"]["threshold"] = math.nan
    resealed = tmp_path / "nan.pt"
    torch.save(seal(payload), resealed)  # a correct checksum of a threshold that marks every image normal
    good, _ = _good_and_defect(synthetic_root)
    assert main(["predict", "--model", str(resealed), str(good), "--out", str(tmp_path / "o")]) != 0
    assert "threshold is nan" in _one_error_line(capsys)


# --- case 11: outputs over inputs: evaluate into the data, export over the model, --rtol nan --------------------
def test_evaluate_refuses_an_out_that_overlaps_the_data(synthetic_root, tmp_path, capsys):
    nest = tmp_path / "nest"
    shutil.copytree(synthetic_root / "tiny", nest / "bottle" / "bottle")
    (nest / "bottle" / "model.pt").write_bytes(b"the user's model")
    assert main(["evaluate", "--data-root", str(nest / "bottle"), "--category", "bottle", *FAST,
                 "--out", str(nest)]) == 5  # an output problem (exit code 5), refused before anything is written
    assert "is or contains the data" in _one_error_line(capsys)
    assert (nest / "bottle" / "model.pt").read_bytes() == b"the user's model"


@pytest.mark.parametrize("case", ["same_file", "rtol_nan"])
def test_export_refuses_writing_over_its_model_or_a_nan_tolerance(case, model_file, synthetic_root, tmp_path, capsys):
    model = tmp_path / "model.pt"
    shutil.copy(model_file, model)
    good, _ = _good_and_defect(synthetic_root)
    extra = ["--out", str(model)] if case == "same_file" else ["--out", str(tmp_path / "b.onnx"), "--rtol", "nan"]
    assert main(["export", "--model", str(model), "--images", str(good), *extra]) == 2
    assert ("is the --model file" if case == "same_file" else "--rtol must be a finite") in _one_error_line(capsys)
    assert model.read_bytes() == model_file.read_bytes()


# --- case 12: output options are part of predict's key ----------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_that_asks_for_maps_writes_them(model_file, synthetic_root, tmp_path):
    good, defect = _good_and_defect(synthetic_root)
    out = tmp_path / "out"
    args = ["predict", "--model", str(model_file), str(good), str(defect), "--out", str(out), "--quiet"]
    assert main([*args, "--no-maps"]) == 0
    assert not any(out.glob("maps/*"))
    assert main([*args, "--save-raw-maps"]) == 0
    rows = _rows(out)
    assert len(rows) == 2 and all((out / r["map"]).is_file() and (out / r["map"]).with_suffix(".npy").is_file()
                                  for r in rows)


# --- case 8 (predict): the model file is hashed as loaded --------------------------------------------------------
def test_a_model_file_replaced_while_loading_is_refused(model_file, synthetic_root, tmp_path, monkeypatch, capsys):
    import patchcore_lib.cli.predict as predict_cli

    model = tmp_path / "model.pt"
    shutil.copy(model_file, model)
    real_load = predict_cli.load_detector

    def load_then_replace(path, **kwargs):  # another process swaps the file while this one loads it
        loaded = real_load(path, **kwargs)
        model.write_bytes(model.read_bytes() + b"\0")
        return loaded

    monkeypatch.setattr(predict_cli, "load_detector", load_then_replace)
    good, _ = _good_and_defect(synthetic_root)
    assert main(["predict", "--model", str(model), str(good), "--out", str(tmp_path / "o")]) != 0
    assert "changed while it was loaded" in _one_error_line(capsys)
    assert not (tmp_path / "o" / "predictions.csv").exists()


# --- case 10: a study run records the files it wrote, so deleting one makes it stale ----------------------------
@pytest.mark.notebook
def test_a_deleted_metrics_file_makes_its_run_stale(tmp_path):
    pytest.importorskip("papermill")
    from nbformat.v4 import new_code_cell, new_notebook
    import nbformat

    from patchcore_lib.study.engine import check_study, run_study

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cell = new_code_cell('data_root = ""\ncategory = ""\nreports_dir = None')
    cell.metadata["tags"] = ["parameters"]
    body = ("from pathlib import Path\nfolder = Path(reports_dir, '01_one', category + '-x')\n"
            "folder.mkdir(parents=True, exist_ok=True)\n(folder / 'metrics.json').write_text('{}')")
    nbformat.write(new_notebook(cells=[cell, new_code_cell(body)]), str(notebooks / "01_one.ipynb"))
    (tmp_path / "data" / "a" / "train" / "good").mkdir(parents=True)
    (tmp_path / "data" / "a" / "train" / "good" / "0.png").write_bytes(b"a")
    where = dict(categories=["a"], data_root=str(tmp_path / "data"), reports_dir=tmp_path / "reports",
                 notebooks_dir=notebooks)
    preset = {"name": "t", "parameters": {}, "notebook_parameters": {}}
    assert [r.status for r in run_study(dict(preset), **where, log=lambda s: None)] == ["done"]
    assert [c.current for c in check_study(dict(preset), **where)] == [True]
    (tmp_path / "reports" / "01_one" / "a-x" / "metrics.json").unlink()
    (check,) = check_study(dict(preset), **where)
    assert not check.current and check.reasons == ["outputs missing or modified: 01_one/a-x/metrics.json"]
    assert [r.status for r in run_study(dict(preset), **where, log=lambda s: None)] == ["done"]


# --- case 15: an unwritable reports folder is one line ----------------------------------------------------------
def test_a_study_into_a_reports_path_that_is_a_file_is_one_line(synthetic_root, tmp_path, capsys):
    from patchcore_lib.study.engine.cli import main as study_main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = study_main(["--reports-dir", str(blocker / "reports"), "--data-root", str(synthetic_root),
                         "--categories", "tiny", "--cluster", "none"])
    assert status != 0
    assert "is not writable" in _one_error_line(capsys)


# --- issue 30, 2: predict never loses work: unreadable images get an error row, the run goes on ----------------
@pytest.mark.slow
def test_predict_with_corrupt_files_keeps_every_valid_row_and_exits_partial(model_file, synthetic_root, tmp_path,
                                                                           capsys):
    from patchcore_lib.cli import EXIT_PARTIAL

    images = tmp_path / "images"
    shutil.copytree(synthetic_root / "tiny" / "test" / "good", images)
    valid = sorted(p.name for p in images.glob("*.png"))
    (images / "truncated.png").write_bytes((images / valid[0]).read_bytes()[:60])
    (images / "text.png").write_text("not an image")
    (images / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_file), str(images), "--out", str(out), "--quiet",
                 "--batch-size", "4"]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == set(valid) | {"truncated.png", "text.png", "empty.png"}
    assert all(rows[name]["score"] and not rows[name]["error"] for name in valid)
    for name in ("truncated.png", "text.png", "empty.png"):
        assert rows[name]["error"] and not rows[name]["score"] and f"{name} not scored" in err
    assert "3 image(s) could not be scored" in err
    fresh = {Path(r["path"]).name: r["score"] for r in _rows(_predict_valid_only(model_file, images, valid, tmp_path))}
    for name in valid:  # the readable rest of the batch is scored as it would be without the bad files
        assert float(rows[name]["score"]) == pytest.approx(float(fresh[name]), rel=1e-5)


def _predict_valid_only(model_file: Path, images: Path, valid: list[str], tmp_path: Path) -> Path:
    out = tmp_path / "valid_only"
    assert main(["predict", "--model", str(model_file), *[str(images / n) for n in valid], "--out", str(out),
                 "--quiet", "--batch-size", "4"]) == 0
    return out


# --- issue 30, 4: a watch keeps the model loaded and scores images as they arrive --------------------------------
@pytest.mark.slow
def test_watch_scores_new_images_once_they_are_complete_and_keeps_earlier_rows(model_file, synthetic_root, tmp_path):
    from patchcore_lib.detectors.predict_folder import watch_folder

    good, defect = _good_and_defect(synthetic_root)
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()
    shutil.copy(good, drop / "first.png")
    model = PatchCore.load(model_file)
    threshold = float(model.threshold["threshold"])
    predict_to_folder(model, [drop / "first.png"], out, threshold, "m", show_progress=False)
    arrivals = {1: defect, 3: good}  # a file copied in before the 1st and the 3rd look
    looks, reports = [], []

    def find_inputs():
        looks.append(1)
        if len(looks) in arrivals:
            shutil.copy(arrivals[len(looks)], drop / f"new{len(looks)}.png")
        return sorted(drop.glob("*.png"))

    watch_folder(model, find_inputs, out, threshold, "m", poll_seconds=0.01, max_polls=5, report=reports.append,
                 already=[drop / "first.png"])
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == {"first.png", "new1.png", "new3.png"}
    assert [r["scored"] for r in reports] == [1, 1]  # each scored once, one look after it appeared
    fresh = predict_to_folder(model, [drop / "new1.png"], tmp_path / "fresh", threshold, "m", show_progress=False)
    assert fresh["scored"] == 1 and _rows(tmp_path / "fresh")[0]["score"] == rows["new1.png"]["score"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_predict_watch_stops_on_sigterm_with_its_rows_written(model_file, synthetic_root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    good, _ = _good_and_defect(synthetic_root)
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "patchcore_lib", "predict", "--model", str(model_file),
                                str(drop), "--out", str(out), "--watch", "--poll", "0.2", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "predictions.csv").is_file():
            time.sleep(0.2)
        shutil.copy(good, drop / "arrived.png")
        while time.time() < deadline and not any(r["path"].endswith("arrived.png") for r in _safe_rows(out)):
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert [Path(r["path"]).name for r in _rows(out)] == ["arrived.png"] and "Traceback" not in stderr


def _safe_rows(folder: Path) -> list[dict[str, str]]:
    try:
        return _rows(folder)
    except OSError:
        return []


# --- case 17: a signal after the work is done neither lies nor changes the exit status ---------------------------
@pytest.mark.subprocess
def test_sigterm_after_the_work_is_done_keeps_exit_status_zero():
    import subprocess
    import sys

    code = ("import os, signal\n"
            "from patchcore_lib.cli import ignore_interrupts_after_work\n"
            "ignore_interrupts_after_work()  # what entry() does once main() returned\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "print('finished')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "finished" and result.stderr == ""


# --- a report made while a run it summarises was missing is stale once that run finishes --------------------------
@pytest.mark.notebook
def test_a_report_is_stale_when_a_run_it_summarises_finishes_later(tmp_path):
    pytest.importorskip("papermill")
    from nbformat.v4 import new_code_cell, new_notebook
    import nbformat

    from patchcore_lib.study.engine import check_study, run_study

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name, parameters in (("01_one", 'data_root = ""\ncategory = ""\nreports_dir = None'),
                             ("05_report", "reports_dir = None\ncategories = []")):
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nbformat.write(new_notebook(cells=[cell, new_code_cell("x = 1")]), str(notebooks / f"{name}.ipynb"))
    for category in ("a", "b"):
        (tmp_path / "data" / category / "train" / "good").mkdir(parents=True)
        (tmp_path / "data" / category / "train" / "good" / "0.png").write_bytes(category.encode())
    where = dict(categories=["a", "b"], data_root=str(tmp_path / "data"), reports_dir=tmp_path / "reports",
                 notebooks_dir=notebooks)
    preset = {"name": "t", "parameters": {}, "notebook_parameters": {}}
    runs = run_study(dict(preset), **where, log=lambda s: None)
    assert [r.status for r in runs] == ["done"] * 3
    # b's run is lost and made again by a study of b alone: the report read the old outputs
    store = tmp_path / "reports" / ".store" / "notebook"
    for record in store.glob("*.json"):
        if '"01_one-b"' in record.read_text():
            record.unlink()
    assert {c.name: c.current for c in check_study(dict(preset), **where)}["05_report"] is False
    run_study(dict(preset), **where, only=["01"], log=lambda s: None)
    states = {c.name: c for c in check_study(dict(preset), **where)}
    assert states["01_one-b"].current and not states["05_report"].current
    assert "run again, or were missing" in states["05_report"].reasons[0]
    assert [r.status for r in run_study(dict(preset), **where, log=lambda s: None)] == ["skipped", "skipped", "done"]
