"""Issue 18, input cases that gave wrong numbers or unclear errors: masks stored as 0/1, 16-bit and float images,
EXIF orientation, empty masks, decompression bombs, content fingerprints, the mean row."""
from __future__ import annotations

import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchcore_lib.data import dataset_fingerprint, load_mask, load_rgb, open_split
from patchcore_lib.errors import DatasetError


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(root, target)
    return target


# --- case 1: masks stored as 0/1 -----------------------------------------------------------------------------
def test_masks_stored_as_0_1_keep_their_foreground(synthetic_root, tmp_path):
    root = _copy(synthetic_root, tmp_path)
    reference = open_split(synthetic_root, "tiny", "test", 64, 64)
    masks = sorted((root / "tiny" / "ground_truth").rglob("*.png"))
    for path in masks[::2]:  # only some masks 0/1, as when two datasets are merged
        array = np.asarray(Image.open(path).convert("L"))
        Image.fromarray((array > 127).astype(np.uint8)).save(path)
    converted = open_split(root, "tiny", "test", 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # {0, 1} masks are binary: no warning
        for index in range(len(reference)):
            assert torch.equal(converted[index]["mask"], reference[index]["mask"]), index
    assert sum(float(reference[i]["mask"].sum()) for i in range(len(reference))) > 0


def test_sixteen_bit_0_1_mask_and_grey_level_masks(tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (16, 16)).save(image)
    array = np.zeros((16, 16), dtype=np.uint16)
    array[4:8, 4:8] = 1
    Image.fromarray(array).save(tmp_path / "m16.png")
    loaded = np.asarray(load_mask(tmp_path / "m16.png", (16, 16), image))
    assert loaded.sum() == 16 * 255 and loaded[4:8, 4:8].all()
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[0, :4] = (10, 100, 200, 255)  # grey levels keep the 127 threshold and the warning
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match="not binary"):
        loaded = np.asarray(load_mask(tmp_path / "grey.png", (16, 16), image))
    assert loaded[0, :4].tolist() == [0, 0, 255, 255]


