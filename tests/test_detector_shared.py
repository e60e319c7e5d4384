"""What the detectors share, stated once: the shared settings' declarations, the geometry check, and
PatchCore.with_bank (a copy on another memory bank that shares the feature extractor)."""
import dataclasses

import pytest
import torch

from patchcore_lib.data import DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_RESIZE, MVTecDataset, Preprocess
from patchcore_lib.detectors import SHARED_SETTINGS, GaussianADConfig, PatchCore, PatchCoreConfig
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.schema import default_of

RANDOM_R18 = dict(backbone="resnet18", weights="random", resize=64, imagesize=64)


def test_shared_settings_have_one_default_for_every_detector():
    patchcore = {f.name: f for f in dataclasses.fields(PatchCoreConfig)}
    gaussian = {f.name: f for f in dataclasses.fields(GaussianADConfig)}
    for name in SHARED_SETTINGS:
        assert default_of(patchcore[name]) == default_of(gaussian[name]), name
    assert (PatchCoreConfig().resize, PatchCoreConfig().imagesize, PatchCoreConfig().crop) == \
        (DEFAULT_RESIZE, DEFAULT_IMAGESIZE, DEFAULT_CROP)
    preprocess = Preprocess()
    assert (preprocess.resize, preprocess.imagesize, preprocess.crop) == \
        (DEFAULT_RESIZE, DEFAULT_IMAGESIZE, DEFAULT_CROP)


@pytest.mark.parametrize("cls", [PatchCoreConfig, GaussianADConfig])
def test_every_config_checks_the_geometry_with_the_same_messages(cls):
    with pytest.raises(ConfigError, match=r"^imagesize \(128\) must not exceed resize \(64\)$"):
        cls(resize=64, imagesize=128)
    with pytest.raises(ConfigError, match="imagesize 16 is too small for efficientnet_lite0 .* at least 32 px"):
        cls(resize=16, imagesize=16)


@pytest.fixture(scope="module")
def fitted():
    """A PatchCore (random ResNet-18) fitted on random patch features, and test features for its grid."""
    generator = torch.Generator().manual_seed(0)
    model = PatchCore(**RANDOM_R18, sampler="random", coreset_ratio=0.5)
    dim = model.config.target_embed_dimension
    model.fit(torch.randn(400, dim, generator=generator), show_progress=False)
    grid = model.extractor.feature_grid(model.config.imagesize)
    test = torch.randn(3, grid[0] * grid[1], dim, generator=generator)
    return model, test, grid


def test_with_bank_scores_like_a_freshly_fitted_model_and_leaves_the_original_alone(fitted):
    model, test, grid = fitted
    bank_before, search_before = model.memory_bank.clone(), model.search
    scores_before, maps_before = model.score_features(test, grid, (64, 64))
    bank = torch.randn(50, model.config.target_embed_dimension, generator=torch.Generator().manual_seed(1))
    for changes in ({}, {"num_nn": 3, "distance": "euclidean", "sigma": 2.0}, {"score": "reweighted"}):
        copy = model.with_bank(bank, **changes)
        assert copy.extractor is model.extractor and copy.search is not model.search
        assert copy.config.sampler == "identity" and copy.config.coreset_ratio == 1.0
        assert torch.equal(copy.memory_bank, bank) and copy.threshold is None
        fresh = PatchCore(dataclasses.replace(model.config, sampler="identity", coreset_ratio=1.0, **changes))
        fresh.fit(bank, show_progress=False)
        scores, maps = copy.score_features(test, grid, (64, 64))
        fresh_scores, fresh_maps = fresh.score_features(test, grid, (64, 64))
        assert torch.equal(scores, fresh_scores) and torch.equal(maps, fresh_maps)
    assert model.search is search_before and torch.equal(model.memory_bank, bank_before)
    assert model.config.sampler == "random" and model.config.coreset_ratio == 0.5
    scores_after, maps_after = model.score_features(test, grid, (64, 64))
    assert torch.equal(scores_after, scores_before) and torch.equal(maps_after, maps_before)


def test_with_bank_without_a_bank_is_an_unfitted_revalidated_copy(fitted):
    model = fitted[0]
    copy = model.with_bank(coreset_ratio=0.25)
    assert copy.memory_bank is None and copy.timings == {} and copy.threshold is None
    assert copy.config.coreset_ratio == 0.25 and model.config.coreset_ratio == 0.5
    assert copy.extractor is model.extractor and copy.search is not model.search
    with pytest.raises(ConfigError, match="not fitted"):
        copy.score_features(fitted[1], fitted[2], (64, 64))
    with pytest.raises(ConfigError, match="distance"):
        model.with_bank(distance="cosine")  # re-validated by dataclasses.replace
    with pytest.raises(ConfigError, match="backbone cannot change"):
        model.with_bank(backbone="resnet50")  # the extractor is shared
    with pytest.raises(ConfigError, match="drop sampler"):
        model.with_bank(model.memory_bank, sampler="random")


def test_with_bank_predicts_images_like_the_original(fitted, synthetic_root):
    """The copy shares the extractor, so on its own bank it predicts images exactly as the original."""
    model = fitted[0]
    images = torch.stack([MVTecDataset(synthetic_root, "tiny", "test", 64, 64)[i]["image"] for i in range(2)])
    copy = model.with_bank(model.memory_bank)
    for ours, theirs in zip(copy.predict(images), model.predict(images)):
        assert torch.equal(ours, theirs)
