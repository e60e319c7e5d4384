"""Tests of patchcore_lib.evaluation.metrics: hand-computed AUROC / PRO cases and a slow PRO reference."""
from __future__ import annotations

import math
import warnings
from bisect import bisect_right

import numpy as np
import pytest
import torch
from scipy import ndimage

from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics import (
    UndefinedMetricWarning,
    image_auroc,
    per_defect_image_auroc,
    pixel_auroc,
    pro_curve,
    pro_score,
    roc_points,
)


# --------------------------------------------------------------------------- helpers


def _one_region_case(low_region_score: float = 0.3):
    """1 image 4x4, one region = top-left 2x2 (4 px), 12 normal px.

    region scores 0.9, 0.8, 0.5, ``low_region_score``; normal scores: one 0.7, one 0.4, ten 0.1.
    """
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2, :2] = True
    amap = np.full((1, 4, 4), 0.1)
    amap[0, 0, 0], amap[0, 0, 1], amap[0, 1, 0], amap[0, 1, 1] = 0.9, 0.8, 0.5, low_region_score
    amap[0, 3, 3], amap[0, 2, 3] = 0.7, 0.4
    return mask, amap


def _slow_pro_score(masks, maps, max_fpr):
    """Independent reference: loop over every distinct threshold, label each mask separately."""
    masks = np.asarray(masks, dtype=bool)
    maps = np.asarray(maps, dtype=np.float64)
    per_image_regions = []
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        per_image_regions += [(i, lab == k) for k in range(1, n + 1)]
    negatives = ~masks
    xs, ys = [0.0], [0.0]
    for t in sorted(np.unique(maps), reverse=True):
        pred = maps >= t
        xs.append((pred & negatives).sum() / negatives.sum())
        ys.append(np.mean([pred[i][r].mean() for i, r in per_image_regions]))
    # trapezoid up to max_fpr with linear interpolation at max_fpr
    i = bisect_right(xs, max_fpr)
    area = sum(0.5 * (ys[j] + ys[j + 1]) * (xs[j + 1] - xs[j]) for j in range(i - 1))
    if i < len(xs) and xs[i - 1] < max_fpr:
        y_at = ys[i - 1] + (ys[i] - ys[i - 1]) * (max_fpr - xs[i - 1]) / (xs[i] - xs[i - 1])
        area += 0.5 * (ys[i - 1] + y_at) * (max_fpr - xs[i - 1])
    return area / max_fpr


# --------------------------------------------------------------------------- PRO: hand-computed


def test_pro_curve_one_region_hand_computed():
    mask, amap = _one_region_case()
    fpr, pro = pro_curve(mask, amap, max_fpr=0.3)
    # thresholds (descending), pixels newly >= t, (fpr, pro):
    #   start                         (0,    0)
    #   0.9 region px              -> (0,    1/4)
    #   0.8 region px              -> (0,    2/4)
    #   0.7 normal px              -> (1/12, 2/4)
    #   0.5 region px              -> (1/12, 3/4)
    #   0.4 normal px              -> (2/12, 3/4)
    #   0.3 region px              -> (2/12, 1)
    #   0.1 ten normal px          -> (1,    1)    beyond max_fpr: replaced by (0.3, 1) (interpolated)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 12, 1 / 12, 2 / 12, 2 / 12, 0.3])
    np.testing.assert_allclose(pro, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0])
    # integral 0..0.3: 0.5*(1/12) + 0.75*(1/12) + 1*(0.3 - 2/12) = 1/24 + 1/16 + 2/15 = 57/240
    # normalised: (57/240) / 0.3 = 57/72
    assert pro_score(mask, amap, max_fpr=0.3) == pytest.approx(57 / 72)


