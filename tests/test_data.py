"""MVTec layout reader: formats, conversions, hidden files, clear errors, preprocessing geometry."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchcore_lib.data import MVTecDataset, Preprocess, dataset_fingerprint, find_samples, list_categories
from patchcore_lib.errors import ConfigError, DatasetError


def _rgb(path: Path, size=(40, 30), value=100, mode="RGB", ext=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode in ("L",) else (value,) * len(mode)).save(path)
    return path


def _mask(path: Path, size=(40, 30), box=(5, 5, 15, 15), values=(0, 255)):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full(size[::-1], values[0], dtype=np.uint8)
    array[box[1]:box[3], box[0]:box[2]] = values[1]
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def layout(tmp_path):
    cat = tmp_path / "widget"
    _rgb(cat / "train/good/000.png")
    _rgb(cat / "train/good/001.jpg")
    _rgb(cat / "train/good/002.bmp", mode="L")
    _rgb(cat / "train/good/003.tif", mode="RGBA")
    _rgb(cat / "train/good/004.png", mode="I;16")
    (cat / "train/good/.DS_Store").write_bytes(b"junk")
    (cat / "train/good/Thumbs.db").write_bytes(b"junk")
    _rgb(cat / "test/good/000.png")
    _rgb(cat / "test/scratch/000.png")
    _mask(cat / "ground_truth/scratch/000_mask.png")
    return tmp_path


def test_reads_all_formats_as_rgb_and_ignores_system_files(layout):
    train = MVTecDataset(layout, "widget", "train", resize=32, imagesize=24)
    assert len(train) == 5
    for item in train:
        assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    # the 16-bit image (value 100*257) converts to the same 8-bit grey as the 8-bit ones
    assert torch.allclose(train[4]["image"], train[2]["image"], atol=1e-6)
    assert list_categories(layout) == ["widget"]


def test_test_split_masks_labels_and_geometry(layout):
    test = MVTecDataset(layout, "widget", "test", resize=30, imagesize=30)
    good, bad = test[0], test[1]
    assert (good["label"], good["defect_type"]) == (0, "good") and good["mask"].sum() == 0
    assert (bad["label"], bad["defect_type"]) == (1, "scratch")
    mask = bad["mask"][0]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    # 40x30 image resized (short side 30) keeps size, centre crop 30 removes 5 px left: box x 5..15 -> 0..10
    assert mask[5:15, 0:10].all() and mask.sum() == 100


def test_preprocessing_is_resize_centre_crop_imagenet_normalisation():
    pre = Preprocess(256, 224)
    img = Image.fromarray(np.full((300, 400, 3), 128, dtype=np.uint8))
    x = pre.image(img)
    assert x.shape == (3, 224, 224)
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[:, 100, 100].numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(pre.denormalise(x)[0, 0], [128, 128, 128])
    with pytest.raises(ConfigError, match="must not exceed"):
        Preprocess(200, 224)


def test_missing_mask_is_an_error_naming_the_file(layout):
    (layout / "widget/ground_truth/scratch/000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"scratch/000.png: defect image without a ground-truth mask"):
        find_samples(layout, "widget", "test")


def test_mask_of_other_size_is_an_error(layout):
    _mask(layout / "widget/ground_truth/scratch/000_mask.png", size=(20, 20))
    test = MVTecDataset(layout, "widget", "test")
    with pytest.raises(DatasetError, match="000_mask.png: mask size 20x20 differs from its image"):
        test[1]


def test_non_binary_mask_is_binarised_with_a_warning(layout):
    _mask(layout / "widget/ground_truth/scratch/000_mask.png", values=(3, 200))
    test = MVTecDataset(layout, "widget", "test", resize=30, imagesize=30)
    with pytest.warns(UserWarning, match="not binary"):
        mask = test[1]["mask"]
    assert mask.sum() == 100


def test_corrupt_and_non_image_files_are_named(layout):
    bad = layout / "widget/train/good/005.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    train = MVTecDataset(layout, "widget", "train")
    with pytest.raises(DatasetError, match="005.png: cannot read image"):
        train[5]
    (layout / "widget/train/good/notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt: not an image file"):
        MVTecDataset(layout, "widget", "train")


def test_missing_root_category_and_empty_train_are_clear(layout, tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*download_mvtec"):
        find_samples(tmp_path / "nowhere", "widget", "train")
    with pytest.raises(DatasetError, match=r"category 'carpet' not found.*categories found under .*: widget"):
        find_samples(layout, "carpet", "train")
    for p in (layout / "widget/train/good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="contains no images"):
        find_samples(layout, "widget", "train")


def test_fingerprint_changes_with_files(layout):
    before = dataset_fingerprint(layout, "widget")
    assert before == dataset_fingerprint(layout, "widget")
    _rgb(layout / "widget/train/good/009.png")
    assert dataset_fingerprint(layout, "widget") != before
