"""Notebook 08 (ablations), sections 4 and 5: memory-bank utilisation (the share of bank entries that are the
nearest neighbour of at least one test patch) and exact vs IVF-PQ search, per coreset ratio and seed.

One exact search per (ratio, seed) gives both the section 5 metrics and the section 4 utilisation; the bank of
the ablation ratio and its search results are re-used from sections 1-3. A 100 % bank has no random part (no
selection, and FAISS's k-means seeds are fixed), so it is computed once and its sd is 0 by construction.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.components.knn_ivfpq import IVFPQSearch
from patchcore_lib.errors import ConfigError
from patchcore_lib.study.cached_scoring import SplitTargets
from patchcore_lib.study.ablations.ablation_features import auroc_metrics, search_and_score, select_bank
from patchcore_lib.study.ablations.ablation_runs import AblationRuns

#: the 100 % bank is searched only up to this many entries (exact search cost = bank x test patches x dim)
MAX_BANK_SEARCH = 20_000


def patch_labels(targets: SplitTargets, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per test patch [N * h * w]: (from a good image, defect patch = at least half of its cell in the mask)."""
    good = np.repeat(targets.labels == 0, grid[0] * grid[1])
    masks = torch.from_numpy(targets.masks.astype(np.float32)).unsqueeze(1)
    coverage = F.adaptive_avg_pool2d(masks, grid).reshape(-1).numpy()
    return good, coverage >= 0.5


def utilisation(indices: torch.Tensor | np.ndarray, bank_size: int, good: np.ndarray | None = None,
                defect: np.ndarray | None = None) -> dict[str, float]:
    """Share of the ``bank_size`` entries that are the nearest neighbour of >= 1 test patch (``indices``: the
    nearest bank index of each test patch), of >= 1 patch of a good image (``good`` mask) and of >= 1 defect
    patch (``defect`` mask); each a multiple of 1 / bank_size."""
    flat = np.asarray(indices).reshape(-1)
    if len(flat) and (flat.min() < 0 or flat.max() >= bank_size):
        raise ConfigError(f"nearest-neighbour indices outside a bank of {bank_size} entries")
    out = {"used": len(np.unique(flat)) / bank_size, "entries_used": int(len(np.unique(flat)))}
    for name, mask in (("used_by_good", good), ("used_by_defect", defect)):
        out[name] = float("nan") if mask is None else len(np.unique(flat[np.asarray(mask)])) / bank_size
    return out


def _ivfpq(config: Any) -> IVFPQSearch:
    return IVFPQSearch(1, "sqeuclidean", config.ivf_nlist, config.pq_m, config.pq_nbits, config.ivf_nprobe)


def search_rows(runs: AblationRuns, ratios: Sequence[float], searches: Sequence[str],
                max_bank: int | None = MAX_BANK_SEARCH) -> pd.DataFrame:
    """One row per (ratio, search, seed) on the default variant: image / pixel AUROC, index and search seconds,
    utilisation (exact search only; IVF-PQ's approximate neighbours would bias it), notes (FAISS's training
    minimum, skipped banks)."""
    default = runs.default
    if default is None:
        runs.run(runs.stage.config.layers or (), runs.stage.config.patch_size, 1)
        default = runs.default
    if default is None:  # run() keeps the default variant's features
        raise ConfigError("the default variant was not run (its features are needed for the search rows)")
    targets, config = runs.stage.targets, runs.stage.config
    good, defect = patch_labels(targets, default.grid)
    total = default.train.shape[0] * default.train.shape[1]
    rows = []
    jobs = [(float(r), s, seed) for r in ratios for s in searches for seed in (runs.seeds if r < 1 else runs.seeds[:1])]
    for ratio, search, seed in tqdm(jobs, desc="ratio x search x seed"):
        base = {"ratio": ratio, "search": search, "seed": seed, "note": ""}
        size = total if ratio >= 1 else max(1, int(total * ratio))
        if max_bank is not None and size > max_bank:
            rows.append({**base, "bank_size": size, "note": f"skipped: bank of {size} entries > cap {max_bank}"})
            continue
        if ratio == runs.ratio and search == "exact" and seed in default.results:
            bank, result = default.banks[seed], default.results[seed]
        else:
            bank = default.banks[seed] if ratio == runs.ratio and seed in default.banks else \
                select_bank(default.train, config, ratio, seed)
            index = NearestNeighbourSearch(1, "sqeuclidean") if search == "exact" else _ivfpq(config)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = search_and_score(index, bank, default.test, default.grid, targets.image_size,
                                              runs.sigma)
                except ConfigError as exc:
                    rows.append({**base, "bank_size": len(bank), "note": f"{search} not run: {exc}"})
                    continue
            base["note"] = "; ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        row = {**base, "bank_size": len(bank), **auroc_metrics(targets, result),
               "index_seconds": result.index_seconds,
               "search_seconds_per_image": result.search_seconds / len(default.test)}
        if search == "exact":
            row.update(utilisation(result.indices, len(bank), good, defect))
        rows.append(row)
    table = pd.DataFrame(rows)
    if runs.seeds[1:]:  # seed-free 100 % rows stand for every seed
        full = table[table.ratio >= 1]
        table = pd.concat([table[table.ratio < 1]] + [full.assign(seed=s) for s in runs.seeds], ignore_index=True)
    return table
