"""Issue 30, 1: ``patchcore export --format onnx`` writes one standard ONNX model of the whole pipeline that
onnxruntime runs alone (a subprocess that cannot import torch or patchcore_lib reproduces predict's scores)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from patchcore_lib.cli import main  # noqa: E402
from patchcore_lib.data import ImageList  # noqa: E402
from patchcore_lib.detectors import PatchCore  # noqa: E402
from patchcore_lib.detectors.onnx_pipeline import METADATA_KEY, OPSET  # noqa: E402
from helpers import FAST  # noqa: E402

#: runs in a fresh interpreter in which torch and patchcore_lib cannot be imported
ORT_ONLY = """
import sys
for name in ("torch", "torchvision", "patchcore_lib"):
    sys.modules[name] = None  # any import of them raises ImportError
import json, numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
score, anomaly_map = session.run(None, {"image": np.load(sys.argv[2])})
meta = json.loads(session.get_modelmeta().custom_metadata_map["patchcore_lib"])
print(json.dumps({"scores": score.tolist(), "map_shape": list(anomaly_map.shape),
                  "inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()],
                  "threshold": (meta["threshold"] or {}).get("threshold"), "imagesize": meta["preprocessing"]["imagesize"]}))
"""


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    """patchcore fit on the tiny category (calibrated threshold): the model file."""
    out = tmp_path_factory.mktemp("onnx_fit") / "model.pt"
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(out), *FAST,
                 "--calibration-folds", "3"]) == 0
    return out


def _images(root: Path) -> list[Path]:
    return sorted((root / "tiny" / "test").rglob("*.png"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_onnxruntime_alone_reproduces_predict(fitted, synthetic_root, tmp_path):
    model_onnx = tmp_path / "model.onnx"
    assert main(["export", "--model", str(fitted), "--out", str(model_onnx), "--data-root", str(synthetic_root),
                 "--category", "tiny", "--quiet"]) == 0
    proto = onnx.load(str(model_onnx))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= OPSET and METADATA_KEY in {p.key for p in proto.metadata_props}
    side = json.loads(Path(f"{model_onnx}.json").read_text())
    assert side["check"]["num_images"] == 16 and side["check"]["max_relative_difference"] <= 1e-4

    images = _images(synthetic_root)
    assert main(["predict", "--model", str(fitted), *map(str, images), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    predicted = {Path(r["path"]).resolve(): float(r["score"])
                 for r in csv.DictReader(open(tmp_path / "p" / "predictions.csv"))}
    model = PatchCore.load(fitted)
    config = model.config
    data = ImageList(images, config.resize, config.imagesize, crop=config.crop)
    batch = np.stack([data[i]["image"].numpy() for i in range(len(data))]).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    result = subprocess.run([sys.executable, "-c", ORT_ONLY, str(model_onnx), str(tmp_path / "batch.npy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["inputs"] == ["image"] and out["outputs"] == ["score", "anomaly_map"]
    assert out["map_shape"] == [len(images), config.imagesize, config.imagesize]
    assert out["threshold"] == model.threshold["threshold"] and out["imagesize"] == config.imagesize
    expected = np.array([predicted[p.resolve()] for p in images])
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-4)

    # patchcore predict runs the ONNX file itself (onnxruntime): the same rows
    assert main(["predict", "--model", str(model_onnx), *map(str, images), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    from_onnx = {Path(r["path"]).resolve(): r for r in csv.DictReader(open(tmp_path / "q" / "predictions.csv"))}
    np.testing.assert_allclose([float(from_onnx[p.resolve()]["score"]) for p in images], expected, rtol=1e-4)
    assert all(from_onnx[p.resolve()]["threshold"] for p in images)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--score", "reweighted"], ["--num-nn", "3", "--distance", "euclidean"]])
def test_other_scoring_settings_export_exactly(options, synthetic_root, tmp_path):
    model = tmp_path / "model.pt"
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(model), *FAST, *options,
                 "--calibration-folds", "0"]) == 0
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model), "--out", str(out), "--images", str(synthetic_root / "tiny" / "test"),
                 "--quiet"]) == 0
    check = json.loads(Path(f"{out}.json").read_text())["check"]
    assert check["max_relative_difference"] <= 1e-4 and check["max_map_difference_relative_to_map_max"] <= 1e-4


@pytest.mark.slow
def test_a_tolerance_below_the_difference_writes_nothing(fitted, synthetic_root, tmp_path):
    out = tmp_path / "model.onnx"
    code = main(["export", "--model", str(fitted), "--out", str(out), "--images", str(synthetic_root / "tiny" / "test"),
                 "--rtol", "0", "--quiet"])
    if code == 0:  # bit-identical scores: nothing to refuse
        assert json.loads(Path(f"{out}.json").read_text())["check"]["max_relative_difference"] == 0
    else:
        assert code == 4 and not out.exists() and not Path(f"{out}.json").exists()


def test_a_file_that_is_not_onnx_is_one_model_error(synthetic_root, tmp_path, capsys):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    image = next((synthetic_root / "tiny" / "test" / "good").glob("*.png"))
    assert main(["predict", "--model", str(junk), str(image), "--out", str(tmp_path / "o")]) == 4
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "model.onnx" in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_the_export_check_labels_its_two_progress_bars_apart(export_format, fitted, synthetic_root, tmp_path, capsys):
    from patchcore_lib.detectors.export import CHECK_EAGER, CHECK_EXPORTED
    from patchcore_lib.detectors.onnx_pipeline import CHECK_PIPELINE

    assert main(["export", "--model", str(fitted), "--format", export_format, "--out", str(tmp_path / "model.out"),
                 "--images", str(synthetic_root / "tiny" / "test" / "good")]) == 0  # progress bars shown
    err = capsys.readouterr().err
    exported = CHECK_PIPELINE if export_format == "onnx" else CHECK_EXPORTED["torchscript"]
    assert CHECK_EAGER in err and exported in err and CHECK_EAGER != exported
    assert "Scoring test images" not in err
    assert err.index(CHECK_EAGER) < err.index(exported)  # the eager model is scored first
