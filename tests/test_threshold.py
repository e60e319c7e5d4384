"""Threshold from normal images only: the out-of-fold conformal quantile, its false-alarm rate on held-out
normal images, the F1-optimal threshold and the rates."""
import numpy as np
import pytest
import torch

from patchcore_lib import PatchCore
from patchcore_lib.detectors import ThresholdOptions, f1_optimal_threshold, threshold_rates
from patchcore_lib.detectors.threshold import conformal_quantile, fold_assignment
from patchcore_lib.errors import ConfigError


def test_conformal_quantile_rank_and_small_samples():
    scores = np.arange(1, 200)  # 199 scores: rank ceil(200 * 0.99) = 198
    assert conformal_quantile(scores, 0.01) == (198.0, True)
    assert conformal_quantile(np.arange(1, 11), 0.01) == (10.0, False)  # 10 images cannot promise 1%
    assert conformal_quantile(np.arange(1, 11), 0.2) == (9.0, True)  # ceil(11 * 0.8) = 9


def test_folds_are_balanced_and_seeded():
    folds = fold_assignment(23, 5, seed=3)
    assert sorted(np.bincount(folds)) == [4, 4, 5, 5, 5]
    assert np.array_equal(folds, fold_assignment(23, 5, seed=3))
    assert not np.array_equal(folds, fold_assignment(23, 5, seed=4))


def test_options_are_checked():
    with pytest.raises(ConfigError, match="false_alarm_rate must be in"):
        ThresholdOptions(false_alarm_rate=0.0)
    with pytest.raises(ConfigError, match="at least 2"):
        ThresholdOptions(calibration_folds=1)


def test_false_alarm_rate_on_held_out_normal_images_is_within_tolerance_of_the_target():
    """Patch features of i.i.d. 'normal images' (Gaussian patches on the model's 4 x 4 grid): the threshold
    calibrated out of fold on 150 training images keeps the false-alarm rate on 2,000 new normal images at
    most the target plus 3 binomial standard deviations (the guarantee side), and not below a quarter of it.
    The calibration is conservative: out-of-fold banks are unions of per-fold coresets of 9/10 of the images,
    which cover normal variation worse than the final coreset (detectors/threshold.py); on these 8-dimensional
    Gaussian patches it gives 3.2% for a 10% target (on the real images of the README: see its threshold
    section)."""
    model = PatchCore(backbone="resnet18", weights="random", resize=32, imagesize=32, pretrain_embed_dimension=8,
                      target_embed_dimension=8, coreset_ratio=0.1)
    grid = model.extractor.feature_grid(32)
    per_image = grid[0] * grid[1]
    generator = torch.Generator().manual_seed(0)
    target, held_out = 0.1, 2000
    model.fit(torch.randn(150 * per_image, 8, generator=generator), show_progress=False,
              calibration=ThresholdOptions(target, 10))
    record = model.threshold
    assert record["num_images"] == 150 and record["folds"] == 10 and record["guaranteed"]
    new_normal = torch.randn(held_out, per_image, 8, generator=generator)
    scores, _ = model.score_features(new_normal, grid, grid)
    measured = float((scores.numpy() > record["threshold"]).mean())
    tolerance = 3 * np.sqrt(target * (1 - target) / held_out)
    assert target / 4 <= measured <= target + tolerance, (measured, target, tolerance)


def test_calibration_on_images_is_stored_and_refit_clears_it(synthetic_root, tmp_path):
    from patchcore_lib import open_split

    model = PatchCore(backbone="resnet18", weights="random", resize=64, imagesize=64, coreset_ratio=0.2)
    train = open_split(synthetic_root, "tiny", "train", 64, 64)
    model.fit(train, show_progress=False, calibration=ThresholdOptions(0.2, 3))
    record = model.threshold
    assert record["folds"] == 3 and len(record["out_of_fold_scores"]) == len(train)
    ordered = np.sort(record["out_of_fold_scores"])
    assert record["threshold"] == pytest.approx(ordered[int(np.ceil(13 * 0.8)) - 1])
    loaded = PatchCore.load(model.save(tmp_path / "m.pt"))
    assert loaded.threshold == record
    model.fit(train, show_progress=False)  # no calibration: the old threshold is not kept
    assert model.threshold is None


def test_f1_optimal_threshold_and_rates():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.35, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1])
    best = f1_optimal_threshold(scores, labels)
    assert best["f1"] == 1.0 and 0.3 < best["threshold"] < 0.35
    rates = threshold_rates(scores, labels, 0.25)
    assert rates["false_alarm_rate"] == pytest.approx(1 / 3) and rates["miss_rate"] == 0.0
    assert threshold_rates(scores, labels, 0.85)["miss_rate"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="both normal and anomalous"):
        f1_optimal_threshold(scores, np.zeros(6))


@pytest.mark.parametrize("changes", [{}, {"num_nn": 2, "distance": "euclidean"}, {"score": "reweighted"}])
def test_out_of_fold_scores_equal_those_of_the_full_scoring_path(changes):
    """The calibration scores held-out images with their image scores only (no maps); the scores are those of
    ``score_features`` (maps included) on a copy of the model per fold with that fold's bank, as first written,
    in the same batches (a FAISS distance depends by rounding on the other queries of its call)."""
    import copy

    from patchcore_lib.components.knn import NearestNeighbourSearch
    from patchcore_lib.components.sampling import make_sampler
    from patchcore_lib.detectors.threshold import out_of_fold_scores

    model = PatchCore(backbone="resnet18", weights="random", resize=32, imagesize=32, pretrain_embed_dimension=16,
                      target_embed_dimension=16, coreset_ratio=0.25, batch_size=3, **changes)
    grid = model.extractor.feature_grid(32)
    features = torch.randn(23, grid[0] * grid[1], 16, generator=torch.Generator().manual_seed(1))
    scores, assignment = out_of_fold_scores(model, features, grid, 4)
    config, expected = model.config, np.empty(23)
    banks = []
    for fold in range(4):
        flat = features[torch.from_numpy(np.flatnonzero(assignment == fold))].reshape(-1, 16)
        banks.append(flat[make_sampler(config.sampler, config.coreset_ratio, seed=config.seed + 1 + fold,
                                       show_progress=False).select(flat)].contiguous())
    scorer = copy.copy(model)
    for fold in range(4):
        bank = torch.cat([b for i, b in enumerate(banks) if i != fold])
        scorer.search = NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend).fit(bank)
        scorer.memory_bank = bank
        held_out = np.flatnonzero(assignment == fold)
        for start in range(0, len(held_out), config.batch_size):
            chunk = held_out[start:start + config.batch_size]
            expected[chunk] = scorer.score_features(features[torch.from_numpy(chunk)], grid, grid)[0].double().numpy()
    assert np.array_equal(scores, expected)
