"""Approximate IVF-PQ search: recall against the exact search on clustered data, small banks, options."""
import pytest
import torch

from patchcore_lib.components.knn import NearestNeighbourSearch, faiss_available
from patchcore_lib.errors import ConfigError

pytestmark = pytest.mark.skipif(not faiss_available(), reason="IVF-PQ needs faiss")


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP k-means is very slow on an oversubscribed machine; one thread keeps the test short."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _clusters(count, dim=16, clusters=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 5
    return centres[torch.randint(0, clusters, (count,), generator=g)] + torch.randn(count, dim, generator=g)


def test_recall_against_exact_search_on_clustered_data():
    from patchcore_lib.components.knn_ivfpq import IVFPQSearch

    bank, queries = _clusters(2000), _clusters(300, seed=1)[:300]
    exact = NearestNeighbourSearch(backend="torch").fit(bank).query(queries)[1][:, 0]

    def recall(nprobe):
        search = IVFPQSearch(num_nn=1, nlist=16, m=8, nbits=8, nprobe=nprobe).fit(bank)
        distances, indices = search.query(queries, k=10)
        assert indices.shape == (300, 10) and bool((distances[:, 1:] >= distances[:, :-1]).all())
        return (indices[:, 0] == exact).float().mean().item(), (indices == exact[:, None]).any(1).float().mean().item()

    at1, at10 = recall(nprobe=4)
    assert at10 >= 0.95 and at1 >= 0.6  # the true nearest neighbour is almost always among the first 10
    assert recall(nprobe=16)[1] >= recall(nprobe=1)[1]  # probing more lists never loses neighbours here


def test_small_banks_and_bad_parameters_are_clear():
    from patchcore_lib.components.knn_ivfpq import IVFPQSearch

    with pytest.raises(ConfigError, match="too small to train IVF-PQ.*at least 256"):
        IVFPQSearch(nlist=4, m=8, nbits=8).fit(_clusters(200))
    with pytest.raises(ConfigError, match=r"pq_m \(5\) must divide the feature dimension \(16\)"):
        IVFPQSearch(m=5).fit(_clusters(300))
    with pytest.warns(UserWarning, match="fewer than ivf_nlist=512; using 7 lists"):
        search = IVFPQSearch(nlist=512, m=8, nbits=8).fit(_clusters(300))
    assert search.lists_used == 7
    with pytest.raises(ConfigError, match="ivf_nprobe must be a positive integer"):
        IVFPQSearch(nprobe=0)


def test_patchcore_with_ivfpq_scores_like_the_exact_search():
    from patchcore_lib.detectors import PatchCore, PatchCoreConfig

    with pytest.raises(ConfigError, match=r"pq_m \(100\) must divide target_embed_dimension \(384\)"):
        PatchCoreConfig(weights="random", knn_search="ivfpq", pq_m=100)
    config = dict(weights="random", resize=64, imagesize=64, sampler="identity", sigma=0.0, device="cpu")
    bank = _clusters(1500)
    exact = PatchCore(PatchCoreConfig(**config)).fit(bank)
    approx = PatchCore(PatchCoreConfig(**config, knn_search="ivfpq", ivf_nlist=16, pq_m=8, ivf_nprobe=16)).fit(bank)
    assert approx.search.backend == "faiss-ivfpq"
    features = _clusters(4 * 16, seed=2).reshape(4, 16, 16)
    features[0, 3] += 20  # one far-off patch
    s_exact, m_exact = exact.score_features(features, (4, 4), (4, 4))
    s_approx, m_approx = approx.score_features(features, (4, 4), (4, 4))
    assert s_approx.argmax() == s_exact.argmax() == 0
    torch.testing.assert_close(s_approx, s_exact, rtol=0.25, atol=0.5)
