"""Notebook 08 (ablations), sections 1-3: patch size, hierarchy levels and aggregation vs stride, each variant
aggregated from the stored backbone stages (:mod:`.ablation_features`), subsampled at one coreset ratio per
seed and scored with the exact search; one row per (variant, seed), summarised as mean ± sample sd.

A variant shared by several sections (p = 3, levels 2+3, stride 1 is in all three) is computed once; its
features, banks and search results are kept (:attr:`AblationRuns.default`) for sections 4 and 6.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.paper.ablations import CORESET_VS_RANDOM
from patchcore_lib.paper.reference import is_mvtec_category
from patchcore_lib.study.cached_scoring import mean_sd, summarise_seeds
from patchcore_lib.study.ablations.ablation_features import (LEVEL_SETS, PATCH_SIZES, STRIDE_SETTINGS,
                                                                     SearchResult, StageMaps, auroc_metrics,
                                                                     layers_of, search_and_score, select_bank,
                                                                     variant_features)

#: a variant with more than MAX_PATCH_FACTOR x the default variant's training patches (and more than
#: ALWAYS_RUN_PATCHES) is skipped with a note: coreset and search cost grow with patches x bank, i.e. with the
#: square of the patch count at a fixed ratio; level 1 (stride 4) has 4x the patches of level 2, so its sets cost
#: ~16x the default variant (efficientnet_lite0, bottle, 224 px, 1024-d: ~90 s per seed instead of ~10 s)
MAX_PATCH_FACTOR = 2.0
ALWAYS_RUN_PATCHES = 20_000
METRICS = ("image_auroc", "pixel_auroc")


@dataclass
class DefaultRun:
    """The notebook's own variant (config layers, patch size, stride 1): features and, per seed, bank and result."""

    train: Any
    test: Any
    grid: tuple[int, int]
    banks: dict[int, Any] = field(default_factory=dict)
    results: dict[int, SearchResult] = field(default_factory=dict)