def test_pro_max_fpr_variations():
    mask, amap = _one_region_case()
    # max_fpr 0.1: 0.5*(1/12) + 0.75*(0.1 - 1/12) = 1/24 + 1/80 = 13/240 -> /0.1 = 13/24
    assert pro_score(mask, amap, max_fpr=0.1) == pytest.approx(13 / 24)
    # max_fpr exactly at a curve point (1/12): both points at fpr 1/12 kept, area 0.5/12 -> 0.5
    fpr, pro = pro_curve(mask, amap, max_fpr=1 / 12)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 12, 1 / 12])
    np.testing.assert_allclose(pro, [0, 0.25, 0.5, 0.5, 0.75])
    assert pro_score(mask, amap, max_fpr=1 / 12) == pytest.approx(0.5)
    # max_fpr 1 (full curve): 1/24 + 1/16 + 1*(1 - 1/6) = 0.9375
    assert pro_score(mask, amap, max_fpr=1.0) == pytest.approx(1 / 24 + 1 / 16 + 5 / 6)
    # default is 0.3
    assert pro_score(mask, amap) == pytest.approx(57 / 72)


def test_pro_ties_form_one_threshold_and_interpolation():
    # Same as above but the last region pixel scores 0.1, tied with the ten normal pixels:
    # 0.1 is ONE threshold step from (2/12, 3/4) straight to (1, 1), no partial steps.
    mask, amap = _one_region_case(low_region_score=0.1)
    fpr_full, pro_full = pro_curve(mask, amap, max_fpr=1.0)
    np.testing.assert_allclose(fpr_full, [0, 0, 0, 1 / 12, 1 / 12, 2 / 12, 1])
    np.testing.assert_allclose(pro_full, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1])
    # at max_fpr 0.3 interpolate on that segment: 0.75 + 0.25 * (0.3 - 1/6) / (5/6) = 0.79
    fpr, pro = pro_curve(mask, amap, max_fpr=0.3)
    assert fpr[-1] == pytest.approx(0.3) and pro[-1] == pytest.approx(0.79)
    # integral: 1/24 + 1/16 + 0.5*(0.75 + 0.79)*(0.3 - 1/6) = 0.2068333... -> /0.3
    expected = (1 / 24 + 1 / 16 + 0.5 * (0.75 + 0.79) * (0.3 - 1 / 6)) / 0.3
    # resampled: 0 -> top of the vertical segment (0.5), 0.15 on the flat part (0.75), 0.3 -> 0.79
    grid, pro_grid = pro_curve(mask, amap, max_fpr=0.3, num_thresholds=3)
    np.testing.assert_allclose(grid, [0, 0.15, 0.3])
    np.testing.assert_allclose(pro_grid, [0.5, 0.75, 0.79])
    assert pro_score(mask, amap, max_fpr=0.3) == pytest.approx(expected)
    # all pixels tied: one step from (0, 0) to (1, 1) -> area 0.5*0.3*0.3 -> /0.3 = 0.15
    assert pro_score(mask, np.zeros_like(amap)) == pytest.approx(0.15)


def test_pro_averages_over_regions_not_pixels():
    # 5x5 image: region A = 1 pixel at (0,0), region B = 2x2 block at (3,3)-(4,4) (4 px).
    mask = np.zeros((1, 5, 5), dtype=bool)
    mask[0, 0, 0] = True
    mask[0, 3:, 3:] = True
    amap = np.full((1, 5, 5), 0.5)  # all normal pixels tied at 0.5
    amap[0, 0, 0] = 0.9  # region A fully found first
    amap[0, 3:, 3:] = 0.2  # region B only after every normal pixel
    # curve: (0,0) -> t=0.9 (0, mean(1, 0)=0.5) -> t=0.5 (1, 0.5) -> t=0.2 (1, 1)
    # pixel-averaged overlap would be 1/5 = 0.2 instead of 0.5.
    fpr, pro = pro_curve(mask, amap, max_fpr=1.0)
    np.testing.assert_allclose(fpr, [0, 0, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1])
    assert pro_score(mask, amap, max_fpr=0.3) == pytest.approx(0.5)


def test_pro_uses_8_connectivity():
    # pixels (0,0),(0,1) and (1,2): one region under 8-connectivity (size 3),
    # two regions {(0,0),(0,1)} and {(1,2)} under 4-connectivity.
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 2] = True
    amap = np.full((1, 4, 4), 0.5)
    amap[0, 1, 2] = 1.0
    amap[0, 0, 0] = amap[0, 0, 1] = 0.0
    # 8-connectivity: pro 1/3 on FPR [0, 1) -> score 1/3 (4-connectivity would give 0.5)
    assert pro_score(mask, amap) == pytest.approx(1 / 3)


