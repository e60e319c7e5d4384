"""Contract tests, parametrised over every registered backbone, sampler and detector: adding one to a
registry puts it under these tests with no other edit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from patchcore_lib import PatchCoreConfig, load_detector, make_detector, open_split
from patchcore_lib.components.backbones import BACKBONES, FeatureExtractor
from patchcore_lib.components.sampling import SAMPLERS, make_sampler, num_selected
from patchcore_lib.detectors import DETECTORS, Detector

SIZE = 64
#: Small settings per detector (random weights; the ensemble gets two small members).
BASE = PatchCoreConfig(backbone="resnet18", weights="random", resize=SIZE, imagesize=SIZE, coreset_ratio=0.2,
                       batch_size=8)
OPTIONS = {"patchcore_ensemble": {"backbones": ("resnet18", "efficientnet_lite0")}, "orthoad": {"k": 20},
           "padim": {"d": 20}}
#: Kept in the fast loop (`pytest -m "not slow"`); the other backbones and detectors are marked slow.
QUICK = {"resnet18", "efficientnet_lite0"}


def _names(registry) -> list:
    """Every registered name, the ones not in QUICK marked slow."""
    return [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in registry.names()]


@pytest.mark.parametrize("name", _names(BACKBONES))
def test_backbone_layers_have_the_declared_channels_and_strides(name):
    spec = BACKBONES.get(name)
    torch.manual_seed(0)
    extractor = FeatureExtractor(name, tuple(spec.layers), weights="random")
    outputs = extractor(torch.randn(1, 3, SIZE, SIZE))
    assert list(outputs) == list(spec.layers)
    for layer, (channels, stride) in spec.layers.items():
        assert outputs[layer].shape == (1, channels, SIZE // stride, SIZE // stride), layer
    assert set(spec.default_layers) <= set(spec.layers) and set(spec.gaussian_layers) <= set(spec.layers)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_selects_distinct_rows_deterministically(name):
    features = torch.randn(600, 24, generator=torch.Generator().manual_seed(1))
    sampler = make_sampler(name, 0.1, seed=3, show_progress=False)
    first, second = sampler.select(features), make_sampler(name, 0.1, seed=3, show_progress=False).select(features)
    assert first.dtype == torch.long and torch.equal(first, second)
    assert len(set(first.tolist())) == len(first) and 0 <= int(first.min()) and int(first.max()) < 600
    assert len(first) in (600, num_selected(600, 0.1))
    assert sampler.run(features).shape == (len(first), 24)


@pytest.fixture(scope="module")
def splits(synthetic_root):
    return (open_split(synthetic_root, "tiny", "train", SIZE, SIZE),
            open_split(synthetic_root, "tiny", "test", SIZE, SIZE))


@pytest.mark.parametrize("method", _names(DETECTORS))
def test_detector_fit_predict_save_load_round_trip(method, splits, tmp_path):
    train, test = splits
    detector = make_detector(method, BASE, **OPTIONS.get(method, {}))
    assert isinstance(detector, Detector)
    assert detector.fit(train, show_progress=False) is detector
    assert detector.timings["fit_seconds"] > 0 and detector.memory_bank_size > 0
    images = torch.stack([test[i]["image"] for i in range(3)])
    scores, maps = detector.predict(images)
    assert scores.shape == (3,) and maps.shape == (3, SIZE, SIZE) and torch.isfinite(maps).all()
    predictions = detector.predict_dataset(test, show_progress=False)
    assert predictions.scores.shape == (len(test),) and predictions.maps.shape == (len(test), SIZE, SIZE)
    assert predictions.masks.shape == predictions.maps.shape and set(np.unique(predictions.labels)) == {0, 1}
    path = detector.save(tmp_path / "model.pt")
    loaded = load_detector(path)
    assert type(loaded) is type(detector) and loaded.config.to_dict() == detector.config.to_dict()
    again_scores, again_maps = loaded.predict(images)
    torch.testing.assert_close(again_scores, scores)
    torch.testing.assert_close(again_maps, maps)
