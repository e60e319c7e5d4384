"""Tests of the synthetic MVTec-layout dataset generator."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchcore_lib.data import synthetic
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.data.synthetic import (
    DEFAULT_DEFECTS,
    DEFECT_TYPES,
    MARKER_NAME,
    SYNTHETIC_KINDS,
    default_synthetic_root,
    ensure_default_dataset,
    make_synthetic_dataset,
    synthetic_sample,
)

SMALL = dict(n_train=3, n_test_good=2, n_test_per_defect=2, image_size=64)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_layout_and_counts(tmp_path, kind):
    out = make_synthetic_dataset(tmp_path, category=f"syn_{kind}", kind=kind, **SMALL)
    assert out == tmp_path / f"syn_{kind}"
    defects = DEFAULT_DEFECTS[kind]
    assert 3 <= len(defects) <= 4
    assert sorted(p.name for p in (out / "train/good").iterdir()) == ["000.png", "001.png", "002.png"]
    assert sorted(p.name for p in (out / "test/good").iterdir()) == ["000.png", "001.png"]
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(["good", *defects])
    assert sorted(p.name for p in (out / "ground_truth").iterdir()) == sorted(defects)
    for defect in defects:
        assert sorted(p.name for p in (out / "test" / defect).iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (out / "ground_truth" / defect).iterdir()) == ["000_mask.png", "001_mask.png"]
    for png in out.rglob("*.png"):
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size == (64, 64)
            assert img.mode == ("L" if png.parent.parent.name == "ground_truth" else "RGB")
    # nothing left behind besides the dataset
    assert [p.name for p in tmp_path.iterdir()] == [f"syn_{kind}"]


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_masks_binary_nonempty_and_exact(tmp_path, kind):
    out = make_synthetic_dataset(tmp_path, kind=kind, category="c", defect_types=DEFECT_TYPES,
                                 n_train=1, n_test_good=1, n_test_per_defect=2, image_size=96)
    for defect in DEFECT_TYPES:
        for i in range(2):
            mask = np.array(Image.open(out / "ground_truth" / defect / f"{i:03d}_mask.png"))
            image = np.array(Image.open(out / "test" / defect / f"{i:03d}.png"))
            assert mask.shape == image.shape[:2] == (96, 96)
            assert set(np.unique(mask)) <= {0, 255}
            area = (mask > 0).mean()
            assert 0.002 < area < 0.25, (defect, area)
            clean, defective, mask_arr = synthetic_sample(kind, "test", i, defect, image_size=96, seed=0)
            assert np.array_equal(defective, image)  # the helper reproduces the written file
            assert np.array_equal(mask_arr, mask > 0)
            changed = np.any(clean != image, axis=2)
            assert np.array_equal(changed, mask > 0), defect  # mask == exactly the altered pixels


def test_defects_are_clear(tmp_path):
    """Defects are large enough and of high contrast at the default size."""
    for kind in SYNTHETIC_KINDS:
        for defect in DEFECT_TYPES:
            for i in range(6):
                clean, image, mask = synthetic_sample(kind, "test", i, defect, image_size=256)
                ys, xs = np.nonzero(mask)
                extent = max(np.ptp(ys), np.ptp(xs)) + 1
                assert extent >= 0.05 * 256, (kind, defect, i, extent)
                diff = np.abs(clean.astype(int) - image.astype(int)).max(axis=2)[mask]
                assert diff.mean() > 40, (kind, defect, i, diff.mean())


def test_normal_images_vary_but_stay_similar():
    imgs = [synthetic_sample("texture", "train", i, image_size=64)[1].astype(float) for i in range(3)]
    assert not np.array_equal(imgs[0], imgs[1])
    assert abs(imgs[0].mean() - imgs[1].mean()) < 20
    objs = [synthetic_sample("object", "train", i, image_size=64)[1] for i in range(2)]
    assert not np.array_equal(objs[0], objs[1])
    clean, image, mask = synthetic_sample("object", "test", 0, None, image_size=64)
    assert np.array_equal(clean, image) and not mask.any()


def test_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", kind="object", **SMALL)
    b = make_synthetic_dataset(tmp_path / "b", kind="object", **SMALL)
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys() and files_a == files_b
    c = make_synthetic_dataset(tmp_path / "c", kind="object", seed=1, **SMALL)
    assert _files(c)["train/good/000.png"] != files_a["train/good/000.png"]


def test_reuse_and_marker(tmp_path):
    out = make_synthetic_dataset(tmp_path, **SMALL)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["kind"] == "texture" and marker["n_train"] == 3 and marker["image_size"] == 64
    assert marker["defect_types"] == list(DEFAULT_DEFECTS["texture"])

    probe = out / "train/good/000.png"
    stamp = probe.stat().st_mtime_ns
    sentinel = out / "sentinel.txt"
    sentinel.write_text("kept while reused")
    assert make_synthetic_dataset(tmp_path, **SMALL) == out
    assert sentinel.exists() and probe.stat().st_mtime_ns == stamp  # reused, not regenerated

    make_synthetic_dataset(tmp_path, **SMALL, overwrite=True)
    assert not sentinel.exists()  # regenerated

    sentinel.write_text("x")
    make_synthetic_dataset(tmp_path, **{**SMALL, "n_train": 4})  # other arguments: regenerated
    assert not sentinel.exists() and (out / "train/good/003.png").is_file()
    assert json.loads((out / MARKER_NAME).read_text())["n_train"] == 4

    # a file deleted by hand makes the folder incomplete: regenerated
    (out / "test/good/001.png").unlink()
    make_synthetic_dataset(tmp_path, **{**SMALL, "n_train": 4})
    assert (out / "test/good/001.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic_texture"]  # no temp folders left


def test_folder_without_marker_is_not_replaced(tmp_path):
    real = tmp_path / "synthetic_texture" / "train" / "good"
    real.mkdir(parents=True)
    (real / "keep.png").write_bytes(b"user data")
    with pytest.raises(DatasetError, match="overwrite=True"):
        make_synthetic_dataset(tmp_path, **SMALL)
    assert (real / "keep.png").exists()
    make_synthetic_dataset(tmp_path, **SMALL, overwrite=True)
    assert not (real / "keep.png").exists()


def test_interrupted_generation_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = synthetic._png_bytes

    def failing(array, mode):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(array, mode)

    monkeypatch.setattr(synthetic, "_png_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(tmp_path, **SMALL)
    assert not (tmp_path / "synthetic_texture").exists()
    assert list(tmp_path.iterdir()) == []  # temp folder cleaned up
    monkeypatch.setattr(synthetic, "_png_bytes", original)
    out = make_synthetic_dataset(tmp_path, **SMALL)
    assert (out / MARKER_NAME).is_file()


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="fabric"), "texture, object"),
    (dict(n_train=0), "n_train"),
    (dict(image_size=16), "image_size"),
    (dict(n_test_good=-1), "n_test_good"),
    (dict(seed=-3), "seed"),
    (dict(n_train=2.5), "n_train"),
    (dict(defect_types=["scratch", "dent"]), "dent"),
    (dict(defect_types=["scratch", "scratch"]), "duplicates"),
    (dict(category="../x"), "category"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_synthetic_dataset(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_custom_defect_types(tmp_path):
    out = make_synthetic_dataset(tmp_path, kind="object", defect_types=["crack", "hole"], **SMALL)
    assert sorted(p.name for p in (out / "test").iterdir()) == ["crack", "good", "hole"]


def test_default_root_and_ensure_default(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))
    assert default_synthetic_root() == tmp_path / "cache" / "synthetic"
    monkeypatch.delenv("PATCHCORE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_synthetic_root() == tmp_path / "xdg" / "patchcore_lib" / "synthetic"

    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    data_root, category = ensure_default_dataset()
    elapsed = time.perf_counter() - start
    assert (data_root, category) == (tmp_path / "cache" / "synthetic", "synthetic_texture")
    out = data_root / category
    assert len(list((out / "train/good").iterdir())) == 40
    assert len(list((out / "test/good").iterdir())) == 10
    for defect in DEFAULT_DEFECTS["texture"]:
        assert len(list((out / "test" / defect).iterdir())) == 6
    with Image.open(out / "train/good/000.png") as img:
        assert img.size == (256, 256)
    assert elapsed < 10  # < 5 s on an idle core; some slack for shared CI machines

    start = time.perf_counter()
    assert ensure_default_dataset() == (data_root, category)
    assert time.perf_counter() - start < 0.5  # reused

    root2, category2 = ensure_default_dataset(tmp_path / "other", kind="object", n_train=2, n_test_good=1,
                                              n_test_per_defect=1, image_size=48)
    assert (root2, category2) == (tmp_path / "other", "synthetic_object")
    assert (root2 / category2 / "test/missing/000.png").is_file()