def test_pro_regions_are_per_image_and_fpr_counts_good_images():
    # image 0: region = pixel (0,0); image 1: region = pixel (0,0) too (separate region).
    # image 2: defect-free, its normal pixels count in the FPR.
    masks = np.zeros((3, 2, 2), dtype=bool)
    masks[0, 0, 0] = masks[1, 0, 0] = True
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 0] = 1.0  # found at t=1
    maps[1, 0, 0] = 0.5  # found at t=0.5 together with ...
    maps[2, 0, 0] = 0.5  # ... one normal pixel of the good image (1 of 10 normal px)
    # curve: (0,0) -> (0, 0.5) -> (0.1, 1.0) -> (1, 1)
    fpr, pro = pro_curve(masks, maps, max_fpr=1.0)
    np.testing.assert_allclose(fpr, [0, 0, 0.1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1, 1])
    # 0..0.3: 0.5*(0.5+1)*0.1 + 1*0.2 = 0.275 -> /0.3
    assert pro_score(masks, maps) == pytest.approx(0.275 / 0.3)


def test_pro_perfect_and_inverted_maps():
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:14, 10:12] = True
    masks[1, 0, 0] = True
    perfect = masks + 0.1 * rng.random(masks.shape)  # every anomalous px above every normal px
    assert pro_score(masks, perfect) == pytest.approx(1.0)
    assert pro_score(masks, perfect, max_fpr=0.01) == pytest.approx(1.0)
    inverted = (~masks) + 0.1 * rng.random(masks.shape)
    assert pro_score(masks, inverted) == pytest.approx(0.0)
    # uninformative random map on many regions: PRO(fpr) ~ fpr -> normalised area ~ max_fpr / 2 = 0.15
    many = np.zeros((8, 32, 32), dtype=bool)
    many[:, 4:28:6, 4:28:6] = True  # 16 isolated pixels per image
    many[:, 20:26, 2:10] = True
    assert pro_score(many, rng.random(many.shape)) == pytest.approx(0.15, abs=0.05)


def test_pro_curve_shape_and_resampling():
    mask, amap = _one_region_case()
    fpr, pro = pro_curve(mask, amap, max_fpr=0.3)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert fpr[0] == 0 and fpr[-1] == pytest.approx(0.3)
    grid, pro_grid = pro_curve(mask, amap, max_fpr=0.3, num_thresholds=4)
    np.testing.assert_allclose(grid, [0, 0.1, 0.2, 0.3])
    # best PRO at fpr 0 is 0.5; at 0.1 between (1/12, .75) and (2/12, .75) -> .75; then 1
    np.testing.assert_allclose(pro_grid, [0.5, 0.75, 1.0, 1.0])
    with pytest.raises(ConfigError):
        pro_curve(mask, amap, num_thresholds=1)


@pytest.mark.parametrize("seed", range(6))
def test_pro_score_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 3, 9, 11
    masks = rng.random((n, h, w)) < 0.25  # scattered pixels: many regions, some diagonal links
    masks[0] = False  # a good image
    masks[1, 2:6, 3:8] = True  # a larger blob
    maps = rng.random((n, h, w)) + 0.3 * masks
    if seed % 2:
        maps = np.round(maps, 1)  # many ties, including across normal/anomalous pixels
    for max_fpr in (0.3, 0.05, 0.5, 1.0):
        expected = _slow_pro_score(masks, maps, max_fpr)
        assert pro_score(masks, maps, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-12)


def test_pro_undefined_and_invalid():
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.warns(UndefinedMetricWarning, match="no anomalous pixel"):
        assert math.isnan(pro_score(masks, maps))
    with pytest.warns(UndefinedMetricWarning):
        fpr, pro = pro_curve(masks, maps)
    assert fpr.size == 0 and pro.size == 0
    with pytest.warns(UndefinedMetricWarning, match="no normal pixel"):
        assert math.isnan(pro_score(~masks, maps))
    with pytest.raises(ConfigError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        pro_score(masks, np.zeros((2, 4, 5)))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="max_fpr"):
            pro_score(masks, maps, max_fpr=bad)
    with pytest.raises(ConfigError, match="0/1"):
        pro_score(np.full((2, 4, 4), 255, dtype=np.uint8), maps)
    with pytest.raises(ConfigError, match="NaN"):
        pro_score(masks, np.full((2, 4, 4), np.nan))
    with pytest.raises(ConfigError):
        pro_score(masks[..., None], maps[..., None])  # 4-D


