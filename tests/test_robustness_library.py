"""Issue 29 (nothing stale, round 3), the library's side: numbers that decide a label are finite or refused,
model files and bundles of the wrong shape are one ModelFileError, data edited during an evaluation is not
recorded as done, extreme images and label masks get the right message, study staging is clean and quoted."""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchcore_lib.data import ImageList, open_split
from patchcore_lib.data.preprocessing import load_mask, load_rgb
from patchcore_lib.detectors import PatchCore, load_detector
from patchcore_lib.detectors.export import export_model
from patchcore_lib.errors import DatasetError, ModelFileError
from patchcore_lib.evaluation.runner import EVALUATION, evaluate
from patchcore_lib.utils.integrity import seal
from patchcore_lib.utils.store import Store
from helpers import FAST_KWARGS


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fitted(synthetic_root):
    return PatchCore(**FAST_KWARGS).fit(open_split(synthetic_root, "tiny", "train", 64, 64), show_progress=False)


def _resealed(path: Path, target: Path, change) -> Path:
    payload = torch.load(path, weights_only=True)
    payload.pop("checksum", None)
    change(payload)
    torch.save(seal(payload), target)
    return target


# --- case 9: non-finite thresholds and banks --------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, "0.5", [1.0]])
def test_a_model_file_with_a_threshold_that_is_not_a_finite_number_is_refused(value, fitted, tmp_path):
    model = fitted.save(tmp_path / "model.pt")

    def change(payload):
        payload["threshold"] = {"threshold": value, "false_alarm_rate": 0.01}

    with pytest.raises(ModelFileError, match="not a finite number"):
        PatchCore.load(_resealed(model, tmp_path / "bad.pt", change))


@pytest.mark.slow
def test_an_exported_bundle_with_a_nan_bank_or_junk_graph_is_refused(fitted, synthetic_root, tmp_path):
    images = sorted((synthetic_root / "tiny" / "test" / "good").glob("*.png"))[:2]
    bundle = tmp_path / "model.ts"
    export_model(fitted, "torchscript", bundle, images)

    def nan_bank(payload):
        payload["memory_bank"][0, 0] = math.nan

    def junk_graph(payload):
        payload["graph"] = b"junk"

    def wrong_grid(payload):
        payload["grid"] = "8x8"

    for change, message in ((nan_bank, "NaN or infinite"), (junk_graph, "cannot be read"),
                            (wrong_grid, "wrong type")):
        with pytest.raises(ModelFileError, match=message):
            load_detector(_resealed(bundle, tmp_path / f"{change.__name__}.ts", change))


@pytest.mark.slow
def test_a_nan_tolerance_never_passes_the_export_check(fitted, synthetic_root, tmp_path):
    images = sorted((synthetic_root / "tiny" / "test" / "good").glob("*.png"))[:2]
    with pytest.raises(ModelFileError, match="not written"):
        export_model(fitted, "torchscript", tmp_path / "m.ts", images, rtol=math.nan)
    assert not (tmp_path / "m.ts").exists()


# --- case 18: damage is reported as damage ------------------------------------------------------------------------
def test_a_flipped_bit_in_the_format_is_reported_as_damage(fitted, tmp_path):
    data = bytearray(fitted.save(tmp_path / "model.pt").read_bytes())
    position = bytes(data).find(b"patchcore_lib")
    assert position > 0
    data[position + 3] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as info:
        PatchCore.load(tmp_path / "flipped.pt")
    assert "re-fit the model with this version" not in str(info.value)
    assert "damaged" in str(info.value) or "truncated" in str(info.value)


def test_a_nan_float_image_says_nan(tmp_path):
    array = np.full((8, 8), 0.5, dtype=np.float32)
    array[2, 3] = np.nan
    Image.fromarray(array, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(DatasetError, match="1 NaN or infinite values"):
        load_rgb(tmp_path / "nan.tiff")


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_a_label_mask_is_not_binary_and_not_empty(mode, tmp_path):
    labels = np.zeros((8, 8), dtype=np.uint16 if mode == "I;16" else np.uint8)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 2
    Image.fromarray(labels).save(tmp_path / "mask.png")  # uint16: a 16-bit grey PNG
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = np.asarray(load_mask(tmp_path / "mask.png", (8, 8), tmp_path / "image.png"))
    assert (mask > 0).sum() == 8
    messages = [str(w.message) for w in caught]
    assert any("not binary" in m for m in messages) and not any("empty" in m for m in messages)


# --- case 14: an extreme aspect ratio is refused before allocating ------------------------------------------------
def test_an_extreme_aspect_ratio_is_one_error_naming_the_file(tmp_path):
    Image.new("RGB", (100_000, 1)).save(tmp_path / "line.png")
    with pytest.raises(DatasetError, match="line.png: a 100000x1 image"):
        ImageList([tmp_path / "line.png"], 256, 224)[0]


# --- cases 7 and 8: evaluate counts a category once; data edited while it runs is not recorded ------------------
class _EditsTheDataWhileFitting(PatchCore):
    """Fits normally, but a test image of the category is replaced meanwhile (as another process would)."""

    target: Path | None = None

    def fit(self, *args, **kwargs):
        good = sorted(self.target.parent.glob("*.png"))
        self.target.write_bytes(good[-1].read_bytes() if good[-1] != self.target else good[0].read_bytes())
        return super().fit(*args, **kwargs)


@pytest.mark.slow
def test_evaluate_records_nothing_when_the_data_changed_meanwhile(synthetic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "tiny", data / "tiny")
    detector = _EditsTheDataWhileFitting(**FAST_KWARGS)
    detector.target = sorted((data / "tiny" / "test" / "good").glob("*.png"))[0]
    rows = evaluate(detector, data, ["tiny", "tiny"], tmp_path / "out", show_progress=False)
    assert len(rows) == 1  # named twice, evaluated once
    assert (tmp_path / "out" / "tiny" / "metrics.json").is_file()
    assert Store.beside(tmp_path / "out").latest(EVALUATION, "tiny") is None  # written, not recorded as done


# --- cases 13 and 19: study staging -------------------------------------------------------------------------------
def test_a_quote_in_the_reports_path_keeps_staged_json_valid(tmp_path):
    from patchcore_lib.study.engine.tasks import _staged_files

    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "metrics.json").write_text(json.dumps({"folder": str(stage / "run")}))
    (stage / "note.md").write_text(f"see {stage}/run")
    reports = '/data/my "reports"\\2026'
    files = _staged_files(stage, {}, str(stage).encode(), reports.encode())
    assert json.loads(files["metrics.json"])["folder"] == f"{reports}/run"
    assert files["note.md"].decode() == f"see {reports}/run"


def test_staging_folders_of_dead_workers_are_removed(tmp_path):
    from patchcore_lib.study.engine.tasks import STAGE_PREFIX, remove_stale_stages

    dead = tmp_path / f"{STAGE_PREFIX}{2 ** 22 + 12345}-abc"  # above Linux's default pid_max
    mine = tmp_path / f"{STAGE_PREFIX}{os.getpid()}-def"
    alive = tmp_path / f"{STAGE_PREFIX}1-ghi"  # init: always alive
    for folder in (dead, mine, alive):
        (folder / "x").mkdir(parents=True)
    assert remove_stale_stages(tmp_path) == [dead]
    assert mine.is_dir() and alive.is_dir() and not dead.exists()
