"""Anomaly maps: bilinear upsampling + Gaussian blur identical to scipy.ndimage.gaussian_filter."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from patchcore_lib.components.anomaly_map import anomaly_maps, gaussian_blur
from patchcore_lib.errors import ConfigError


@pytest.mark.parametrize("sigma", [0.5, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("size", [(40, 40), (7, 12)])
def test_blur_equals_scipy(sigma, size):
    x = torch.rand(3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = gaussian_blur(x, sigma).numpy()
    expected = np.stack([ndimage.gaussian_filter(m, sigma) for m in x.numpy()])
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_maps_upsample_then_blur():
    grid = torch.zeros(1, 4, 4)
    grid[0, 1, 2] = 1.0
    maps = anomaly_maps(grid, 32, sigma=4.0)
    up = F.interpolate(grid[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(maps.numpy()[0], ndimage.gaussian_filter(up.numpy()[0].astype(np.float64), 4.0), atol=1e-6)
    peak = np.unravel_index(maps[0].argmax().item(), (32, 32))
    assert 2 <= peak[0] <= 13 and 18 <= peak[1] <= 29  # the peak stays at the anomalous patch
    assert torch.equal(anomaly_maps(grid, 32, sigma=0), up)
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_blur(grid, -1)
