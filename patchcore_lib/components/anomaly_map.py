"""Anomaly maps: bilinear upsampling of the patch-score grid to the image, then a Gaussian blur.

The blur equals ``scipy.ndimage.gaussian_filter(map, sigma)`` (truncate 4, mode 'reflect') as in the
official code, but runs in torch on the maps' device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from patchcore_lib.errors import ConfigError

#: the official blur of the anomaly maps (pixels), the default of every detector
DEFAULT_SIGMA = 4.0


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of radius int(truncate * sigma + 0.5), as scipy builds it."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return kernel / kernel.sum()


def _reflect_indices(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices implementing scipy's 'reflect' (half-sample symmetric) padding for any radius."""
    idx = torch.arange(-radius, size + radius, device=device)
    period = 2 * size
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - 1 - idx, idx)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur maps [B, H, W] with a separable Gaussian (sigma in pixels; 0 = no blur)."""
    if sigma < 0:
        raise ConfigError(f"Gaussian sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(device=maps.device, dtype=maps.dtype)
    radius = (len(kernel) - 1) // 2
    h, w = maps.shape[-2:]
    x = maps.unsqueeze(1)  # [B, 1, H, W]
    x = x.index_select(-1, _reflect_indices(w, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x.index_select(-2, _reflect_indices(h, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def anomaly_maps(patch_scores: torch.Tensor, size: tuple[int, int] | int,
                 sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """Patch-score grids [B, h, w] -> anomaly maps [B, H, W] (bilinear, align_corners=False, then blur)."""
    if isinstance(size, int):
        size = (size, size)
    upsampled = F.interpolate(patch_scores.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
    return gaussian_blur(upsampled.squeeze(1), sigma)
