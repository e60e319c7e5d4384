"""Issue 29 (nothing stale, round 3), the resume keys: the dataset layout, a weights file's content (evaluate and
the study), data reached through a symlinked folder, and model files whose fields have the wrong type."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from patchcore_lib.cli import main
from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore
from patchcore_lib.errors import ModelFileError
from patchcore_lib.study.engine.keys import run_key
from patchcore_lib.utils.integrity import seal
from helpers import FAST, FAST_KWARGS


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))


def _run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


# --- case 2: the layout is part of evaluate's key ---------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_with_another_layout_is_not_reused(synthetic_root, tmp_path):
    out = tmp_path / "out"
    args = ["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST, "--out", str(out)]
    assert main([*args, "--layout", "mvtec"]) == 0
    assert main([*args, "--layout", "mvtec"]) == 0
    assert set(_run(out)["reused"]) == {"tiny"}  # same layout: the finished result is kept
    assert main([*args, "--layout", "folder"]) == 0
    run = _run(out)
    assert run["reused"] == {} and run["layouts"] == {"tiny": "folder"}  # other layout: computed again


# --- case 4: an image edited inside a symlinked test/<defect> folder ---------------------------------------------
@pytest.mark.slow
def test_evaluate_follows_symlinked_data_folders(synthetic_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root / "tiny", root / "tiny", ignore=shutil.ignore_patterns("test"))
    test = root / "tiny" / "test"
    test.mkdir()
    elsewhere = tmp_path / "elsewhere"
    for folder in (synthetic_root / "tiny" / "test").iterdir():  # every test/<label> folder is a link
        shutil.copytree(folder, elsewhere / folder.name)
        (test / folder.name).symlink_to(elsewhere / folder.name, target_is_directory=True)
    out = tmp_path / "out"
    args = ["evaluate", "--data-root", str(root), "--category", "tiny", *FAST, "--out", str(out)]
    assert main(args) == 0
    defect = next(p for p in sorted(elsewhere.rglob("*.png")) if p.parent.name != "good")
    image = Image.open(defect).convert("RGB")
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(defect)  # same size, other content
    assert main(args) == 0
    assert _run(out)["reused"] == {}  # the edited image behind the link is seen


# --- case 3 (study): a weights file enters a notebook run's key by its content ----------------------------------
def test_a_study_run_key_changes_with_the_weights_file_content(tmp_path):
    notebook = tmp_path / "01_x.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    weights = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, weights)
    before = run_key(notebook, {"weights": str(weights), "category": "bottle"})
    torch.save({"a": torch.ones(2)}, weights)  # same path, other weights
    after = run_key(notebook, {"weights": str(weights), "category": "bottle"})
    moved = tmp_path / "elsewhere.pt"
    shutil.copy(weights, moved)
    assert before != after and run_key(notebook, {"weights": str(moved), "category": "bottle"}) == after


# --- case 16: model files whose fields have the wrong type -------------------------------------------------------
@pytest.fixture(scope="module")
def model_path(synthetic_root, tmp_path_factory):
    model = PatchCore(**FAST_KWARGS).fit(open_split(synthetic_root, "tiny", "train", 64, 64), show_progress=False)
    return model.save(tmp_path_factory.mktemp("model") / "model.pt")


def _bank_as_text(payload):
    payload["memory_bank"] = "not a tensor"


def _no_config(payload):
    payload.pop("config")


def _bad_imagesize(payload):
    payload["config"]["imagesize"] = "large"


def _config_as_list(payload):
    payload["config"] = [1, 2]


@pytest.mark.parametrize("change", [_bank_as_text, _no_config, _bad_imagesize, _config_as_list])
def test_a_model_file_with_a_wrong_typed_field_is_one_model_file_error(change, model_path, tmp_path):
    payload = torch.load(model_path, weights_only=True)
    payload.pop("checksum", None)
    change(payload)
    bad = tmp_path / "bad.pt"
    torch.save(seal(payload), bad)  # a correct checksum of a malformed payload
    with pytest.raises(ModelFileError) as caught:
        PatchCore.load(bad)
    assert str(bad) in str(caught.value)
