"""Image-level anomaly scores from patch scores: the official max, or the paper's re-weighting (Eq. 7)."""
from __future__ import annotations

import torch

from patchcore_lib.errors import ConfigError
from patchcore_lib.components.knn import NearestNeighbourSearch

SCORE_MODES = ("max", "reweighted")


def patch_scores_from_distances(distances: torch.Tensor) -> torch.Tensor:
    """Mean over the k nearest-neighbour distances: [N, k] -> [N] (official code)."""
    return distances.mean(dim=1)


def image_scores_max(patch_scores: torch.Tensor) -> torch.Tensor:
    """Image score = maximum patch score: [B, L] -> [B] (official implementation)."""
    return patch_scores.max(dim=1).values


def reweighting_factors(test_features: torch.Tensor, nearest_bank_indices: torch.Tensor,
                        search: NearestNeighbourSearch, neighbourhood: int) -> torch.Tensor:
    """Paper Eq. 7 weights w for B most-anomalous test patches.

    ``test_features`` [B, D] are the patches m^test,* with the largest score of each image and
    ``nearest_bank_indices`` [B] the index of their nearest memory-bank feature m*. With N_b(m*) the
    ``neighbourhood`` (b) nearest bank features of m* other than m* itself, and d(.) Euclidean,

        w = 1 - exp(d(m^test,*, m*)) / sum_{m in {m*} + N_b(m*)} exp(d(m^test,*, m))

    i.e. one minus the softmax weight of m* among its neighbourhood. (Counting m* itself as one of the b
    neighbours would make b = 1 give w = 0; we keep m* in the sum and add b others.) Returns w [B].
    """
    if not isinstance(neighbourhood, int) or neighbourhood < 1:
        raise ConfigError(f"re-weighting neighbourhood b must be a positive integer, got {neighbourhood!r}")
    bank = search.bank
    if neighbourhood + 1 > len(bank):
        raise ConfigError(f"re-weighting neighbourhood b={neighbourhood} needs more than {len(bank)} memory-bank features")
    anchors = bank[nearest_bank_indices.to(bank.device)]  # [B, D]
    _, neighbour_idx = search.query(anchors, k=neighbourhood + 1)  # [B, b+1], usually m* first
    neighbour_idx = neighbour_idx.to(bank.device)
    rows = []
    for anchor, candidates in zip(nearest_bank_indices.tolist(), neighbour_idx.tolist()):
        others = [c for c in candidates if c != anchor][:neighbourhood]
        rows.append([anchor] + others)
    support = bank[torch.tensor(rows, device=bank.device)]  # [B, b+1, D]
    distances = torch.linalg.vector_norm(support - test_features.to(bank.device).unsqueeze(1).float(), dim=-1)
    return (1.0 - torch.softmax(distances.double(), dim=1)[:, 0]).float()


def image_scores_reweighted(patch_scores: torch.Tensor, test_features: torch.Tensor, nn_indices: torch.Tensor,
                            search: NearestNeighbourSearch, neighbourhood: int = 3) -> torch.Tensor:
    """Paper Eq. 7: s = w * max patch score.

    patch_scores [B, L], test_features [B, L, D], nn_indices [B, L] (nearest bank index per patch) -> [B].
    """
    best = patch_scores.argmax(dim=1)  # [B]
    rows = torch.arange(len(best), device=best.device)
    weights = reweighting_factors(test_features[rows, best], nn_indices[rows, best], search, neighbourhood)
    return weights.to(patch_scores.device) * patch_scores[rows, best]
