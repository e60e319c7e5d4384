"""Mixed precision of the backbone forward pass: float32 stays exact, the reduced precisions stay close and
leave no global state behind."""
import pytest
import torch

from patchcore_lib.components.features import PRECISIONS, PatchFeatureExtractor, precision_context
from patchcore_lib.detectors.patchcore import PatchCoreConfig
from patchcore_lib.errors import ConfigError


def _extractor(precision: str) -> PatchFeatureExtractor:
    torch.manual_seed(0)
    return PatchFeatureExtractor("resnet18", ("layer2", "layer3"), 3, 256, 128, weights="random", precision=precision)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_float32_and_tf32_on_cpu_are_the_exact_path(images):
    exact, grid = _extractor("float32")(images)
    tf32, _ = _extractor("tf32")(images)
    assert exact.dtype == torch.float32 and grid == (8, 8)
    assert torch.equal(exact, tf32)  # TF32 only changes CUDA kernels


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_features_are_float32_and_close(images, precision):
    exact, _ = _extractor("float32")(images)
    reduced, _ = _extractor(precision)(images)
    assert reduced.dtype == torch.float32 and reduced.shape == exact.shape
    assert not torch.equal(reduced, exact)  # the forward pass really ran at lower precision
    relative = (reduced - exact).norm() / exact.norm()
    assert relative < (0.05 if precision == "bfloat16" else 0.01), relative


def test_precision_context_restores_flags_and_rejects_unknown_values():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision_context("tf32", torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        PatchCoreConfig(precision="int8")
    assert set(PRECISIONS) == {"float32", "tf32", "bfloat16", "float16"}
    assert PatchCoreConfig().precision == "float32"
    assert "precision" in PatchCoreConfig(precision="bfloat16").feature_key()