def test_pro_accepts_torch_and_single_image():
    mask, amap = _one_region_case()
    assert pro_score(torch.from_numpy(mask), torch.from_numpy(amap).float()) == pytest.approx(57 / 72)
    assert pro_score(mask[0].astype(np.uint8), amap[0]) == pytest.approx(57 / 72)  # [H, W]
    assert pro_score(list(mask), list(amap)) == pytest.approx(57 / 72)  # list of [H, W]
    # bfloat16 has no numpy dtype (converted via float32); rounding keeps the score order -> same curve
    assert pro_score(torch.from_numpy(mask), torch.from_numpy(amap).bfloat16()) == pytest.approx(57 / 72)
    assert pro_score(list(torch.from_numpy(mask)), list(torch.from_numpy(amap))) == pytest.approx(57 / 72)
    with pytest.raises(ConfigError, match="ragged"):
        pro_score([mask[0], mask[0][:3]], [amap[0], amap[0][:3]])


# --------------------------------------------------------------------------- AUROC


def test_image_auroc_hand_computed():
    # positives score 0.8, 0.4; negatives 0.6, 0.2 -> pairs (pos > neg): (0.8>0.6)(0.8>0.2)(0.4>0.2) = 3/4
    assert image_auroc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert image_auroc([0, 1], [0.1, 0.9]) == pytest.approx(1.0)
    assert image_auroc([0, 1], [0.9, 0.1]) == pytest.approx(0.0)
    # a tie counts 1/2: pos 0.5 vs neg 0.5 and 0.1 -> (0.5 + 1) / 2
    assert image_auroc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)
    assert image_auroc(torch.tensor([True, True, False, False]), torch.tensor([0.8, 0.4, 0.6, 0.2])) == pytest.approx(
        0.75
    )


def test_image_auroc_one_class_and_errors():
    with pytest.warns(UndefinedMetricWarning, match="only negatives"):
        assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.warns(UndefinedMetricWarning, match="only positives"):
        assert math.isnan(image_auroc([1, 1], [0.1, 0.2]))
    with pytest.raises(ConfigError, match="same length"):
        image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ConfigError, match="0/1"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ConfigError, match="NaN"):
        image_auroc([0, 1], [0.1, float("nan")])


