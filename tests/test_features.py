"""Patch features: the banded (sparse) aggregation equals a literal transcription of the official pipeline."""
import pytest
import torch
import torch.nn.functional as F

from patchcore_lib.errors import ConfigError
from patchcore_lib.components.features import PatchFeatureExtractor, adaptive_pool_matrix


def official_patch_features(maps: list[torch.Tensor], patch_size: int, pretrain_dim: int, target_dim: int,
                            stride: int = 1) -> torch.Tensor:
    """Literal version of the official PatchMaker/Preprocessing/Aggregator chain -> [B*h*w, T]."""
    padding = (patch_size - 1) // 2
    patched, shapes = [], []
    for x in maps:
        unfolded = F.unfold(x, kernel_size=patch_size, stride=stride, padding=padding)  # [B, C*p*p, L]
        h = (x.shape[-2] + 2 * padding - (patch_size - 1) - 1) // stride + 1
        w = (x.shape[-1] + 2 * padding - (patch_size - 1) - 1) // stride + 1
        unfolded = unfolded.reshape(x.shape[0], x.shape[1], patch_size, patch_size, -1).permute(0, 4, 1, 2, 3)
        patched.append(unfolded)  # [B, L, C, p, p]
        shapes.append((h, w))
    ref = shapes[0]
    for i in range(1, len(patched)):
        f = patched[i]
        f = f.reshape(f.shape[0], shapes[i][0], shapes[i][1], *f.shape[2:]).permute(0, 3, 4, 5, 1, 2)
        base = f.shape
        f = f.reshape(-1, *f.shape[-2:])
        f = F.interpolate(f.unsqueeze(1), size=ref, mode="bilinear", align_corners=False).squeeze(1)
        f = f.reshape(*base[:-2], ref[0], ref[1]).permute(0, 4, 5, 1, 2, 3)
        patched[i] = f.reshape(len(f), -1, *f.shape[-3:])
    per_layer = []
    for f in patched:
        f = f.reshape(-1, *f.shape[-3:])
        per_layer.append(F.adaptive_avg_pool1d(f.reshape(len(f), 1, -1), pretrain_dim).squeeze(1))
    stacked = torch.stack(per_layer, dim=1)
    return F.adaptive_avg_pool1d(stacked.reshape(len(stacked), 1, -1), target_dim).reshape(len(stacked), -1)


def test_adaptive_pool_matrix_matches_torch_pooling():
    v = torch.randn(5, 37, dtype=torch.float64)
    for out in (10, 37, 64):
        expected = F.adaptive_avg_pool1d(v.unsqueeze(1), out).squeeze(1)
        assert torch.allclose(v @ adaptive_pool_matrix(37, out).T, expected, atol=1e-12)


