"""Evaluation options: the official mask convention, anomalous-images-only metrics, few-shot fitting; their
record in results.csv / metrics.json / run.json and the resume key."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from patchcore_lib.cli import main
from patchcore_lib.data import Preprocess, open_split, select_shots
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation import EvaluationOptions, anomaly_pixel_auroc, anomaly_pro_score, pixel_auroc, pro_score
from helpers import FAST


def _box_mask(size=40, box=(6, 16)):
    array = np.zeros((size, size), dtype=np.uint8)
    array[box[0]:box[1], box[0]:box[1]] = 255
    return Image.fromarray(array)


def test_official_masks_are_the_official_chain_and_count_only_fully_covered_pixels():
    mask = _box_mask()
    nearest = Preprocess(20, 20, "nearest").mask(mask)[0]
    official = Preprocess(20, 20, "official").mask(mask)[0]
    # the official code's chain, literally: Resize (bilinear) -> CenterCrop -> ToTensor -> astype(int)
    chain = transforms.Compose([transforms.Resize(20), transforms.CenterCrop(20), transforms.ToTensor()])
    expected = chain(mask).numpy()[0].astype(int)
    assert np.array_equal(official.numpy().astype(int), expected)
    # halving a 10 px box at 6..15: nearest keeps 5x5 pixels; the 2x-wide bilinear (antialiasing) filter of
    # pixel i reads source pixels 2i-1 .. 2i+3, fully inside 6..15 only for i = 4, 5, 6: 3x3 pixels
    assert nearest.sum() == 25 and official.sum() == 9
    assert bool((official <= nearest).all())
    with pytest.raises(ConfigError, match="mask_convention"):
        Preprocess(20, 20, "bilinear")


def test_anomaly_only_metrics_by_hand():
    labels = np.array([0, 1])
    masks = np.array([[[0, 0], [0, 0]], [[1, 0], [0, 0]]])
    maps = np.array([[[0.9, 0.9], [0.9, 0.9]], [[0.8, 0.1], [0.2, 0.3]]])
    # all images: the positive 0.8 beats 3 of the 7 negatives; anomalous image only: all 3
    assert pixel_auroc(masks, maps) == pytest.approx(3 / 7)
    assert anomaly_pixel_auroc(labels, masks, maps) == pytest.approx(1.0)
    # PRO: the region is found at t = 0.8 with FPR 4/7 > 0.3 over all images (area 0), FPR 0 over image 1 only
    assert pro_score(masks, maps) == pytest.approx(0.0)
    assert anomaly_pro_score(labels, masks, maps) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="same length"):
        anomaly_pixel_auroc(labels[:1], masks, maps)


def test_train_shots_are_drawn_by_seed(synthetic_root):
    full = open_split(synthetic_root, "tiny", "train", 64, 64)
    draws = {seed: select_shots(len(full), 3, seed) for seed in range(6)}
    assert all(len(d) == 3 == len(set(d)) and d == sorted(d) for d in draws.values())
    assert draws[1] == select_shots(len(full), 3, 1)  # reproducible
    assert len({tuple(d) for d in draws.values()}) > 1  # the seed matters
    subset = open_split(synthetic_root, "tiny", "train", 64, 64, shots=3, shots_seed=1)
    assert len(subset) == 3
    assert [subset[i]["path"] for i in range(3)] == [full[i]["path"] for i in draws[1]]
    with pytest.raises(ConfigError, match=rf"train_shots must be an integer in \[1, {len(full)}\]"):
        open_split(synthetic_root, "tiny", "train", 64, 64, shots=len(full) + 1)
    with pytest.raises(ConfigError, match="train_shots"):
        EvaluationOptions(train_shots=0)


@pytest.mark.slow
def test_cli_mask_convention_and_shots_are_recorded_and_part_of_the_resume_key(synthetic_root, tmp_path):
    out = tmp_path / "out"
    base = ["evaluate", "--data-root", str(synthetic_root), "--category", "tiny", *FAST, "--out", str(out)]
    assert main(base + ["--mask-convention", "official", "--train-shots", "4", "--shots-seed", "2"]) == 0
    row = next(csv.DictReader(open(out / "results.csv")))
    assert row["mask_convention"] == "official" and int(row["num_train"]) == 4
    for column in ("anomaly_pixel_auroc", "anomaly_pro"):
        assert 0 <= float(row[column]) <= 1
    record = json.loads((out / "tiny" / "metrics.json").read_text())
    assert record["evaluation"] == {"mask_convention": "official", "train_shots": 4, "shots_seed": 2}
    assert json.loads((out / "run.json").read_text())["evaluation"] == record["evaluation"]
    # same model, other convention: not reused
    assert main(base + ["--train-shots", "4", "--shots-seed", "2"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["reused"] == {} and run["evaluation"]["mask_convention"] == "nearest"
    nearest = next(csv.DictReader(open(out / "results.csv")))
    assert float(nearest["image_auroc"]) == pytest.approx(float(row["image_auroc"]))  # same fit, same scores
    # identical options: reused
    assert main(base + ["--train-shots", "4", "--shots-seed", "2"]) == 0
    assert json.loads((out / "run.json").read_text())["reused"] == {"tiny": nearest["run_id"]}
    assert main(base + ["--mask-convention", "bilinear"]) == 2
