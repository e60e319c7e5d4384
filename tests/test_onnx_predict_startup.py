"""Issue 30, 4: ``patchcore predict --model model.onnx`` imports neither torch, torchvision nor timm (start-up to
the first score well under 3 s), and scores like the ``.pt`` model it was exported from: the images are prepared
in numpy / PIL exactly as the torch preprocessing prepares them."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcore_lib.cli import main
from patchcore_lib.cli.exit_codes import EXIT_PARTIAL
from patchcore_lib.data.model_input import model_input
from patchcore_lib.data.preprocessing import Preprocess
from helpers import FAST, ROOT

#: a sitecustomize (first on PYTHONPATH) under which importing torch, torchvision or timm raises ImportError; each
#: attempt is also written to $BLOCKED_IMPORTS_LOG, so an import that some code catches is seen too
BLOCKER = '''
import os, sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _Blocker())
'''


@pytest.mark.parametrize("size", [(128, 128), (300, 257), (257, 300), (640, 96), (80, 80)])
@pytest.mark.parametrize("crop, resize, imagesize", [("center", 80, 64), ("center", 64, 64), ("none", 80, 64)])
def test_numpy_preprocessing_equals_the_torch_preprocessing_bit_for_bit(size, crop, resize, imagesize):
    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = Preprocess(resize, imagesize, crop=crop).image(image).numpy()
    got = model_input(image, resize, imagesize, crop)
    assert got.dtype == np.float32 and got.shape == (3, imagesize, imagesize)
    np.testing.assert_array_equal(got, expected)


def _blocked_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    folder = tmp_path / "blocker"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked_imports.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]), "BLOCKED_IMPORTS_LOG": str(log)}
    return env, log


@pytest.mark.subprocess
def test_the_blocker_blocks_and_the_predict_command_imports_no_torch(tmp_path):
    """A fresh interpreter under the blocker: torch cannot be imported; the predict command's module, the data
    package and the ONNX runner import without trying to."""
    env, log = _blocked_env(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert blocked.returncode != 0 and "blocked" in blocked.stderr
    log.unlink()
    light = subprocess.run([sys.executable, "-c", "import patchcore_lib.cli.predict, patchcore_lib.data, "
                            "patchcore_lib.detectors.onnx_model"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert light.returncode == 0, light.stderr
    assert not log.exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_registries_import_the_modules_that_fill_them():
    """The packages load their modules on first use: a registry imported with only some of its modules still lists
    every detector and layout once asked, in the order the packages used to import them."""
    code = ("import patchcore_lib.detectors.gaussian, patchcore_lib.data.folder; "
            "from patchcore_lib.detectors.base import DETECTORS; from patchcore_lib.data.layouts import LAYOUTS; "
            "print(DETECTORS.names(), LAYOUTS.names())")
    full = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    assert full.stdout.split() == ["('patchcore',", "'patchcore_ensemble',", "'padim',", "'orthoad')",
                                   "('mvtec',", "'folder')"]


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    """A quick model fitted with a centre crop (resize 80, crop 64 of the 128 px images) and its ONNX export."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("onnx_startup")
    model = folder / "model.pt"
    assert main(["fit", "--train", str(synthetic_root / "tiny" / "train"), "--out", str(model), *FAST,
                 "--resize", "80", "--calibration-folds", "3"]) == 0
    onnx_file = folder / "model.onnx"
    assert main(["export", "--model", str(model), "--out", str(onnx_file), "--images",
                 str(synthetic_root / "tiny" / "test"), "--quiet"]) == 0
    return model, onnx_file


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="") as handle:
        return {Path(row["path"]).name if row["error"] else str(Path(row["path"]).resolve()): row
                for row in csv.DictReader(handle)}


@pytest.mark.slow
@pytest.mark.subprocess
def test_onnx_predict_runs_without_torch_and_scores_like_the_pt_model(exported, synthetic_root, tmp_path):
    model, onnx_file = exported
    images = sorted((synthetic_root / "tiny" / "test").rglob("*.png"))
    broken = tmp_path / "inputs" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png")
    inputs = [*map(str, images), str(broken)]

    assert main(["predict", "--model", str(model), *inputs, "--out", str(tmp_path / "pt"), "--save-raw-maps",
                 "--quiet"]) == EXIT_PARTIAL
    env, log = _blocked_env(tmp_path)
    result = subprocess.run([sys.executable, "-m", "patchcore_lib", "predict", "--model", str(onnx_file), *inputs,
                             "--out", str(tmp_path / "onnx"), "--save-raw-maps", "--quiet"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_PARTIAL, result.stderr
    assert not log.exists(), f"imports attempted: {log.read_text()}"
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr

    eager, onnx_rows = _rows(tmp_path / "pt"), _rows(tmp_path / "onnx")
    assert eager.keys() == onnx_rows.keys() and len(onnx_rows) == len(images) + 1
    assert onnx_rows["broken.png"]["error"] and not onnx_rows["broken.png"]["score"]
    keys = [str(p.resolve()) for p in images]
    np.testing.assert_allclose([float(onnx_rows[k]["score"]) for k in keys], [float(eager[k]["score"]) for k in keys],
                               rtol=1e-4)
    assert [onnx_rows[k]["is_anomalous"] for k in keys] == [eager[k]["is_anomalous"] for k in keys]
    assert all(onnx_rows[k]["threshold"] == eager[k]["threshold"] != "" for k in keys)
    for key in keys:  # the heat-map overlays (image size + colour bar) and the raw maps are written
        overlay = tmp_path / "onnx" / onnx_rows[key]["map"]
        assert overlay.is_file() and Image.open(overlay).size[1] == Image.open(key).size[1]
        raw, expected = np.load(overlay.with_suffix(".npy")), np.load((tmp_path / "pt" / eager[key]["map"])
                                                                      .with_suffix(".npy"))
        assert raw.shape == expected.shape == (64, 64)
        assert np.abs(raw - expected).max() <= 1e-3 * np.abs(expected).max()
