"""PatchCore patch features, exactly as the official pipeline, computed without waste.

Official pipeline, per layer l with C_l channels on an h_l x w_l grid:
  1. unfold p x p neighbourhoods (stride s, default 1, padding (p-1)//2) -> a C_l*p*p vector per position
     (with s > 1 only every s-th position of each axis: the paper's Eq. 3, h, w mod s = 0);
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
on mostly zeros; :class:`SparseAggregation` multiplies only the non-zeros (a CSR matrix) on CPU:
WideResNet-50 layer2, 8 images at 224 px: 29 ms instead of 162 ms for the dense convolution.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from patchcore_lib.components.backbones import DEFAULT_BACKBONE, FeatureExtractor
from patchcore_lib.errors import ConfigError


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


class SparseAggregation(nn.Module):
    """Applies one layer's aggregation matrix ``W [T, C*p*p]`` to the p x p neighbourhoods of a map.

    Only rows ``row_start:row_stop`` of W can be non-zero (``weight`` keeps those), and each of them
    has a short band of non-zeros. On CPU the product is a sparse (CSR) x dense matrix product per
    image with the unfolded neighbourhoods; on CUDA it is a dense convolution with the kept rows.
    ``method`` ("auto", "csr" or "conv") forces one of the two on any device (tests run the CUDA
    method on CPU). ``forward``: ``x [B, C, h, w]`` -> ``[B, row_stop - row_start, h', w']`` with
    h' = (h + 2 * ((p - 1) // 2) - p) // stride + 1 (h' = h for odd p and stride 1), as ``nn.Unfold``.
    """

    METHODS = ("auto", "csr", "conv")
    weight: torch.Tensor  # a buffer (register_buffer below)

    def __init__(self, matrix: torch.Tensor, channels: int, patch_size: int, stride: int = 1) -> None:
        super().__init__()
        rows = (matrix != 0).any(1).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise ConfigError("aggregation matrix of a layer is all zero (embedding dimensions too small?)")
        self.row_start, self.row_stop = int(rows.min()), int(rows.max()) + 1
        self.register_buffer("weight", matrix[self.row_start:self.row_stop].float().contiguous(), persistent=False)
        self.channels, self.patch_size, self.stride = channels, patch_size, stride
        self.method = "auto"
        self._sparse: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _sparse_weight(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._sparse:
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._sparse[key] = self.weight.to(device=device, dtype=dtype).to_sparse_csr()
        return self._sparse[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        padding = (self.patch_size - 1) // 2
        height = (height + 2 * padding - self.patch_size) // self.stride + 1
        width = (width + 2 * padding - self.patch_size) // self.stride + 1
        rows = self.row_stop - self.row_start
        if self.method not in self.METHODS:
            raise ConfigError(f"unknown aggregation method {self.method!r}; valid: {', '.join(self.METHODS)}")
        if self.method == "conv" or (self.method == "auto" and x.device.type != "cpu"):
            kernel = self.weight.view(rows, channels, self.patch_size, self.patch_size).to(dtype=x.dtype)
            return F.conv2d(x, kernel, padding=padding, stride=self.stride)
        sparse = self._sparse_weight(x.device, x.dtype)
        out = x.new_empty(batch, rows, height * width)
        for index in range(batch):  # one image at a time: its unfolded copy stays small
            unfolded = F.unfold(x[index:index + 1], self.patch_size, padding=padding, stride=self.stride)[0]
            out[index] = torch.sparse.mm(sparse, unfolded)
        return out.view(batch, rows, height, width)


#: Numeric precision of the backbone forward pass: exact float32 (default), float32 with TF32 tensor-core
#: matmuls/convolutions (CUDA only; no effect on CPU), or autocast to bfloat16 / float16. Patch features,
#: coreset and kNN stay float32 in every mode.
PRECISIONS = ("float32", "tf32", "bfloat16", "float16")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward pass at ``precision`` (see :data:`PRECISIONS`); restores global flags after."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "float32":
        yield
        return
    if precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


class PatchFeatureExtractor(nn.Module):
    """Images [B, 3, S, S] -> patch features [B, h*w, T] (float32) on the finest chosen layer's h x w grid (every
    ``patch_stride``-th position of it along each axis when the stride is > 1)."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, layers: tuple[str, ...] | list[str] | None = None,
                 patch_size: int = 3, pretrain_embed_dimension: int | None = None,
                 target_embed_dimension: int | None = None, weights: str | None = None,
                 patch_stride: int = 1, precision: str = "float32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.precision = precision
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r}")
        if isinstance(patch_stride, bool) or not isinstance(patch_stride, int) or patch_stride < 1:
            raise ConfigError(f"patch_stride must be a positive integer, got {patch_stride!r}")
        self.backbone = FeatureExtractor(backbone, layers, weights)
        default_pretrain, default_target = self.backbone.spec.embed_dims
        self.pretrain_embed_dimension = int(pretrain_embed_dimension or default_pretrain)
        self.target_embed_dimension = int(target_embed_dimension or default_target)
        if self.pretrain_embed_dimension < 1 or self.target_embed_dimension < 1:
            raise ConfigError("embedding dimensions must be positive, got "
                              f"pretrain={self.pretrain_embed_dimension}, target={self.target_embed_dimension}")
        self.patch_size, self.patch_stride = patch_size, patch_stride
        kernels = aggregation_kernels(self.backbone.channels, patch_size, self.pretrain_embed_dimension,
                                      self.target_embed_dimension, dtype=torch.float64)
        self.aggregations = nn.ModuleList(
            SparseAggregation(kernel.reshape(kernel.shape[0], -1), channels, patch_size, patch_stride)
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
        side = (side + 2 * ((self.patch_size - 1) // 2) - self.patch_size) // self.patch_stride + 1
        return side, side

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Return (features [B, h*w, T], (h, w))."""
        if images.shape[-1] < self.min_imagesize or images.shape[-2] < self.min_imagesize:
            raise ConfigError(f"image size {tuple(images.shape[-2:])} is too small for {self.backbone.spec.name} "
                              f"layers {', '.join(self.layers)}: it needs at least {self.min_imagesize} px")
        with precision_context(self.precision, images.device):
            maps = self.backbone(images)
        if self.precision in ("bfloat16", "float16"):
            maps = {name: value.float() for name, value in maps.items()}
        return aggregate_stage_maps(maps, self.layers, self.layer_aggregations, self.target_embed_dimension)

    @property
    def layer_aggregations(self) -> list[SparseAggregation]:
        """The per-layer aggregations (the ModuleList's items, typed)."""
        return cast(list[SparseAggregation], list(self.aggregations))


def aggregate_stage_maps(maps: dict[str, torch.Tensor], layers: Sequence[str],
                         aggregations: Sequence[SparseAggregation], target_dim: int
                         ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Backbone outputs ``{layer: [B, C, h_l, w_l]}`` -> (patch features [B, h*w, T], (h, w)): each layer's
    neighbourhood aggregation and pooling (``aggregations``, one per layer of ``layers``), upsampled to the first
    layer's grid and summed into its rows of the ``target_dim`` feature. What :class:`PatchFeatureExtractor` does
    after its backbone pass (also used on stored stage outputs: notebook 08's patch-size and layer ablations)."""
    first = aggregations[0](maps[layers[0]])  # [B, rows of the first layer, h, w]
    batch, grid = first.shape[0], (first.shape[-2], first.shape[-1])
    total = first.new_zeros(batch, target_dim, *grid)
    for index, (layer, aggregation) in enumerate(zip(layers, aggregations)):
        y = first if index == 0 else aggregation(maps[layer])  # [B, rows of this layer, h_l, w_l]
        if (y.shape[-2], y.shape[-1]) != grid:
            y = F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
        total[:, aggregation.row_start:aggregation.row_stop] += y
    return total.permute(0, 2, 3, 1).reshape(batch, grid[0] * grid[1], -1), grid