def test_pixel_auroc_hand_computed():
    masks = np.array([[[1, 0], [0, 0]], [[0, 1], [0, 0]]])  # 2 positive px, 6 negative px
    maps = np.array([[[0.9, 0.1], [0.2, 0.3]], [[0.5, 0.4], [0.6, 0.0]]])
    # pos 0.9 beats all 6 negatives; pos 0.4 beats 0.1, 0.2, 0.3, 0.0 (4 of 6) -> (6 + 4) / 12
    assert pixel_auroc(masks, maps) == pytest.approx(10 / 12)
    assert pixel_auroc(torch.from_numpy(masks).bool(), torch.from_numpy(maps)) == pytest.approx(10 / 12)
    with pytest.raises(ConfigError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        pixel_auroc(masks, np.zeros((2, 2, 3)))
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(pixel_auroc(np.zeros_like(masks), maps))


def test_per_defect_image_auroc():
    types = ["good", "good", "scratch", "scratch", "hole", "hole"]
    labels = [0, 0, 1, 1, 1, 1]
    scores = [0.2, 0.5, 0.6, 0.1, 0.9, 0.8]
    # scratch: pos {0.6, 0.1} vs good {0.2, 0.5}: 0.6 beats both, 0.1 none -> 2/4
    # hole:    pos {0.9, 0.8} beat both good -> 1.0
    result = per_defect_image_auroc(types, labels, scores)
    assert list(result) == ["hole", "scratch"]
    assert result == pytest.approx({"hole": 1.0, "scratch": 0.5})
    assert per_defect_image_auroc(
        [t.replace("good", "ok") for t in types], labels, torch.tensor(scores), good_name="ok"
    ) == pytest.approx({"hole": 1.0, "scratch": 0.5})
    with pytest.warns(UndefinedMetricWarning):
        no_good = per_defect_image_auroc(["a", "b"], [1, 1], [0.1, 0.2])
    assert math.isnan(no_good["a"]) and math.isnan(no_good["b"])
    with pytest.raises(ConfigError, match="label 0"):
        per_defect_image_auroc(["good", "a"], [1, 1], [0.1, 0.2])
    with pytest.raises(ConfigError, match="label 1"):
        per_defect_image_auroc(["good", "a"], [0, 0], [0.1, 0.2])
    with pytest.raises(ConfigError, match="same length"):
        per_defect_image_auroc(["good"], [0, 1], [0.1, 0.2])


def test_roc_points():
    fpr, tpr = roc_points([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    with pytest.warns(UndefinedMetricWarning):
        fpr, tpr = roc_points([0, 0], [0.1, 0.2])
    assert np.isnan(tpr).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray sklearn warning in the two-class case
        roc_points(torch.tensor([0, 1]), torch.tensor([0.1, 0.2]))


def test_undefined_metric_warnings_name_the_caller_outside_the_metrics_package():
    """The metrics live in several modules of one package; the warning still points at the calling line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image_auroc([0, 0], [0.1, 0.2])
        pro_score(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
        roc_points([1, 1], [0.1, 0.2])
    assert len(caught) == 3
    assert all(w.category is UndefinedMetricWarning and w.filename == __file__ for w in caught)


# --------------------------------------------------------------------------- every pixel metric from one sort


def _pro_score_as_first_written(masks, maps, max_fpr=0.3):
    """The vectorised PRO before the shared ranking (its own argsort, tie groups by ``not_equal``): the new code
    must give these numbers bit for bit."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labeled, n_regions = ndimage.label(np.asarray(masks, dtype=bool), structure=structure)
    labeled = labeled.ravel()
    n_neg = int(labeled.size - np.count_nonzero(labeled))
    sizes = np.bincount(labeled, minlength=n_regions + 1).astype(np.float64)
    inv_size = np.zeros(n_regions + 1)
    inv_size[1:] = 1.0 / sizes[1:]
    scores = np.asarray(maps).ravel()
    order = np.argsort(scores)[::-1]
    sorted_scores, sorted_labels = scores[order], labeled[order]
    fp_count = np.cumsum(sorted_labels == 0, dtype=np.int64)
    overlap_sum = np.cumsum(inv_size[sorted_labels])
    last = np.empty(sorted_scores.size, dtype=bool)
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=last[:-1])
    last[-1] = True
    fpr, pro = fp_count[last] / n_neg, np.minimum(overlap_sum[last] / n_regions, 1.0)
    fpr[-1] = pro[-1] = 1.0
    fpr, pro = np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))
    ins = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, y = fpr[:ins], pro[:ins]
    if x[-1] < max_fpr:
        y_at = pro[ins - 1] + (pro[ins] - pro[ins - 1]) * (max_fpr - fpr[ins - 1]) / (fpr[ins] - fpr[ins - 1])
        x, y = np.append(x, max_fpr), np.append(y, y_at)
    return min(max(float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))) / max_fpr, 0.0), 1.0)


def _blob_masks(rng, n, h, w):
    """Masks with several regions of different sizes per anomalous image (rectangles, some touching diagonally,
    scattered single pixels); every third image is good."""
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i % 3 == 0:
            continue
        for _ in range(int(rng.integers(1, 4))):
            top, left = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            masks[i, top:top + int(rng.integers(1, 5)), left:left + int(rng.integers(1, 5))] = True
        masks[i] |= rng.random((h, w)) < 0.02
    return masks