# --- case 2: 16-bit, 12-bit and float images ----------------------------------------------------------------
def test_sixteen_bit_images_are_scaled_by_bit_depth_not_per_image(tmp_path):
    ramp = np.tile(np.arange(64, dtype=np.int64), (8, 1))
    loaded = []
    for top in (200, 400, 4095, 65535):  # 8-bit-like, just above 255, 12-bit data, full 16-bit range
        path = tmp_path / f"ramp{top}.png"
        Image.fromarray((ramp * top // 63).astype(np.uint16)).save(path)
        loaded.append(np.asarray(load_rgb(path))[..., 0].astype(float).max())
    expected = [round(top / 65535 * 255) for top in (200, 400, 4095, 65535)]
    assert loaded == pytest.approx(expected, abs=1)  # one scale for every image: 1, 2, 16, 255


def test_float_tiff_in_0_1_is_scaled_by_255_and_out_of_range_is_refused(tmp_path):
    array = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(array).save(tmp_path / "float.tif")
    loaded = np.asarray(load_rgb(tmp_path / "float.tif"))[..., 0]
    assert loaded.max() == 255 and loaded.min() == 0 and abs(int(loaded[4, 0]) - 128) <= 2
    Image.fromarray(array * 300).save(tmp_path / "float300.tif")
    with pytest.raises(DatasetError, match=r"float300.tif: floating-point image has values 0\.\.300"):
        load_rgb(tmp_path / "float300.tif")


# --- case 3: EXIF orientation -------------------------------------------------------------------------------
def _exif_rotated_jpeg(path: Path, shown: Image.Image) -> None:
    """Store ``shown`` rotated, with the EXIF tag (6) that tells viewers to rotate it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    shown.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


@pytest.mark.parametrize("size", [(48, 48), (64, 40)])
def test_exif_orientation_is_applied_so_images_align_with_masks(tmp_path, size):
    shown = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    shown[2:12, 4:20] = 255  # defect near the top-left corner of the image as seen
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[2:12, 4:20] = 255
    _exif_rotated_jpeg(tmp_path / "image.jpg", Image.fromarray(shown))
    Image.fromarray(mask).save(tmp_path / "mask.png")
    image = load_rgb(tmp_path / "image.jpg")
    assert image.size == size
    loaded_mask = np.asarray(load_mask(tmp_path / "mask.png", image.size, tmp_path / "image.jpg")) > 0
    bright = np.asarray(image)[..., 0] > 127
    assert (bright == loaded_mask).mean() > 0.99


def test_mask_size_mismatch_names_both_files_with_width_and_height(tmp_path):
    Image.new("RGB", (64, 40)).save(tmp_path / "image.png")
    Image.new("L", (40, 64)).save(tmp_path / "mask.png")
    with pytest.raises(DatasetError) as info:
        load_mask(tmp_path / "mask.png", load_rgb(tmp_path / "image.png").size, tmp_path / "image.png")
    message = str(info.value)
    assert "mask.png: mask size 40x64 differs from its image" in message
    assert "image.png (64x40); sizes are width x height, after EXIF orientation" in message


# --- case 8 (second half): an all-zero mask of a defect image -------------------------------------------------
def test_all_zero_mask_of_a_defect_image_warns_naming_it(synthetic_root, tmp_path):
    root = _copy(synthetic_root, tmp_path)
    mask = sorted((root / "tiny" / "ground_truth").rglob("*.png"))[0]
    Image.new("L", Image.open(mask).size).save(mask)
    dataset = open_split(root, "tiny", "test", 64, 64)
    index = next(i for i, s in enumerate(dataset.samples) if s.mask_path == mask)
    with pytest.warns(UserWarning, match=f"{mask}.*is empty"):
        dataset[index]
    with warnings.catch_warnings(record=True) as again:  # once per file per process: not on every reopening
        warnings.simplefilter("always")
        open_split(root, "tiny", "test", 64, 64)[index]
    assert not [w for w in again if "is empty" in str(w.message)]
    Image.new("L", Image.open(mask).size).save(mask)  # rewritten: a changed file is warned about again
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match=f"{mask}.*is empty"):
        open_split(root, "tiny", "test", 64, 64)[index]


def test_empty_masks_of_one_folder_warn_once(synthetic_root, tmp_path):
    root = _copy(synthetic_root, tmp_path)
    folder = sorted((root / "tiny" / "ground_truth").iterdir())[0]
    masks = sorted(folder.glob("*.png"))
    assert len(masks) >= 2, "the synthetic category needs two masks in one defect folder"
    for mask in masks:
        Image.new("L", Image.open(mask).size).save(mask)
    dataset = open_split(root, "tiny", "test", 64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = [dataset[i] for i, s in enumerate(dataset.samples) if s.mask_path in masks]
    empty = [str(w.message) for w in caught if "is empty" in str(w.message)]
    assert len(loaded) == len(masks) and len(empty) == 1
    assert f"further empty masks in {folder}" in empty[0]


# --- case 11: decompression bomb -----------------------------------------------------------------------------
def test_decompression_bomb_is_one_dataset_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200 x 200 is then "a bomb", as 20000 x 20000 is
    with pytest.raises(DatasetError, match=f"{path}: image is too large to decode safely"):
        load_rgb(path)


# --- case 4 (data part): fingerprints hash content ------------------------------------------------------------
def test_dataset_fingerprint_sees_same_size_content_changes(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHCORE_CACHE", str(tmp_path / "cache"))
    root = _copy(synthetic_root, tmp_path)
    before = dataset_fingerprint(root, "tiny")
    assert dataset_fingerprint(root, "tiny") == before  # warm (cached hashes)
    image = sorted((root / "tiny" / "test").rglob("*.png"))[0]
    data = bytearray(image.read_bytes())
    stat = image.stat()
    data[-20] ^= 0xFF  # same size, other content, old mtime restored
    image.write_bytes(bytes(data))
    import os
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size
    assert dataset_fingerprint(root, "tiny") != before


# --- case 8: the mean row -------------------------------------------------------------------------------------
def test_mean_row_is_nan_with_a_warning_when_a_category_lacks_the_metric():
    from patchcore_lib.evaluation.runner import results_table

    rows = [{"category": "a", "image_auroc": 0.9, "pixel_auroc": 0.8, "pro": float("nan"), "run_id": "r"},
            {"category": "b", "image_auroc": 0.7, "pixel_auroc": 0.6, "pro": 0.5, "run_id": "r"}]
    with pytest.warns(UserWarning, match="pro is undefined for a"):
        table = results_table(rows)
    mean = table[-1]
    assert mean["image_auroc"] == pytest.approx(0.8) and mean["pixel_auroc"] == pytest.approx(0.7)
    assert math.isnan(mean["pro"])