@dataclass
class AblationRuns:
    """Runs variants of ``stage`` at ``ratio`` over ``seeds``; rows kept per variant key (layers, p, stride)."""

    stage: StageMaps
    ratio: float
    seeds: Sequence[int]
    sigma: float
    max_patch_factor: float | None = MAX_PATCH_FACTOR
    always_run_patches: int = ALWAYS_RUN_PATCHES
    rows: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)
    default: DefaultRun | None = None

    def is_default(self, layers: tuple[str, ...], patch_size: int, stride: int) -> bool:
        config = self.stage.config
        return tuple(layers) == tuple(config.layers or ()) and patch_size == config.patch_size and stride == 1

    def run(self, layers: Sequence[str], patch_size: int, stride: int = 1) -> list[dict[str, Any]]:
        """One row per seed (or one skipped row) of a variant; computed once per key."""
        layers = tuple(layers)
        key = (layers, int(patch_size), int(stride))
        if key in self.rows:
            return self.rows[key]
        base = {"layers": "+".join(layers), "patch_size": int(patch_size), "stride": int(stride),
                "ratio": self.ratio}
        images = len(next(iter(self.stage.train.values())))
        patches = images * self._grid_side(layers, patch_size, stride) ** 2
        config = self.stage.config
        limit = None if self.max_patch_factor is None else max(
            self.always_run_patches, self.max_patch_factor * images * self._grid_side(config.layers or (), config.patch_size, 1) ** 2)
        if limit is not None and patches > limit:
            self.rows[key] = [{**base, "seed": None, "train_patches": patches, "bank_size": np.nan,
                               **{m: np.nan for m in METRICS}, "seconds": np.nan,
                               "note": f"skipped: {patches} training patches > {self.max_patch_factor:g} x the "
                                       f"default variant's (cost ~ patches^2; parameter max_patch_factor)"}]
            return self.rows[key]
        start = time.perf_counter()
        train, test, grid = variant_features(self.stage, layers, patch_size, stride)
        aggregate_seconds = time.perf_counter() - start
        default = DefaultRun(train, test, grid) if self.is_default(layers, patch_size, stride) else None
        if default is not None:
            self.default = default
        rows = []
        for seed in self.seeds:
            start = time.perf_counter()
            bank = select_bank(train, self.stage.config, self.ratio, seed)
            result = search_and_score(NearestNeighbourSearch(1, "sqeuclidean"), bank, test, grid,
                                      self.stage.targets.image_size, self.sigma)
            rows.append({**base, "seed": int(seed), "train_patches": patches, "bank_size": len(bank),
                         **auroc_metrics(self.stage.targets, result),
                         "seconds": aggregate_seconds / len(self.seeds) + time.perf_counter() - start, "note": ""})
            if default is not None:
                default.banks[int(seed)], default.results[int(seed)] = bank, result
        self.rows[key] = rows
        return rows

    def _grid_side(self, layers: tuple[str, ...], patch_size: int, stride: int) -> int:
        side = self.stage.train[layers[0]].shape[-1]
        return (side + 2 * ((patch_size - 1) // 2) - patch_size) // stride + 1


def _section(runs: AblationRuns, jobs: list[tuple[str, tuple[str, ...], int, int]], desc: str) -> pd.DataFrame:
    rows = []
    for label, layers, patch_size, stride in tqdm(jobs, desc=desc):
        rows += [{"variant": label, **row} for row in runs.run(layers, patch_size, stride)]
    return pd.DataFrame(rows)


def patch_size_runs(runs: AblationRuns, patch_sizes: Sequence[int] = PATCH_SIZES) -> pd.DataFrame:
    """Section 1: the config's layers, stride 1, each patch size p."""
    layers = tuple(runs.stage.config.layers or ())
    return _section(runs, [(f"p={p}", layers, int(p), 1) for p in patch_sizes], "patch sizes")


def level_runs(runs: AblationRuns, level_sets: Sequence[str] = LEVEL_SETS) -> pd.DataFrame:
    """Section 2: hierarchy-level sets (mapped to the backbone's layers), the config's patch size, stride 1."""
    backbone, p = runs.stage.config.backbone, runs.stage.config.patch_size
    return _section(runs, [(levels, layers_of(levels, backbone), p, 1) for levels in level_sets], "levels")


def stride_runs(runs: AblationRuns, settings: Sequence[tuple[int, int]] = STRIDE_SETTINGS) -> pd.DataFrame:
    """Section 3: (patch size, stride) pairs on the config's layers: p x p aggregation at stride 1, p = 1 (no
    aggregation) at stride 1, and strided patch grids (every s-th position per axis, paper Eq. 3)."""
    layers = tuple(runs.stage.config.layers or ())
    return _section(runs, [(f"p={p}, s={s}", layers, int(p), int(s)) for p, s in settings], "aggregation / stride")


def summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd over seeds per variant (:func:`summarise_seeds`)."""
    return summarise_seeds(per_seed, ["variant"], [*METRICS, "bank_size", "seconds"])


def paper_default(category: str, ratio: float) -> dict[str, Any] | None:
    """The paper's PatchCore at ``ratio`` (p = 3, levels 2+3, stride 1; Tables 1-2 / 5, MVTec AD mean) or None
    (another dataset, or a ratio the paper does not print)."""
    if not is_mvtec_category(category):
        return None
    table = CORESET_VS_RANDOM.frame()
    hit = table[(table.sampler == "approx_greedy") & np.isclose(table.ratio, ratio) & ~table.approximate]
    return None if hit.empty else hit.iloc[0].to_dict()


def display_table(summary_table: pd.DataFrame, runs: AblationRuns, category: str, plot_only: str) -> pd.DataFrame:
    """Percent, one decimal, mean ± sd; the paper's value beside the default variant where it prints one, and
    ``plot_only`` (where the paper shows the ablation) beside the others."""
    paper = paper_default(category, runs.ratio)
    config = runs.stage.config
    rows = []
    for _, r in summary_table.iterrows():
        default = r.layers == "+".join(config.layers or ()) and r.patch_size == config.patch_size and r.stride == 1
        row = {"variant": r.variant, "layers": r.layers, "patch_size": r.patch_size, "stride": r.stride,
               "bank_size": "n/a" if pd.isna(r.bank_size) else int(round(r.bank_size))}
        for metric in METRICS:
            row[metric] = mean_sd(r[metric], r.get(f"{metric}_sd"))
            row[f"paper_{metric}"] = (mean_sd(paper[metric]) if default and paper is not None and
                                      paper[metric] is not None else "")
        row["paper_source"] = (f"{paper['from']} (MVTec AD mean, WideResNet-50)" if default and paper is not None
                               else plot_only)
        row["seeds"] = 0 if str(r.note).startswith("skipped") else int(r.seeds)
        row["note"] = r.note
        rows.append(row)
    return pd.DataFrame(rows)
