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

W_l is also very sparse: adaptive pooling averages *consecutive* entries, so output t of layer l
reads only a short band of consecutive entries of the flattened (channel, dy, dx) neighbourhood, and
only the outputs whose final pooling window lies (partly) in layer l's slice are non-zero. A dense
convolution would spend T * C_l * p * p multiply-adds per position (WideResNet-50 layer2: 1024 * 4608)
on mostly zeros; :class:`BandedAggregation` spends about (non-zero rows) * (band width) instead.
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


def aggregation_kernels(channels: list[int], patch_size: int, pretrain_dim: int, target_dim: int,
                        dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Per-layer convolution kernels [T, C_l, p, p] equivalent to the official pooling chain."""
    final = adaptive_pool_matrix(len(channels) * pretrain_dim, target_dim)  # [T, L*P]
    kernels = []
    for index, c in enumerate(channels):
        per_layer = adaptive_pool_matrix(c * patch_size * patch_size, pretrain_dim)  # [P, C*p*p]
        combined = final[:, index * pretrain_dim:(index + 1) * pretrain_dim] @ per_layer  # [T, C*p*p]
        kernels.append(combined.reshape(target_dim, c, patch_size, patch_size).to(dtype))
    return kernels


class BandedAggregation(nn.Module):
    """Applies one layer's aggregation matrix ``W [T, C*p*p]`` to p x p neighbourhoods, sparsely.

    Only rows ``row_start:row_stop`` of W are non-zero; row t's non-zeros lie in columns
    ``index[t, 0] .. index[t, 0] + width - 1`` (``weight`` holds them, zero-padded).
    ``forward``: ``x [B, C, h, w]`` -> ``[B, row_stop - row_start, h, w]``.
    """

    def __init__(self, matrix: torch.Tensor, channels: int, patch_size: int) -> None:
        super().__init__()
        nonzero = matrix != 0
        rows = nonzero.any(1).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise ConfigError("aggregation matrix of a layer is all zero (embedding dimensions too small?)")
        self.row_start, self.row_stop = int(rows.min()), int(rows.max()) + 1
        band = nonzero[self.row_start:self.row_stop]
        columns = torch.arange(matrix.shape[1]).expand_as(band)
        first = torch.where(band, columns, matrix.shape[1]).amin(1)
        last = torch.where(band, columns, -1).amax(1)
        first = torch.where(last >= 0, first, 0)  # all-zero rows inside the range
        width = int((last - first + 1).clamp_min(1).max())
        offsets = torch.arange(width)
        index = (first[:, None] + offsets).clamp_max(matrix.shape[1] - 1)
        inside = (first[:, None] + offsets) <= last[:, None]
        weight = torch.where(inside, matrix[self.row_start:self.row_stop].gather(1, index), 0.0)
        self.register_buffer("index", index, persistent=False)  # [rows, width]
        self.register_buffer("weight", weight.float(), persistent=False)  # [rows, width]
        self.channels, self.patch_size = channels, patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        padding = (self.patch_size - 1) // 2
        unfolded = F.unfold(x, self.patch_size, padding=padding)  # [B, C*p*p, h*w], official order
        weight = self.weight.to(dtype=x.dtype)
        out = None
        for j in range(self.index.shape[1]):
            term = unfolded.index_select(1, self.index[:, j]).mul_(weight[:, j, None])
            out = term if out is None else out.add_(term)
        return out.view(batch, -1, height, width)


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
                                      self.target_embed_dimension, dtype=torch.float64)
        self.aggregations = nn.ModuleList(
            BandedAggregation(kernel.reshape(kernel.shape[0], -1), channels, patch_size)
            for kernel, channels in zip(kernels, self.backbone.channels)
        )
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
        first = maps[self.layers[0]]
        batch, grid = first.shape[0], (first.shape[-2], first.shape[-1])
        total = first.new_zeros(batch, self.target_embed_dimension, *grid)
        for layer, aggregation in zip(self.layers, self.aggregations):
            y = aggregation(maps[layer])  # [B, rows of this layer, h_l, w_l]
            if (y.shape[-2], y.shape[-1]) != grid:
                y = F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
            total[:, aggregation.row_start:aggregation.row_stop] += y
        features = total.permute(0, 2, 3, 1).reshape(batch, grid[0] * grid[1], -1)
        return features, grid
