"""The CUDA code paths against the CPU ones. Skipped where no CUDA device is present (CI, the 2-core
development machine); they run unchanged on a GPU machine. The CUDA-specific methods that can also run
on CPU (the convolution aggregation, the torch kNN, the plain coreset loop) are tested on CPU in
test_features.py, test_knn_scoring.py and test_sampling.py."""
import pytest
import torch

from patchcore_lib.components.features import PatchFeatureExtractor
from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.detectors.patchcore import PatchCore, state_fingerprint
from patchcore_lib.components.sampling import ApproximateGreedyCoresetSampler
from test_sampling import reference_approx_greedy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 on the GPU, so CPU and CUDA results are comparable at float32 tolerances."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_patch_features_on_cuda_match_cpu():
    torch.manual_seed(0)
    extractor = PatchFeatureExtractor("resnet18", ("layer2", "layer3"), 3, 256, 128, weights="random")
    images = torch.randn(3, 3, 96, 96)
    cpu, grid = extractor(images)
    cuda, grid_cuda = extractor.to("cuda")(images.cuda())
    assert grid == grid_cuda and cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-3, atol=1e-4)


def test_coreset_on_cuda_is_the_plain_loop_on_cuda():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6000, 256, generator=g).cuda()
    sampler = ApproximateGreedyCoresetSampler(0.05, show_progress=False)  # automatic: plain loop on a GPU
    reduced = sampler.project(features)
    assert reduced.device.type == "cuda"
    starts = sampler.start_points(len(features)).tolist()
    expected = reference_approx_greedy(reduced, starts, int(len(features) * 0.05))  # on the CUDA tensors
    assert sampler.select(features).tolist() == expected
    assert sampler.last_stats["cuda_graph"] is True  # 300 selections: replayed from a captured CUDA graph


def test_torch_knn_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(3000, 64, generator=g), torch.randn(500, 64, generator=g)
    cpu_d, cpu_i = NearestNeighbourSearch(3, backend="torch").fit(bank).query(queries)
    gpu_d, gpu_i = NearestNeighbourSearch(3, backend="auto").fit(bank.cuda()).query(queries.cuda())
    assert gpu_d.device.type == "cuda"
    torch.testing.assert_close(gpu_d.cpu(), cpu_d, rtol=1e-4, atol=1e-4)
    assert (gpu_i.cpu() == cpu_i).float().mean() > 0.99  # neighbours swap only on near-ties


def test_patchcore_fits_and_predicts_on_cuda_like_on_cpu(tmp_path):
    torch.manual_seed(0)
    settings = dict(backbone="resnet18", weights="random", resize=96, imagesize=96, coreset_ratio=1.0,
                    pretrain_embed_dimension=256, target_embed_dimension=128, batch_size=4)
    train = [{"image": batch} for batch in torch.randn(6, 3, 96, 96).split(4)]
    test = torch.randn(3, 3, 96, 96)
    on_cpu = PatchCore(device="cpu", **settings).fit(train, show_progress=False)
    on_gpu = PatchCore(device="cuda", **settings).fit(train, show_progress=False)
    assert state_fingerprint(on_gpu.extractor) == state_fingerprint(on_cpu.extractor)  # same seeded weights
    assert on_gpu.memory_bank.device.type == "cuda" and on_gpu.memory_bank.shape == on_cpu.memory_bank.shape
    cpu_scores, cpu_maps = on_cpu.predict(test)
    gpu_scores, gpu_maps = on_gpu.predict(test)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu_maps.cpu(), cpu_maps, rtol=1e-3, atol=1e-3)
    loaded = PatchCore.load(on_gpu.save(tmp_path / "gpu.pt"), device="cpu")
    torch.testing.assert_close(loaded.predict(test)[0], cpu_scores, rtol=1e-3, atol=1e-3)
