"""patchcore fit / predict / export: model files, predictions.csv, maps, resume, exported models, --config,
help and errors (one line naming the culprit)."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcore_lib import PatchCore, load_detector
from patchcore_lib.cli import main
from patchcore_lib.detectors.predict_folder import predict_to_folder
from helpers import FAST


def _rows(path):
    return list(csv.DictReader(open(path)))


def _test_images(root):
    return sorted((root / "tiny" / "test").rglob("*.png"))


@pytest.fixture(scope="module")
def evaluated(synthetic_root, tmp_path_factory):
    """evaluate --save-model on the tiny category: (its output folder, the saved model)."""
    out = tmp_path_factory.mktemp("evaluated")
    assert main(["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST, "--save-model",
                 "--out", str(out)]) == 0
    return out, out / "tiny" / "model.pt"


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    """patchcore fit on the tiny category's train folder, with --val: the model file."""
    out = tmp_path_factory.mktemp("fitted") / "model.pt"
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(out), *FAST,
                 "--false-alarm-rate", "0.2", "--calibration-folds", "3", "--val", str(synthetic_root / "tiny")]) == 0
    return out


@pytest.mark.slow
def test_fit_records_preprocessing_threshold_and_f1(fitted):
    payload = __import__("torch").load(fitted, weights_only=True)
    assert payload["preprocessing"]["resize"] == 64 and payload["preprocessing"]["crop"] == "center"
    assert payload["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    record = payload["threshold"]
    assert record["false_alarm_rate"] == 0.2 and record["folds"] == 3 and record["num_images"] == 12
    assert {"f1", "val_rates_at_calibrated", "val_rates_at_f1"} <= set(record)
    assert record["val_rates_at_calibrated"]["num_normal"] == 4


@pytest.mark.slow
def test_predict_scores_equal_evaluate_and_apply_the_threshold(evaluated, synthetic_root, tmp_path):
    out, model_path = evaluated
    # evaluate's scores.csv names images relative to the category folder; predict by the paths it was given
    expected = {str(synthetic_root / "tiny" / r["path"]): float(r["score"])
                for r in _rows(out / "tiny" / "scores.csv")}
    assert main(["predict", "--model", str(model_path), str(synthetic_root / "tiny" / "test"), "--out",
                 str(tmp_path / "p"), "--threshold", "5.5", "--save-raw-maps", "--quiet"]) == 0
    rows = _rows(tmp_path / "p" / "predictions.csv")
    assert list(rows[0]) == ["path", "score", "threshold", "is_anomalous", "map", "sha256", "error"]
    assert {r["path"] for r in rows} == set(expected) and len(rows) == len(expected)
    for row in rows:
        assert float(row["score"]) == expected[row["path"]]  # identical, not just close
        assert row["is_anomalous"] == str(int(float(row["score"]) > 5.5)) and float(row["threshold"]) == 5.5
        overlay = tmp_path / "p" / row["map"]
        width, height = Image.open(row["path"]).size  # the overlay: the input at its own size + a colour bar
        assert Image.open(overlay).size[1] == height and Image.open(overlay).size[0] > width
        raw = np.load(overlay.with_suffix(".npy"))
        assert raw.shape == (64, 64) and raw.max() > 0
    names = [r["map"] for r in rows]  # stems repeat across defect folders (000.png ...): names stay unique
    assert len(set(names)) == len(names)


def test_predict_images_takes_paths_pil_images_and_arrays(evaluated, synthetic_root):
    model = PatchCore.load(evaluated[1])
    paths = _test_images(synthetic_root)[:3]
    from_paths = model.predict_images(paths)
    pil = [Image.open(p) for p in paths]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    assert np.array_equal(model.predict_images(pil).scores, from_paths.scores)
    assert np.array_equal(model.predict_images(arrays).scores, from_paths.scores)
    # a batch of one: other convolution blocking, the same score up to float rounding
    np.testing.assert_allclose(model.predict_images(str(paths[0])).scores, from_paths.scores[:1], rtol=1e-4)
    assert from_paths.maps.shape == (3, 64, 64) and from_paths.paths == [str(p) for p in paths]


class _InterruptedModel:
    """The real model, interrupted (KeyboardInterrupt) on its second predict_images call."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, 0

    def predict_images(self, images):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.model.predict_images(images)


@pytest.mark.slow
def test_interrupted_predict_keeps_its_rows_and_resumes(evaluated, synthetic_root, tmp_path):
    model = PatchCore.load(evaluated[1])
    images = _test_images(synthetic_root)
    with pytest.raises(KeyboardInterrupt):
        predict_to_folder(_InterruptedModel(model), images, tmp_path, 6.0, "m1", flush_every=5, show_progress=False)
    kept = _rows(tmp_path / "predictions.csv")
    assert len(kept) == 8 and not list(tmp_path.rglob("*.tmp")) and not (tmp_path / ".lock").exists()
    summary = predict_to_folder(model, images, tmp_path, 6.0, "m1", flush_every=5, show_progress=False)
    assert summary["skipped"] == 8 and summary["scored"] == len(images) - 8
    rows = _rows(tmp_path / "predictions.csv")
    assert rows[:8] == kept and len(rows) == len(images)
    fresh = predict_to_folder(model, images, tmp_path / "fresh", 6.0, "m1", show_progress=False)
    assert fresh["scored"] == len(images)
    assert sorted(rows, key=lambda r: r["path"]) == sorted(_rows(tmp_path / "fresh" / "predictions.csv"),
                                                           key=lambda r: r["path"])
    again = predict_to_folder(model, images, tmp_path, 6.0, "another model", show_progress=False)
    assert again["skipped"] == 0  # rows of another model are never reused


@pytest.mark.slow
def test_predict_uses_the_calibrated_and_f1_thresholds(fitted, synthetic_root, tmp_path):
    record = load_detector(fitted).threshold
    for choice, expected in (("calibrated", record["threshold"]), ("f1", record["f1"]["threshold"])):
        assert main(["predict", "--model", str(fitted), str(synthetic_root / "tiny" / "test" / "good"),
                     "--out", str(tmp_path / choice), "--threshold", choice, "--no-maps", "--quiet"]) == 0
        rows = _rows(tmp_path / choice / "predictions.csv")
        assert len(rows) == 4 and all(float(r["threshold"]) == expected for r in rows)
        assert not (tmp_path / choice / "maps").exists() or not any((tmp_path / choice / "maps").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("graph_format", ["onnx-bundle", "torchscript"])
def test_export_matches_the_eager_model_and_refuses_beyond_tolerance(graph_format, evaluated, synthetic_root,
                                                                     tmp_path):
    if graph_format == "onnx-bundle":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    _, model_path = evaluated
    bundle = tmp_path / f"model.{graph_format}"
    assert main(["export", "--model", str(model_path), "--format", graph_format, "--out", str(bundle),
                 "--data-root", str(synthetic_root), "--category", "tiny", "--quiet"]) == 0
    exported = load_detector(bundle)
    check = exported.payload["check"]
    assert check["num_images"] == 16 and check["max_relative_difference"] <= 1e-4
    eager = PatchCore.load(model_path)
    images = _test_images(synthetic_root)
    np.testing.assert_allclose(exported.predict_images(images).scores, eager.predict_images(images).scores,
                               rtol=1e-4)
    assert main(["predict", "--model", str(bundle), str(images[0]), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    difference = check["max_relative_difference"]
    if difference > 0:  # a tolerance below the measured difference: refused, nothing written
        refused = tmp_path / "refused.bin"
        code = main(["export", "--model", str(model_path), "--format", graph_format, "--out", str(refused),
                     "--images", str(synthetic_root / "tiny" / "test"), "--rtol", f"{difference / 2:.3e}",
                     "--quiet"])
        assert code == 4 and not refused.exists()  # EXIT_MODEL: the exported model is not usable


@pytest.mark.slow
def test_config_file_gives_defaults_and_the_command_line_wins(synthetic_root, tmp_path):
    config = tmp_path / "options.yaml"
    config.write_text("name: mine\nparameters:\n  backbone: resnet18\n  weights: random\n  resize: 64\n"
                      "  imagesize: 64\n  coreset_ratio: 0.5\n  device: auto\nnotebook_parameters: {}\n")
    model = tmp_path / "m.pt"
    assert main(["fit", "--config", str(config), "--train", str(synthetic_root / "tiny" / "train"), "--out",
                 str(model), "--coreset-ratio", "0.25", "--calibration-folds", "0", "--quiet"]) == 0
    loaded = load_detector(model)
    assert loaded.config.coreset_ratio == 0.25 and loaded.config.resize == 64 and loaded.threshold is None
    predict_config = tmp_path / "predict.yaml"
    predict_config.write_text("backbone: resnet18\nthreshold: 3.0\nno_maps: true\n")  # model settings are ignored
    assert main(["predict", "--config", str(predict_config), "--model", str(model), "--out", str(tmp_path / "p"),
                 str(_test_images(synthetic_root)[0]), "--quiet"]) == 0
    assert _rows(tmp_path / "p" / "predictions.csv")[0]["threshold"] == "3.0"


@pytest.mark.slow
@pytest.mark.subprocess
def test_help_version_and_program_name():
    result = subprocess.run([sys.executable, "-m", "patchcore_lib", "fit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: patchcore fit")
    assert "[default: 0.01]" in result.stdout and "[default: 10]" in result.stdout  # threshold options
    assert "[default: 0.1]" in result.stdout  # coreset ratio, from the schema
    result = subprocess.run([sys.executable, "-m", "patchcore_lib", "predict", "--help"], capture_output=True,
                            text=True)
    assert "[default: 64]" in result.stdout and "[default: calibrated]" in result.stdout
    for command in ("fit", "predict", "export", "evaluate"):
        assert command in subprocess.run([sys.executable, "-m", "patchcore_lib", "--help"], capture_output=True,
                                         text=True).stdout
    version = subprocess.run([sys.executable, "-m", "patchcore_lib", "--version"], capture_output=True, text=True)
    assert version.stdout.strip().startswith("patchcore 0.")


@pytest.mark.parametrize("case", ["missing_model", "empty_glob", "not_an_image", "no_f1", "empty_train",
                                  "no_check_images", "bad_config_key", "truncated_model", "bad_threshold"])
def test_errors_are_one_line_naming_the_culprit(case, evaluated, synthetic_root, tmp_path, capsys):
    model = str(evaluated[1])
    image = str(_test_images(synthetic_root)[0])
    out = str(tmp_path / "out")
    if case == "missing_model":
        args, culprit = ["predict", "--model", str(tmp_path / "nope.pt"), image, "--out", out], "nope.pt"
    elif case == "empty_glob":
        args, culprit = ["predict", "--model", model, str(tmp_path / "*.png"), "--out", out], "matches no image"
    elif case == "not_an_image":
        (tmp_path / "notes.txt").write_text("x")
        args, culprit = ["predict", "--model", model, str(tmp_path / "notes.txt"), "--out", out], "notes.txt"
    elif case == "no_f1":
        args, culprit = ["predict", "--model", model, image, "--out", out, "--threshold", "f1"], "--threshold f1"
    elif case == "bad_threshold":
        args, culprit = ["predict", "--model", model, image, "--out", out, "--threshold", "high"], "'high'"
    elif case == "empty_train":
        (tmp_path / "empty").mkdir()
        args, culprit = ["fit", "--train", str(tmp_path / "empty"), "--out", out, *FAST], "empty contains no images"
    elif case == "no_check_images":
        args, culprit = ["export", "--model", model, "--out", out], "export needs check images"
    elif case == "bad_config_key":
        (tmp_path / "c.yaml").write_text("coreset_ration: 0.1\n")
        args, culprit = ["fit", "--config", str(tmp_path / "c.yaml"), "--train", image, "--out", out], \
            "unknown key 'coreset_ration'"
    else:
        broken = tmp_path / "broken.pt"
        broken.write_bytes(Path(model).read_bytes()[:300])
        args, culprit = ["predict", "--model", str(broken), image, "--out", out], "broken.pt"
    assert main(args) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and culprit in errors[0], errors


@pytest.mark.slow
def test_folder_layout_without_masks_reports_pixel_metrics_as_unavailable(synthetic_root, tmp_path):
    """train/ without good/, test/<label>/, no ground_truth: detected as 'folder'; pixel metrics NaN + a note."""
    data = tmp_path / "data" / "parts"
    shutil.copytree(synthetic_root / "tiny" / "train" / "good", data / "train" / "batch1")
    shutil.copytree(synthetic_root / "tiny" / "test", data / "test")
    out = tmp_path / "out"
    assert main(["evaluate", "--data-root", str(tmp_path / "data"), "--category", "parts", *FAST,
                 "--out", str(out)]) == 0
    row = _rows(out / "results.csv")[0]
    assert row["layout"] == "folder" and 0.5 <= float(row["image_auroc"]) <= 1
    assert row["pixel_auroc"] == "nan" and row["pro"] == "nan" and "pixel metrics unavailable" in row["note"]
    run = json.loads((out / "run.json").read_text())
    assert run["layouts"] == {"parts": "folder"} and "faiss_version" in run and "faiss_gpus" in run
    shutil.copytree(synthetic_root / "tiny" / "ground_truth", data / "ground_truth")  # masks: pixel metrics too
    assert main(["evaluate", "--data-root", str(tmp_path / "data"), "--category", "parts", *FAST,
                 "--out", str(tmp_path / "out2")]) == 0
    row = _rows(tmp_path / "out2" / "results.csv")[0]
    assert row["layout"] == "folder" and 0 <= float(row["pixel_auroc"]) <= 1 and not row["note"]
