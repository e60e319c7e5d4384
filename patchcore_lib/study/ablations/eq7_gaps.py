"""Notebook 08 (ablations), section 6: why the paper's Eq. 7 weights are about 1 at these distance scales.

For each test image, m^test,* is its patch with the largest nearest distance and m* that nearest bank entry;
N_b(m*) are the b nearest bank entries of m* other than itself (as :func:`components.scoring.reweighting_factors`).
With Euclidean distances d_0 = d(m^test,*, m*) and d_j = d(m^test,*, n_j), the weight is

    w = 1 - exp(d_0) / (exp(d_0) + sum_j exp(d_j)) = 1 - 1 / (1 + sum_j exp(d_j - d_0))

so it depends only on the gaps g_j = d_j - d_0 >= 0 in feature units: once the gaps are a few units,
sum_j exp(g_j) is large and w = 1 - 1 / (1 + sum_j exp(g_j)) ~ 1, i.e. s = w * s* ~ s* and the re-weighting
changes almost no ranking; only when every gap is 0 does w reach its floor 1 - 1 / (b + 1).
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from patchcore_lib.errors import ConfigError


def eq7_gaps(test_features: torch.Tensor, nearest: torch.Tensor, bank: torch.Tensor, b: int
             ) -> dict[str, np.ndarray]:
    """For each test image (``test_features`` [N, L, D], ``nearest`` [N, L] bank indices of the exact nearest
    entry): d_0 [N], the gaps [N, b] to m*'s b nearest other bank entries, and the weights w [N] (Eq. 7)."""
    if b < 1 or b + 1 > len(bank):
        raise ConfigError(f"Eq. 7 neighbourhood b={b} needs 1 <= b < {len(bank)} (bank entries)")
    rows = torch.arange(len(test_features))
    d_all = torch.linalg.vector_norm(test_features - bank[nearest].reshape(test_features.shape), dim=-1)  # [N, L]
    best = d_all.argmax(dim=1)
    query = test_features[rows, best].double()
    anchor_index = nearest[rows, best]
    anchors = bank[anchor_index].double()
    order = torch.cdist(anchors, bank.double()).topk(b + 1, largest=False).indices
    neighbours = torch.stack([row[row != a][:b] for row, a in zip(order, anchor_index)])
    d0 = torch.linalg.vector_norm(query - anchors, dim=-1)
    dj = torch.linalg.vector_norm(bank.double()[neighbours] - query.unsqueeze(1), dim=-1)  # [N, b]
    gaps = dj - d0.unsqueeze(1)
    # 1 - 1 / (1 + sum_j exp(g_j)), as the softmax of the library (stable for large gaps)
    weights = 1.0 - torch.softmax(torch.cat([d0.unsqueeze(1), dj], dim=1), dim=1)[:, 0]
    return {"d0": d0.numpy(), "gaps": gaps.numpy(), "weights": weights.numpy(),
            "anchor": anchor_index.numpy(), "neighbours": neighbours.numpy()}


def gap_rows(per_seed: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], b_values: Sequence[int]
             ) -> tuple[pd.DataFrame, dict[tuple[int, int], dict[str, np.ndarray]]]:
    """Per (b, seed): statistics of s* = d_0, of the gaps and of 1 - w; ``per_seed`` {seed: (test features
    [N, L, D], nearest indices [N, L], bank [K, D])}. Also returns the raw arrays by (b, seed)."""
    rows, raw = [], {}
    for b in b_values:
        for seed, (test, nearest, bank) in per_seed.items():
            if b + 1 > len(bank):
                rows.append({"b": b, "seed": seed, "note": f"bank of {len(bank)} entries < b + 1"})
                continue
            out = raw[(b, seed)] = eq7_gaps(test, nearest, bank, b)
            gaps, weights = out["gaps"], out["weights"]
            rows.append({"b": b, "seed": seed, "s_star_median": float(np.median(out["d0"])),
                         "gap_min": float(gaps.min()), "gap_median": float(np.median(gaps)),
                         "gap_nearest_median": float(np.median(gaps[:, 0])),
                         "weight_median": float(np.median(weights)), "weight_min": float(weights.min()),
                         "weight_max": float(weights.max()),
                         "one_minus_weight_median": float(np.median(1.0 - weights)),
                         "weight_floor": 1.0 - 1.0 / (b + 1), "note": ""})
    return pd.DataFrame(rows), raw


def plot_gaps(raw: dict[tuple[int, int], dict[str, np.ndarray]], title: str) -> Any:
    """Left: histogram of the gaps d_j - d_0 (all seeds) per b (outlines, normalised: the b's overlap); right: median weight per b with min-max error bars
    over images and seeds, and the floor 1 - 1 / (b + 1) the weight reaches when all gaps are 0."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    bs = sorted({b for b, _ in raw})
    for b in bs:
        gaps = np.concatenate([v["gaps"].reshape(-1) for (bb, _), v in raw.items() if bb == b])
        left.hist(gaps, bins=40, histtype="step", lw=1.8, density=True, label=f"b={b} ({len(gaps)} gaps)")
    left.set_xlabel("gap d(m_test*, n_j) - d(m_test*, m*)  (Euclidean, feature units)")
    left.set_ylabel("share of gaps (density)")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    medians, lows, highs = [], [], []
    for b in bs:
        weights = np.concatenate([v["weights"] for (bb, _), v in raw.items() if bb == b])
        medians.append(np.median(weights))
        lows.append(np.median(weights) - weights.min())
        highs.append(weights.max() - np.median(weights))
    right.errorbar(bs, medians, yerr=[lows, highs], fmt="o", capsize=4, label="weight w: median, min-max")
    right.plot(bs, [1 - 1 / (b + 1) for b in bs], "k--", lw=1, label="floor 1 - 1/(b+1) (all gaps 0)")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_xlabel("b (neighbours of m* besides m*)")
    right.set_ylabel("Eq. 7 weight w")
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3)
    fig.suptitle(title)
    return fig
