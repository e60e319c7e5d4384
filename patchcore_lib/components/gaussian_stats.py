"""The per-position Gaussian parts of PaDiM / OrthoAD, tensors in and out: the channel reductions (a seeded
random subset, a seeded semi-orthogonal projection) and the batched Mahalanobis distance."""
from __future__ import annotations

import torch

from patchcore_lib.errors import ConfigError

def random_channel_subset(total: int, d: int, seed: int) -> torch.Tensor:
    """Seeded random subset of ``d`` of ``total`` channel indices (sorted; the order does not matter)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=generator)[:d].sort().values


def semi_orthogonal_matrix(total: int, k: int, seed: int) -> torch.Tensor:
    """Seeded random W [total, k] with W^T W = I: QR of a Gaussian matrix, signs of diag(R) made positive."""
    if k > total:
        raise ConfigError(f"a semi-orthogonal {total} x {k} matrix needs k <= {total}")
    generator = torch.Generator().manual_seed(int(seed))
    gaussian = torch.randn(total, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(1, dtype=torch.float64))
    return q.float().contiguous()


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Batched Mahalanobis distance: x [P, B, k], mean [P, k], precision [P, k, k] -> [P, B]."""
    diff = x - mean.unsqueeze(1).to(x.dtype)
    product = torch.bmm(diff, precision.to(x.dtype))
    return (product * diff).sum(-1).clamp_min(0).sqrt()
