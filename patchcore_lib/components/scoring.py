"""Image-level anomaly scores from patch scores: the official max, or the paper's re-weighting (Eq. 7).

Eq. 7 uses Euclidean distances (the paper's ||.||_2, as anomalib), whatever distance the patch maps use.
b (``reweight_neighbourhood``) counts the neighbours of m* in the memory bank *besides m* itself*, so the
softmax runs over b + 1 terms (anomalib's ``num_neighbors`` = b + 1; its default 9 is b = 8). The paper
does not state b (anomalib's 9 goes back to an unofficial implementation that says it guessed it). Our
default b = 3 keeps N_b(m*) a small local neighbourhood of m*, as the paper's wording ("the b nearest
patch-features of m*") suggests, and costs little; no value is better supported by the paper. The weight
lies in [1 - 1/(b+1), 1), so b only changes how strongly an isolated m* is preferred over a dense one
(notebook 03 sweeps b; set b = 8 to match anomalib).
"""
from __future__ import annotations

import torch

from patchcore_lib.errors import ConfigError
from patchcore_lib.components.knn import KnnSearch, fitted_bank

SCORE_MODES = ("max", "reweighted")


def patch_scores_from_distances(distances: torch.Tensor) -> torch.Tensor:
    """Mean over the k nearest-neighbour distances: [N, k] -> [N] (official code)."""
    return distances.mean(dim=1)


def image_scores_max(patch_scores: torch.Tensor) -> torch.Tensor:
    """Image score = maximum patch score: [B, L] -> [B] (official implementation)."""
    return patch_scores.max(dim=1).values


def reweighting_factors(test_features: torch.Tensor, nearest_bank_indices: torch.Tensor,
                        search: KnnSearch, neighbourhood: int) -> torch.Tensor:
    """Paper Eq. 7 weights w for B most-anomalous test patches.

    ``test_features`` [B, D] are the patches m^test,* with the largest score of each image and
    ``nearest_bank_indices`` [B] the index of their nearest memory-bank feature m*. With N_b(m*) the
    ``neighbourhood`` (b) nearest bank features of m* other than m* itself, and d(.) Euclidean,

        w = 1 - exp(d(m^test,*, m*)) / sum_{m in {m*} + N_b(m*)} exp(d(m^test,*, m))

    i.e. one minus the softmax weight of m* among its neighbourhood. (Counting m* itself as one of the b
    neighbours would make b = 1 give w = 0; we keep m* in the sum and add b others, so anomalib's
    ``num_neighbors`` equals b + 1.) Since every term of the sum is at least the numerator's,
    1 - 1/(b+1) <= w < 1: the factor only re-orders images whose s* are close. Returns w [B].
    """
    if not isinstance(neighbourhood, int) or neighbourhood < 1:
        raise ConfigError(f"re-weighting neighbourhood b must be a positive integer, got {neighbourhood!r}")
    bank = fitted_bank(search)
    if neighbourhood + 1 > len(bank):
        raise ConfigError(f"re-weighting neighbourhood b={neighbourhood} needs more than {len(bank)} memory-bank features")
    anchors = bank[nearest_bank_indices.to(bank.device)]  # [B, D]
    # exact neighbours of m* (B rows only), whatever the search (an approximate index may miss some)
    neighbour_idx = torch.cdist(anchors.float(), bank).topk(neighbourhood + 1, dim=1, largest=False).indices
    rows = []
    for anchor, candidates in zip(nearest_bank_indices.tolist(), neighbour_idx.tolist()):
        others = [c for c in candidates if c != anchor][:neighbourhood]
        rows.append([anchor] + others)
    support = bank[torch.tensor(rows, device=bank.device)]  # [B, b+1, D]
    distances = torch.linalg.vector_norm(support - test_features.to(bank.device).unsqueeze(1).float(), dim=-1)
    return (1.0 - torch.softmax(distances.double(), dim=1)[:, 0]).float()


def euclidean_distances(distances: torch.Tensor, distance: str) -> torch.Tensor:
    """Distances of the search (``distance`` = "sqeuclidean" or "euclidean") as Euclidean distances (same shape)."""
    return distances.clamp_min(0).sqrt() if distance == "sqeuclidean" else distances


def image_scores_reweighted(nearest_distances: torch.Tensor, test_features: torch.Tensor, nn_indices: torch.Tensor,
                            search: KnnSearch, neighbourhood: int = 3) -> torch.Tensor:
    """Paper Eq. 6 and 7: s = w * s*, with Euclidean distances throughout.

    ``nearest_distances`` [B, L] are the **Euclidean** distances of each test patch to its nearest memory-bank
    feature (Eq. 6's inner argmin; see :func:`euclidean_distances`), test_features [B, L, D], nn_indices
    [B, L] (index of that nearest feature m) -> [B]. m^test,* is the patch with the largest nearest
    distance, s* that distance and w the factor of :func:`reweighting_factors`. The patch maps may use
    squared distances or a mean over k neighbours; the image score does not depend on either, so it is the
    same under ``distance="sqeuclidean"`` and ``"euclidean"``.
    """
    best = nearest_distances.argmax(dim=1)  # [B]
    rows = torch.arange(len(best), device=best.device)
    weights = reweighting_factors(test_features[rows, best], nn_indices[rows, best], search, neighbourhood)
    return weights.to(nearest_distances.device) * nearest_distances[rows, best]


def image_and_patch_scores(search: KnnSearch, features: torch.Tensor, score: str = "max", distance: str = "sqeuclidean",
                           neighbourhood: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch features [B, L, D] -> (image scores [B], patch scores [B, L]) against the fitted ``search``: patch
    score = mean distance to the k nearest bank features (one ``search.query`` of all B * L patches), image score
    = the max patch score or, with ``score="reweighted"``, Eq. 7 (``neighbourhood`` = b). ``PatchCore.score_features``
    adds the maps; the threshold calibration needs only the image scores."""
    batch, per_image, dim = features.shape
    distances, indices = search.query(features.reshape(-1, dim))
    patch_scores = patch_scores_from_distances(distances).reshape(batch, per_image)
    if score == "max":
        return image_scores_max(patch_scores), patch_scores
    nearest = euclidean_distances(distances[:, 0], distance).reshape(batch, per_image)
    return image_scores_reweighted(nearest, features, indices[:, 0].reshape(batch, per_image), search,
                                   neighbourhood), patch_scores
