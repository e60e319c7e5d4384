"""defect_coverage: what the centre crop keeps of each defect (real masks of the tiny synthetic set)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from patchcore_lib.study.geometry import coverage_summary, defect_coverage


def test_whole_image_keeps_every_defect(synthetic_root):
    table = defect_coverage(synthetic_root, "tiny", 128, 128, crop="none")
    assert len(table) and (table["kept"] == 1.0).all()
    assert (defect_coverage(synthetic_root, "tiny", 128, 128)["kept"] == 1.0).all()  # square, no crop


def test_centre_crop_of_a_wide_image_cuts_a_border_defect(tmp_path):
    folder = tmp_path / "wide"
    for sub in ("train/good", "test/good", "test/dent", "ground_truth/dent"):
        (folder / sub).mkdir(parents=True)
    image = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    for sub in ("train/good", "test/good", "test/dent"):
        image.save(folder / sub / "000.png")
    mask = np.zeros((100, 300), np.uint8)
    mask[40:60, 5:25] = 255      # left end: outside the centre 100x100 (x 100..200)
    mask[40:60, 140:160] = 255   # centre: kept
    Image.fromarray(mask).save(folder / "ground_truth" / "dent" / "000_mask.png")
    table = defect_coverage(tmp_path, "wide", 100, 100)
    assert table["kept"].tolist() == [0.5] and table["path"].tolist() == ["test/dent/000.png"]
    assert coverage_summary(table) == {"defect_images": 1, "cut_away": 0, "partly_cut": 1, "mean_kept": 0.5}
