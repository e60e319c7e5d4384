"""PatchCore patch features, exactly as the official pipeline, computed without waste.

Official pipeline, per layer l with C_l channels on an h_l x w_l grid:
  1. unfold p x p neighbourhoods (stride 1, padding (p-1)//2) -> a C_l*p*p vector per position;
  2. bilinearly upsample that grid of vectors to the finest layer's grid;
  3. adaptive-average-pool each vector to ``pretrain_embed_dimension`` (P);
then stack the layers' P-vectors, flatten, adaptive-average-pool to ``target_embed_dimension`` (T).

Steps 1-3 and the final pooling are all linear, so for each layer they collapse into one matrix
W_l (T x C_l*p*p) = G[:, l*P:(l+1)*P] @ A_l, where A_l and G are the two pooling matrices. Applying
W_l to unfolded neighbourhoods is a p x p convolution with weight W_l.reshape(T, C_l, p, p), and the
channel mixing commutes with the per-channel bilinear upsampling. So the features are
``sum_l upsample(conv2d(x_l, W_l))``: one small convolution per layer on its native grid. The result
equals the official computation up to float rounding (tests compare against a literal version).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FeatureExtractor
from .errors import ConfigError


def adaptive_pool_matrix(in_dim: int, out_dim: int) -> torch.Tensor:
    """Matrix M [out_dim, in_dim] with ``M @ v == adaptive_avg_pool1d(v, out_dim)`` for any vector v."""
    eye = torch.eye(in_dim, dtype=torch.float64).unsqueeze(1)  # [in, 1, in]
    return F.adaptive_avg_pool1d(eye, out_dim).squeeze(1).T.contiguous()  # [out, in]


def aggregation_kernels(channels: list[int], patch_size: int, pretrain_dim: int, target_dim: int) -> list[torch.Tensor]:
    """Per-layer convolution kernels [T, C_l, p, p] equivalent to the official pooling chain."""
    final = adaptive_pool_matrix(len(channels) * pretrain_dim, target_dim)  # [T, L*P]
    kernels = []
    for index, c in enumerate(channels):
        per_layer = adaptive_pool_matrix(c * patch_size * patch_size, pretrain_dim)  # [P, C*p*p]
        combined = final[:, index * pretrain_dim:(index + 1) * pretrain_dim] @ per_layer  # [T, C*p*p]
        kernels.append(combined.reshape(target_dim, c, patch_size, patch_size).float())
    return kernels


class PatchFeatureExtractor(nn.Module):
    """Images [B, 3, S, S] -> patch features [B, h*w, T] on the finest chosen layer's h x w grid."""

    def __init__(self, backbone: str = "efficientnet_lite0", layers: tuple[str, ...] | list[str] | None = None,
                 patch_size: int = 3, pretrain_embed_dimension: int | None = None,
                 target_embed_dimension: int | None = None, weights: str | None = None) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r}")
        self.backbone = FeatureExtractor(backbone, layers, weights)
        default_pretrain, default_target = self.backbone.spec.embed_dims
        self.pretrain_embed_dimension = int(pretrain_embed_dimension or default_pretrain)
        self.target_embed_dimension = int(target_embed_dimension or default_target)
        if self.pretrain_embed_dimension < 1 or self.target_embed_dimension < 1:
            raise ConfigError("embedding dimensions must be positive, got "
                              f"pretrain={self.pretrain_embed_dimension}, target={self.target_embed_dimension}")
        self.patch_size = patch_size
        kernels = aggregation_kernels(self.backbone.channels, patch_size, self.pretrain_embed_dimension,
                                      self.target_embed_dimension)
        for index, kernel in enumerate(kernels):
            self.register_buffer(f"kernel_{index}", kernel, persistent=False)
        self.eval()

    @property
    def layers(self) -> tuple[str, ...]:
        return self.backbone.layers

    @property
    def min_imagesize(self) -> int:
        """Smallest input side for which every chosen layer still has a 2 x 2 grid."""
        return 2 * max(self.backbone.strides)

    def feature_grid(self, imagesize: int) -> tuple[int, int]:
        """The (h, w) patch grid for square inputs of side ``imagesize``."""
        side = -(-imagesize // self.backbone.strides[0])
        return side, side

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Return (features [B, h*w, T], (h, w))."""
        if images.shape[-1] < self.min_imagesize or images.shape[-2] < self.min_imagesize:
            raise ConfigError(f"image size {tuple(images.shape[-2:])} is too small for {self.backbone.spec.name} "
                              f"layers {', '.join(self.layers)}: it needs at least {self.min_imagesize} px")
        maps = self.backbone(images)
        padding = (self.patch_size - 1) // 2
        total = None
        grid = None
        for index, layer in enumerate(self.layers):
            kernel = getattr(self, f"kernel_{index}")
            x = maps[layer]
            y = F.conv2d(x, kernel.to(dtype=x.dtype), padding=padding)  # [B, T, h_l, w_l]
            if grid is None:
                grid = (y.shape[-2], y.shape[-1])
            elif (y.shape[-2], y.shape[-1]) != grid:
                y = F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        batch = total.shape[0]
        features = total.permute(0, 2, 3, 1).reshape(batch, grid[0] * grid[1], -1)
        return features, grid
