"""CLI and study-level reliability: result files, clear one-line errors, resume after a kill, lock."""
import csv
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from patchcore_lib.cli import main
from patchcore_lib.utils.files import output_lock
from helpers import FAST, ROOT


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "patchcore_lib", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_evaluate_writes_results_scores_and_run_record(synthetic_root, tmp_path):
    out = tmp_path / "out"
    assert main(["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST,
                 "--save-model", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["category"] for r in rows] == ["tiny", "mean"]
    for column in ("image_auroc", "pixel_auroc", "pro", "fit_seconds", "predict_seconds", "memory_bank_size"):
        assert column in rows[0]
    assert 0 <= float(rows[0]["image_auroc"]) <= 1 and 0 <= float(rows[0]["pro"]) <= 1
    assert rows[0]["run_id"]
    scores = list(csv.DictReader(open(out / "tiny" / "scores.csv")))
    assert len(scores) == int(rows[0]["num_test"]) and {"path", "defect_type", "label", "score"} <= set(scores[0])
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["backbone"] == "resnet18" and "torch" in run["versions"]
    assert "tiny" in run["dataset_fingerprints"] and run["run_id"] == rows[0]["run_id"]
    if (ROOT / ".git").exists():  # a git checkout: its commit is recorded
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run["git_commit"] or ""), run["git_commit"]
    assert not (out / ".lock").exists()  # the lock is released and removed
    assert (out / "tiny" / "model.pt").is_file()
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("args,message", [
    (["--data-root", "{tmp}/missing", "--category", "x"], "data root {tmp}/missing does not exist"),
    (["--data-root", "{root}", "--category", "carpet"], "category 'carpet' not found"),
    (["--data-root", "{root}", "--category", "tiny", "--coreset-ratio", "0"], r"coreset_ratio must be in (0, 1], got 0.0"),
    (["--data-root", "{root}", "--category", "tiny", "--layers", "layer9"], "unknown layer(s) 'layer9'"),
    (["--data-root", "{root}", "--category", "tiny", "--imagesize", "16", "--resize", "16"], "too small"),
    (["--data-root", "{root}", "--category", "tiny", "--num-nn", "100000"], "larger than the memory bank"),
    (["--data-root", "{root}", "--category", "tiny", "--backbone", "vgg"], "unknown backbone 'vgg'; valid backbones:"),
])
def test_bad_input_is_one_line_on_stderr_without_traceback(synthetic_root, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, root=synthetic_root) for a in args]
    result = run_cli("evaluate", *FAST, *args, "--out", str(tmp_path / "out"))  # later options win
    assert result.returncode != 0
    assert message.format(tmp=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "out").exists()  # no partial results, not even an empty folder


