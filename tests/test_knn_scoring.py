"""kNN search (FAISS and torch agree with brute force) and image scores (max, paper Eq. 7 by hand)."""
import dataclasses
import math

import pytest
import torch

from patchcore_lib.errors import ConfigError
from patchcore_lib.components.knn import NearestNeighbourSearch, faiss_available
from patchcore_lib.components.scoring import (euclidean_distances, image_scores_max, image_scores_reweighted,
                                             reweighting_factors)
from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore, PatchCoreConfig

BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ["sqeuclidean", "euclidean"])
def test_search_matches_brute_force(backend, distance):
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(500, 32, generator=g), torch.randn(70, 32, generator=g)
    search = NearestNeighbourSearch(num_nn=3, distance=distance, backend=backend, chunk_elements=5000).fit(bank)
    dist, idx = search.query(queries)
    brute = torch.cdist(queries.double(), bank.double())
    expected_d, expected_i = brute.topk(3, largest=False)
    if distance == "sqeuclidean":
        expected_d = expected_d ** 2
    assert torch.equal(idx, expected_i)
    torch.testing.assert_close(dist.double(), expected_d, rtol=1e-4, atol=1e-4)


def test_search_errors_name_the_problem():
    with pytest.raises(ConfigError, match="num_nn"):
        NearestNeighbourSearch(num_nn=0)
    with pytest.raises(ConfigError, match="larger than the memory bank"):
        NearestNeighbourSearch(num_nn=5).fit(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="unknown distance"):
        NearestNeighbourSearch(distance="cosine")


def test_max_score_is_the_largest_patch_score():
    scores = torch.tensor([[0.1, 0.7, 0.3], [2.0, 0.0, 1.0]])
    assert torch.equal(image_scores_max(scores), torch.tensor([0.7, 2.0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_reweighting_hand_computed(backend):
    # 1-D memory bank {0, 1, 3, 10}; one test image with patches 0.2 and 5.0; squared distances configured.
    bank = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    search = NearestNeighbourSearch(num_nn=1, distance="sqeuclidean", backend=backend).fit(bank)
    patches = torch.tensor([[[0.2], [5.0]]])
    dist, idx = search.query(patches.reshape(-1, 1))
    assert dist[:, 0].tolist() == pytest.approx([0.04, 4.0])  # the search gives squared distances
    nearest = euclidean_distances(dist[:, 0], "sqeuclidean").reshape(1, 2)  # Euclidean 0.2 and 2
    # Most anomalous patch: 5.0, nearest bank feature m* = 3 (index 2), s* = 2 (Euclidean, not 4).
    # b = 2 nearest bank features of m* besides itself: 1 (at 2) and 0 (at 3).
    # Euclidean distances from the test patch to {m*, 1, 0} = {2, 4, 5}:
    w2 = 1 - math.exp(2) / (math.exp(2) + math.exp(4) + math.exp(5))  # = 0.96488...
    score = image_scores_reweighted(nearest, patches, idx[:, 0].reshape(1, 2), search, neighbourhood=2)
    assert score.item() == pytest.approx(2 * w2, rel=1e-6)
    # b = 1: support {3, 1}: w = 1 - e^2 / (e^2 + e^4) = 0.88079...
    w1 = reweighting_factors(torch.tensor([[5.0]]), torch.tensor([2]), search, 1)
    assert w1.item() == pytest.approx(1 - 1 / (1 + math.exp(2)), rel=1e-6)
    # An isolated m* (far from the rest of the bank) gets a larger weight than a dense one.
    far = reweighting_factors(torch.tensor([[12.0]]), torch.tensor([3]), search, 1)
    assert far.item() > w1.item()


def test_reweighted_score_of_the_model_uses_euclidean_s_star():
    """The model's Eq. 7 with squared distances configured: s = w * s* with s* Euclidean (hand-computed)."""
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    model = PatchCore(PatchCoreConfig(weights="random", resize=64, imagesize=64, score="reweighted",
                                      reweight_neighbourhood=2, distance="sqeuclidean", sigma=0.0, device="cpu",
                                      sampler="identity")).fit(bank)  # precomputed features: the bank as is
    features = torch.tensor([[[0.2, 0.0], [5.0, 0.0], [0.9, 0.0], [1.1, 0.0]]])
    scores, maps = model.score_features(features, (2, 2), (4, 4))
    w2 = 1 - math.exp(2) / (math.exp(2) + math.exp(4) + math.exp(5))
    assert scores.item() == pytest.approx(2 * w2, rel=1e-6)
    assert maps.max().item() == pytest.approx(4.0, rel=1e-5)  # the maps keep the squared distance


def test_reweighted_scores_identical_under_both_distances(synthetic_root):
    config = PatchCoreConfig(weights="random", resize=64, imagesize=64, score="reweighted", device="cpu",
                             coreset_ratio=0.25, num_nn=2)
    train = open_split(synthetic_root, "tiny", "train", 64, 64)
    test = open_split(synthetic_root, "tiny", "test", 64, 64)
    squared = PatchCore(config).fit(train, show_progress=False)
    plain = PatchCore(dataclasses.replace(config, distance="euclidean")).fit(train, show_progress=False)
    assert torch.equal(squared.memory_bank, plain.memory_bank)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    s_sq, m_sq = squared.predict(images)
    s_eu, m_eu = plain.predict(images)
    assert torch.equal(s_sq, s_eu)
    assert not torch.allclose(m_sq, m_eu)  # the maps do depend on the distance