@pytest.mark.parametrize("seed", range(8))
def test_pixel_metrics_equal_sklearn_and_the_first_pro_bit_for_bit(seed):
    from sklearn.metrics import roc_auc_score, roc_curve

    from patchcore_lib.evaluation.metrics import anomaly_pixel_auroc, anomaly_pro_score, pixel_metrics

    rng = np.random.default_rng(seed)
    n, h, w = 9, 20, 24
    masks = _blob_masks(rng, n, h, w)
    labels = masks.reshape(n, -1).any(1).astype(int)
    maps = (rng.random((n, h, w)) + 0.4 * masks).astype(np.float32)
    if seed % 2:
        maps = np.round(maps * 8) / 8  # few levels: long runs of ties across regions and normal pixels
    if seed % 4 == 3:
        maps = maps.astype(np.float64)
    result = pixel_metrics(masks, maps, labels)
    anomalous = labels == 1
    assert result.pixel_auroc == roc_auc_score(masks.ravel(), maps.ravel())
    assert result.anomaly_pixel_auroc == roc_auc_score(masks[anomalous].ravel(), maps[anomalous].ravel())
    fpr, tpr, _ = roc_curve(masks.ravel(), maps.ravel())
    assert np.array_equal(result.roc[0], fpr) and np.array_equal(result.roc[1], tpr)
    assert result.pro == _pro_score_as_first_written(masks, maps)
    assert result.anomaly_pro == _pro_score_as_first_written(masks[anomalous], maps[anomalous])
    assert result.pro == pytest.approx(_slow_pro_score(masks, maps, 0.3), abs=1e-12)
    # the separate functions: the same numbers, the same curves
    assert (pixel_auroc(masks, maps), pro_score(masks, maps), anomaly_pixel_auroc(labels, masks, maps),
            anomaly_pro_score(labels, masks, maps)) == (result.pixel_auroc, result.pro, result.anomaly_pixel_auroc,
                                                         result.anomaly_pro)
    for num in (None, 300):
        assert all(np.array_equal(a, b) for a, b in zip(result.pro_curve(num), pro_curve(masks, maps, 0.3, num)))
    other = pixel_metrics(masks, maps, max_fpr=0.05)  # no labels: the anomalous-images metrics are NaN
    assert other.pro == pro_score(masks, maps, max_fpr=0.05) and math.isnan(other.anomaly_pro)


def test_pixel_metrics_ties_across_regions_of_the_anomalous_images():
    """A run of equal scores holding pixels of two regions of different sizes: the anomalous-images PRO is then
    computed by anomaly_pro_score itself (its own order inside the run), so it is still the same number."""
    from patchcore_lib.evaluation.metrics import anomaly_pro_score, pixel_metrics
    from patchcore_lib.evaluation.metrics.ranking import ties_mix_regions

    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[1, :2, :2] = True  # 4 px
    masks[2, 3:, 3:] = True  # 9 px
    maps = np.full((3, 6, 6), 0.1, dtype=np.float32)
    maps[masks] = 0.7  # both regions tie
    maps[0, 0, 0] = 0.8
    labels = np.array([0, 1, 1])
    scores = maps[1:].ravel()
    sizes = np.where(masks[1:].ravel(), np.where(np.arange(72) < 36, 0.25, 1 / 9), 0.0)
    assert ties_mix_regions(np.sort(scores)[::-1], sizes[np.argsort(scores)[::-1]])
    assert pixel_metrics(masks, maps, labels).anomaly_pro == anomaly_pro_score(labels, masks, maps)


def test_pixel_metrics_undefined_warn_as_the_separate_functions():
    from patchcore_lib.evaluation.metrics import pixel_metrics

    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((2, 4, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pixel_metrics(masks, maps, [0, 1])
    assert all(math.isnan(v) for v in (result.pixel_auroc, result.pro, result.anomaly_pixel_auroc,
                                       result.anomaly_pro))
    assert len(caught) == 4 and all(w.category is UndefinedMetricWarning for w in caught)
    assert result.roc[0].size == 0 and result.pro_curve(300)[0].size == 0
    masks[1, 0, 0] = True
    with warnings.catch_warnings(record=True) as caught:  # no anomalous image
        warnings.simplefilter("always")
        result = pixel_metrics(masks, maps, [0, 0])
    assert math.isnan(result.anomaly_pixel_auroc) and math.isnan(result.anomaly_pro)
    assert [str(w.message).split(" is ")[0] for w in caught] == ["anomaly pixel AUROC", "anomaly PRO"]
    with pytest.raises(ConfigError, match="same length"):
        pixel_metrics(masks, maps, [0, 1, 1])