@pytest.mark.parametrize("backbone,layers,dims,patch", [
    pytest.param("resnet18", ("layer2", "layer3"), (1024, 1024), 3, marks=pytest.mark.slow),
    ("resnet18", ("layer2", "layer3"), (256, 100), 5),
    pytest.param("efficientnet_lite0", ("blocks.2", "blocks.4"), (1024, 384), 3, marks=pytest.mark.slow),
    pytest.param("resnet18", ("layer1", "layer2", "layer3"), (512, 300), 3,  # output windows straddle layers
                 marks=pytest.mark.slow),
    pytest.param("resnet18", ("layer3",), (1024, 256), 1, marks=pytest.mark.slow),
])
@pytest.mark.parametrize("method", ["csr", "conv"])  # conv is what CUDA runs: tested here on CPU
def test_fused_features_equal_official_chain(backbone, layers, dims, patch, method):
    torch.manual_seed(0)
    weights = "random" if backbone == "resnet18" else None
    extractor = PatchFeatureExtractor(backbone, layers, patch, *dims, weights=weights)
    for aggregation in extractor.aggregations:
        aggregation.method = method
    images = torch.randn(2, 3, 96, 96)
    features, grid = extractor(images)
    maps = extractor.backbone(images)
    expected = official_patch_features([maps[l] for l in extractor.layers], patch, *dims)
    side = 96 // extractor.backbone.strides[0]
    assert grid == (side, side)
    assert features.shape == (2, side * side, dims[1])
    torch.testing.assert_close(features.reshape(-1, dims[1]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("patch,stride", [(3, 2), pytest.param(5, 3, marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", ["csr", "conv"])
def test_patch_stride_equals_the_official_unfold_with_stride(patch, stride, method):
    torch.manual_seed(0)
    extractor = PatchFeatureExtractor("resnet18", ("layer2", "layer3"), patch, 256, 128, weights="random",
                                      patch_stride=stride)
    for aggregation in extractor.aggregations:
        aggregation.method = method
    images = torch.randn(2, 3, 96, 96)
    features, grid = extractor(images)
    maps = extractor.backbone(images)
    expected = official_patch_features([maps[l] for l in extractor.layers], patch, 256, 128, stride)
    side = (96 // 8 - 1) // stride + 1  # layer2's 12 x 12 grid, every stride-th position: 6 or 4
    assert grid == (side, side) == extractor.feature_grid(96)
    assert features.shape == (2, side * side, 128)
    torch.testing.assert_close(features.reshape(-1, 128), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_stride_keeps_every_sth_position_of_a_single_layer_and_stride_1_is_unchanged():
    torch.manual_seed(0)
    full = PatchFeatureExtractor("resnet18", ("layer2",), 3, 256, 128, weights="random")
    images = torch.randn(2, 3, 96, 96)
    unstrided, grid = full(images)
    assert grid == (12, 12)
    expected = official_patch_features([full.backbone(images)["layer2"]], 3, 256, 128)
    torch.testing.assert_close(unstrided.reshape(-1, 128), expected, rtol=1e-4, atol=1e-5)
    strided = PatchFeatureExtractor("resnet18", ("layer2",), 3, 256, 128, weights="random", patch_stride=2)
    strided.backbone = full.backbone
    picked = unstrided.reshape(2, 12, 12, 128)[:, ::2, ::2].reshape(2, -1, 128)
    torch.testing.assert_close(strided(images)[0], picked, rtol=1e-4, atol=1e-5)


def test_patch_stride_model_maps_keep_the_image_size():
    from patchcore_lib.detectors import PatchCore, PatchCoreConfig

    config = PatchCoreConfig(backbone="resnet18", weights="random", resize=64, imagesize=64, patch_stride=2,
                             sampler="identity", device="cpu")
    model = PatchCore(config)
    images = torch.randn(3, 3, 64, 64)
    features, grid = model.embed(images)
    assert grid == (4, 4) and features.shape[:2] == (3, 16)  # 8 x 8 layer-2 grid, every 2nd position
    model.fit(features.reshape(-1, features.shape[-1]))
    scores, maps = model.predict(images)
    assert scores.shape == (3,) and maps.shape == (3, 64, 64)
    assert "patch_stride" in config.feature_key()
    with pytest.raises(ConfigError, match="patch_stride must be >= 1"):
        PatchCoreConfig(backbone="resnet18", weights="random", patch_stride=0)


def test_too_small_image_and_bad_patch_size_are_clear_errors():
    extractor = PatchFeatureExtractor("resnet18", weights="random")
    extractor.aggregations[0].method = "dense"
    with pytest.raises(ConfigError, match="unknown aggregation method 'dense'"):
        extractor(torch.randn(1, 3, 64, 64))
    extractor.aggregations[0].method = "auto"
    with pytest.raises(ConfigError, match="at least 32 px"):
        extractor(torch.randn(1, 3, 24, 24))
    with pytest.raises(ConfigError, match="patch_size"):
        PatchFeatureExtractor("resnet18", weights="random", patch_size=0)