def _broken_copy(root: Path, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    """A copy of the ``tiny`` category with one defect; returns (data root, the file at fault)."""
    data = tmp_path / "data"
    shutil.copytree(root / "tiny", data / "tiny")
    category = data / "tiny"
    train = sorted((category / "train" / "good").iterdir())
    defect_dir = next(d for d in sorted((category / "test").iterdir()) if d.name != "good")
    defect_image = sorted(defect_dir.iterdir())[0]
    mask = category / "ground_truth" / defect_dir.name / f"{defect_image.stem}_mask.png"
    if damage == "empty_train":
        for path in train:
            path.unlink()
        return data, category / "train" / "good"
    if damage == "truncated_image":
        train[0].write_bytes(train[0].read_bytes()[:200])
        return data, train[0]
    if damage == "non_image":
        stray = defect_dir / "notes.txt"
        stray.write_text("not an image")
        return data, stray
    if damage == "missing_mask":
        mask.unlink()
        return data, defect_image
    if damage == "mask_size":
        Image.open(mask).resize((17, 17)).save(mask)
        return data, mask
    raise ValueError(damage)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("damage", ["empty_train", "truncated_image", "non_image", "missing_mask", "mask_size"])
def test_bad_dataset_is_one_line_naming_the_file_and_leaves_nothing(synthetic_root, tmp_path, damage):
    data, culprit = _broken_copy(synthetic_root, tmp_path, damage)
    out = tmp_path / "out"
    result = run_cli("evaluate", "--data-root", str(data), "--category", "tiny", *FAST, "--out", str(out))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(culprit) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("evaluate", "--data-root", str(tmp_path / "nope"), "--category", "x", "--out", str(tmp_path), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_unwritable_output_directory(synthetic_root, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        result = run_cli("evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST,
                         "--out", str(locked / "out"))
        assert result.returncode != 0 and "not writable" in result.stderr
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
@pytest.mark.subprocess
def test_unwritable_output_path_is_clear(synthetic_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST,
                     "--out", str(blocker / "out"))
    assert result.returncode != 0 and f"output directory {blocker / 'out'} is not writable" in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_study_resumes_without_redoing_finished_categories(three_categories_root, tmp_path):
    root = three_categories_root
    out = tmp_path / "out"
    args = [sys.executable, "-m", "patchcore_lib", "evaluate", "--data-root", str(root), "--category", "cat_a",
            "--category", "cat_b", "--category", "cat_c", *FAST, "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "results.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_a = (out / "cat_a" / "metrics.json").read_text()
    rows = list(csv.DictReader(open(out / "results.csv")))  # never a half-written file
    assert rows[0]["category"] == "cat_a" and rows[-1]["category"] == "mean"
    # without --quiet: "already done" is an INFO message, which --quiet leaves out
    result = subprocess.run([a for a in args if a != "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "patchcore: cat_a: already done" in result.stderr
    assert (out / "cat_a" / "metrics.json").read_text() == finished_a
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["category"] for r in rows] == ["cat_a", "cat_b", "cat_c", "mean"]
    first_run = json.loads(finished_a)["row"]["run_id"]
    run = json.loads((out / "run.json").read_text())
    assert run["reused"] == {"cat_a": first_run} and rows[0]["run_id"] == first_run  # provenance of each row
    assert rows[1]["run_id"] == rows[2]["run_id"] == run["run_id"] != first_run
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_second_study_into_the_same_directory_is_refused(tmp_path):
    with output_lock(tmp_path):
        code = ("import sys; from pathlib import Path; from patchcore_lib.utils.files import output_lock\n"
                "with output_lock(Path(sys.argv[1])): pass\n")
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert result.returncode != 0 and "is in use by another run (pid" in result.stderr
    with output_lock(tmp_path):  # released: usable again
        pass
    assert not (tmp_path / ".lock").exists()



@pytest.mark.slow
def test_feature_cache_rebuilds_corrupt_or_foreign_entries(synthetic_root, tmp_path):
    import torch

    from patchcore_lib.study.cached_features import cached_split_features
    from patchcore_lib.detectors.patchcore import PatchCore

    model = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64)
    first, grid, cached = cached_split_features(model, synthetic_root, "tiny", "train", tmp_path, show_progress=False)
    assert not cached and first.shape[:2] == (12, grid[0] * grid[1])
    again, _, cached = cached_split_features(model, synthetic_root, "tiny", "train", tmp_path, show_progress=False)
    assert cached and torch.equal(first, again)
    (entry,) = tmp_path.glob("features/*.pt")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 3])  # truncated
    rebuilt, _, cached = cached_split_features(model, synthetic_root, "tiny", "train", tmp_path, show_progress=False)
    assert not cached and torch.equal(first, rebuilt)
    payload = torch.load(entry, weights_only=True)
    payload["key"] = "0" * 32  # an entry that does not match its key
    torch.save(payload, entry)
    _, _, cached = cached_split_features(model, synthetic_root, "tiny", "train", tmp_path, show_progress=False)
    assert not cached
    other = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64, patch_size=5)
    _, _, cached = cached_split_features(other, synthetic_root, "tiny", "train", tmp_path, show_progress=False)
    assert not cached and len(list(tmp_path.glob("features/*.pt"))) == 2


@pytest.mark.slow
def test_feature_cache_notices_weights_replaced_at_the_same_path(synthetic_root, tmp_path):
    import torch
    import torchvision

    from patchcore_lib.study.cached_features import cached_split_features
    from patchcore_lib.detectors.patchcore import PatchCore

    weights = tmp_path / "resnet18.pth"
    cache = tmp_path / "cache"
    for seed, expect_cached in ((0, False), (0, True), (1, False)):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        model = PatchCore(backbone="resnet18", weights=str(weights), resize=64, imagesize=64)
        _, _, cached = cached_split_features(model, synthetic_root, "tiny", "train", cache, show_progress=False)
        assert cached == expect_cached, seed
