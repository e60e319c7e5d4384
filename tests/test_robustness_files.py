"""Issue 18, stale results and file integrity: content-keyed resume (evaluate, feature cache, study), outputs
asked for being present and valid, model/cache checksums, non-finite banks, wrong types, disk full, umask."""
from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from patchcore_lib.data import make_synthetic_dataset
from patchcore_lib.detectors import PaDiM, PatchCore
from patchcore_lib.detectors.patchcore import MODEL_FORMAT
from patchcore_lib.errors import ModelFileError, OutputError
from patchcore_lib.evaluation.runner import evaluate
from patchcore_lib.utils.integrity import seal
from helpers import FAST_KWARGS as FAST


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))


def _bmp_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of the synthetic dataset with BMP test images: same pixel size, same file size."""
    target = tmp_path / "data"
    shutil.copytree(root, target)
    for path in sorted((target / "tiny").rglob("*.png")):
        if "ground_truth" not in path.parts:
            Image.open(path).convert("RGB").save(path.with_suffix(".bmp"))
            path.unlink()
    return target


def _overwrite_defects_with_good_images(root: Path) -> None:
    goods = sorted((root / "tiny" / "test" / "good").glob("*.bmp"))
    for index, path in enumerate(sorted(p for p in (root / "tiny" / "test").rglob("*.bmp") if p.parent.name != "good")):
        data = goods[index % len(goods)].read_bytes()
        assert len(data) == path.stat().st_size
        path.write_bytes(data)


# --- case 4: same-size content changes ------------------------------------------------------------------------
def test_evaluate_recomputes_when_images_change_with_the_same_sizes(synthetic_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="patchcore_lib")  # "already done" is an INFO record of the package logger
    root = _bmp_copy(synthetic_root, tmp_path)
    first = evaluate(PatchCore(**FAST), root, ["tiny"], tmp_path / "out", show_progress=False)
    _overwrite_defects_with_good_images(root)  # the defect images are now normal ones: AUROC near 0.5
    caplog.clear()
    second = evaluate(PatchCore(**FAST), root, ["tiny"], tmp_path / "out", show_progress=False)
    assert "already done" not in caplog.text
    # recomputed, not reused: a new run (run ids have microsecond resolution) with new metrics
    assert second[0]["run_id"] != first[0]["run_id"] and second[0]["image_auroc"] != first[0]["image_auroc"]


def test_feature_cache_returns_new_features_for_new_content(synthetic_root, tmp_path):
    from patchcore_lib.study.cached_features import cached_split_features

    root = _bmp_copy(synthetic_root, tmp_path)
    model = PatchCore(**FAST)
    before, _, _ = cached_split_features(model, root, "tiny", "test", tmp_path / "features", show_progress=False)
    _overwrite_defects_with_good_images(root)
    after, _, cached = cached_split_features(model, root, "tiny", "test", tmp_path / "features", show_progress=False)
    assert not cached and not torch.equal(before, after)


# --- case 6: outputs asked for must be present and valid -------------------------------------------------------
def test_resumed_run_with_save_model_writes_the_model(synthetic_root, tmp_path):
    out = tmp_path / "out"
    evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, show_progress=False)
    assert not (out / "tiny" / "model.pt").exists()
    evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, save_model=True, show_progress=False)
    loaded = PatchCore.load(out / "tiny" / "model.pt")
    assert loaded.config.coreset_ratio == FAST["coreset_ratio"]


def test_model_of_another_configuration_does_not_stay_beside_new_metrics(synthetic_root, tmp_path):
    out = tmp_path / "out"
    evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, save_model=True, show_progress=False)
    other = dict(FAST, coreset_ratio=0.5)
    evaluate(PatchCore(**other), synthetic_root, ["tiny"], out, show_progress=False)
    metrics = json.loads((out / "tiny" / "metrics.json").read_text())
    assert metrics["config"]["coreset_ratio"] == 0.5
    model = out / "tiny" / "model.pt"
    assert not model.exists() or PatchCore.load(model).config.coreset_ratio == 0.5


def test_emptied_scores_csv_is_not_a_finished_category(synthetic_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="patchcore_lib")  # "already done" is an INFO record of the package logger
    out = tmp_path / "out"
    evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, show_progress=False)
    (out / "tiny" / "scores.csv").write_text("")
    caplog.clear()
    rows = evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, show_progress=False)
    assert "already done" not in caplog.text
    lines = (out / "tiny" / "scores.csv").read_text().splitlines()
    assert len(lines) == rows[0]["num_test"] + 1


# --- case 7: checksums, non-finite banks, corrupted cache entries ---------------------------------------------
@pytest.fixture(scope="module")
def fitted(synthetic_root):
    from patchcore_lib.data import open_split

    return PatchCore(**FAST).fit(open_split(synthetic_root, "tiny", "train", 64, 64), show_progress=False)


def test_bit_flips_in_a_model_file_never_load_as_another_model(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.pt")
    data = path.read_bytes()
    rng = random.Random(0)
    loaded_same = refused = 0
    for trial in range(40):
        flipped = bytearray(data)
        position = rng.randrange(len(data))
        flipped[position] ^= 1 << rng.randrange(8)
        target = tmp_path / f"flip{trial}.pt"
        target.write_bytes(bytes(flipped))
        try:
            model = PatchCore.load(target)
        except ModelFileError as exc:
            assert "\n" not in str(exc) and str(target) in str(exc)
            refused += 1
            continue
        assert torch.equal(model.memory_bank, fitted.memory_bank), position  # only harmless bytes may change
        assert model.config == fitted.config
        loaded_same += 1
    assert refused > 20


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_memory_bank_is_refused(fitted, tmp_path, value):
    bank = fitted.memory_bank.clone()
    fitted_bank, fitted.memory_bank = fitted.memory_bank, bank
    try:
        bank[3, 5] = value
        path = fitted.save(tmp_path / "model.pt")  # a correct checksum of a broken bank
    finally:
        fitted.memory_bank = fitted_bank
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        PatchCore.load(path)


def test_non_finite_gaussian_model_is_refused(synthetic_root, tmp_path):
    from patchcore_lib.data import open_split

    model = PaDiM(d=40, backbone="efficientnet_lite0", weights="random", resize=64, imagesize=64)
    model.fit(open_split(synthetic_root, "tiny", "train", 64, 64), show_progress=False)
    model.mean[0, 0] = float("nan")
    path = model.save(tmp_path / "padim.pt")
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        PaDiM.load(path)


def test_corrupted_feature_cache_entries_are_recomputed(synthetic_root, tmp_path):
    from patchcore_lib.study.cached_features import cached_split_features

    model = PatchCore(**FAST)
    cache = tmp_path / "features"
    reference, _, _ = cached_split_features(model, synthetic_root, "tiny", "train", cache, show_progress=False)
    (entry,) = cache.glob("features/*.pt")
    data = entry.read_bytes()
    rng = random.Random(1)
    used_corrupted = 0
    for _ in range(12):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data) // 4, len(data) * 3 // 4)] ^= 0x10  # inside the feature tensor
        entry.write_bytes(bytes(flipped))
        features, _, cached = cached_split_features(model, synthetic_root, "tiny", "train", cache,
                                                    show_progress=False)
        used_corrupted += cached
        assert torch.equal(features, reference)
    assert used_corrupted == 0


# --- case 13: wrong types in a model file ---------------------------------------------------------------------
def test_model_file_with_missing_keys_or_wrong_types_is_one_model_file_error(fitted, tmp_path):
    torch.save({"format": MODEL_FORMAT}, tmp_path / "format_only.pt")
    with pytest.raises(ModelFileError, match="format_only.pt"):
        PatchCore.load(tmp_path / "format_only.pt")
    payload = torch.load(fitted.save(tmp_path / "model.pt"), weights_only=True)
    payload["memory_bank"] = payload["memory_bank"].tolist()[:3]
    torch.save(seal(payload), tmp_path / "list_bank.pt")  # checksum right, content of the wrong type
    with pytest.raises(ModelFileError, match="list_bank.pt: the memory bank is a list, not a float tensor"):
        PatchCore.load(tmp_path / "list_bank.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["config"] = ["not", "a", "dict"]
    torch.save(seal(payload), tmp_path / "list_config.pt")
    with pytest.raises(ModelFileError, match="list_config.pt"):
        PatchCore.load(tmp_path / "list_config.pt")


# --- case 12: disk full while saving a model ------------------------------------------------------------------
def test_disk_full_while_saving_a_model_is_one_output_error(fitted, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        with pytest.raises(OutputError, match=r"cannot write .*model.pt: File too large"):
            fitted.save(tmp_path / "model.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "model.pt").exists()


# --- case 15: the user's umask --------------------------------------------------------------------------------
def test_outputs_are_created_with_the_users_umask(synthetic_root, tmp_path):
    previous = os.umask(0o027)
    try:
        out = tmp_path / "out"
        evaluate(PatchCore(**FAST), synthetic_root, ["tiny"], out, save_model=True, show_progress=False)
        made = make_synthetic_dataset(tmp_path / "synthetic", category="umask", n_train=2, n_test_good=1,
                                      n_test_per_defect=1, image_size=32)
    finally:
        os.umask(previous)
    for path in (out / "results.csv", out / "run.json", out / "tiny" / "metrics.json", out / "tiny" / "scores.csv",
                 out / "tiny" / "model.pt"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path
    assert oct(made.stat().st_mode & 0o777) == oct(0o750)


# --- case 5: the study's skip cache keys on the data --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.notebook
def test_study_reruns_a_notebook_when_its_data_changes(synthetic_root, tmp_path):
    pytest.importorskip("papermill")
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from patchcore_lib.study.engine import run_study

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    params = new_code_cell('data_root = ""\ncategory = ""\nreports_dir = None')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell("from pathlib import Path\n"
                         "defects = sorted(p.name for p in (Path(data_root) / category / 'test').iterdir())\n"
                         "log = Path(reports_dir) / 'calls.txt'\n"
                         "log.write_text((log.read_text() if log.exists() else '') + ','.join(defects) + '\\n')")
    nbformat.write(new_notebook(cells=[params, body], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), str(notebooks / "01_x.ipynb"))
    reports = tmp_path / "reports"
    kwargs = dict(categories=["tiny"], data_root=str(root), reports_dir=reports, notebooks_dir=notebooks,
                  log=lambda line: None)
    assert [r.status for r in run_study({"name": "t"}, **kwargs)] == ["done"]
    assert [r.status for r in run_study({"name": "t"}, **kwargs)] == ["skipped"]
    defect = sorted(p for p in (root / "tiny" / "test").iterdir() if p.name != "good")[0]
    shutil.rmtree(defect)
    shutil.rmtree(root / "tiny" / "ground_truth" / defect.name)
    assert [r.status for r in run_study({"name": "t"}, **kwargs)] == ["done"]
    calls = (reports / "calls.txt").read_text().split()
    assert len(calls) == 2 and defect.name in calls[0] and defect.name not in calls[1]
    html = next((reports / "executed").glob("*.html"))
    html.write_text("")  # an emptied report is not a finished run
    assert [r.status for r in run_study({"name": "t"}, **kwargs)] == ["done"]
