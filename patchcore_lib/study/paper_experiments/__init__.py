"""Notebook 07 (paper experiments): backbone x image size (Table S6), the few-shot curve (Table S5) and
approximate search vs inference time (Table 5), each beside the paper's numbers.

Features are extracted once per (backbone, image size) through the study's feature cache; the features of the
notebook's own backbone and size are kept in memory (:class:`FeatureSet`) and re-used by the few-shot and
search sections, and so are the memory banks already selected (keyed by coreset ratio and seed).

Seeds (parameter ``seeds``): sections 1 and 3 run every coreset once per seed and report the mean over the seeds
with its sample sd (ddof=1; :func:`~patchcore_lib.study.cached_scoring.summarise_seeds`); a seed changes only the
approximate greedy coreset (its random projection and start), so a 100 % bank is computed once for every seed.

* :mod:`.features`: what the sections share (features, banks, one evaluation);
* :mod:`.backbones` (section 1), :mod:`.few_shot` (section 2), :mod:`.search` (section 3).

Notebook 08 (the rest of the paper's ablations) has its own package, :mod:`patchcore_lib.study.ablations`.
"""
from __future__ import annotations

import pandas as pd

from patchcore_lib.paper.ablations import BACKBONES_S6, FEW_SHOT_PADIM_S5, FEW_SHOT_S5, SEARCH_TABLE5
from patchcore_lib.paper.reference import is_mvtec_category
from patchcore_lib.study.paper_values import per_class_patchcore
from patchcore_lib.study.paper_experiments.backbones import (backbone_comparison, backbone_size_table,
                                                             backbone_summary, plot_backbone_sizes)
from patchcore_lib.study.paper_experiments.features import (FULL_BANK_NOTE, PROBE_IMAGES, FeatureSet, bank_for,
                                                            bank_key, device_label, evaluate_bank, evaluate_seeds,
                                                            extract_feature_set, missing_weights, pair_config,
                                                            resize_for, seed_free)
from patchcore_lib.study.paper_experiments.few_shot import (draw_shots, few_shot_comparison, few_shot_summary,
                                                            few_shot_table, plot_few_shot)
from patchcore_lib.study.outputs import records
from patchcore_lib.study.paper_experiments.paper_rows import paper_frame
from patchcore_lib.study.paper_experiments.search import plot_search, search_comparison, search_summary, search_table

__all__ = ["backbone_comparison", "backbone_size_table", "backbone_summary", "plot_backbone_sizes", "FULL_BANK_NOTE",
           "PROBE_IMAGES", "FeatureSet", "bank_for", "bank_key", "device_label", "evaluate_bank", "evaluate_seeds",
           "extract_feature_set", "missing_weights", "pair_config", "resize_for", "seed_free", "draw_shots",
           "few_shot_comparison", "few_shot_summary", "few_shot_table", "plot_few_shot", "plot_search",
           "search_comparison", "search_summary", "search_table", "paper_values", "records"]


def paper_values(category: str) -> dict[str, pd.DataFrame | None]:
    """The paper's values the figures draw beside a run on ``category``: ``backbones`` (Table S6),
    ``few_shot`` and ``few_shot_padim`` (Table S5), ``search`` (Table 5), each row's ``scope`` saying what it is
    (``per_class``: the metrics that are per class, comma-separated, else empty):
    MVTec AD means (``mean of 15``), except Table S6's WideResNet-50 224 px rows and Table 5's exact-search rows,
    whose image and pixel AUROC are the paper's per-class value where it prints one (PatchCore-1%), as the summary
    table shows it. None for
    another dataset (:func:`~patchcore_lib.paper.reference.is_mvtec_category`); the tables keep the paper's rows
    either way, labelled with their scope."""
    if not is_mvtec_category(category):
        return {name: None for name in ("backbones", "few_shot", "few_shot_padim", "search")}
    tables = {"backbones": BACKBONES_S6, "few_shot": FEW_SHOT_S5, "few_shot_padim": FEW_SHOT_PADIM_S5,
              "search": SEARCH_TABLE5}
    out = {name: paper_frame(table) for name, table in tables.items()}
    backbones, search = out["backbones"], out["search"]
    _use_per_class(backbones, (backbones.backbone == "wide_resnet50_2") & (backbones.imagesize == 224),
                   backbones.coreset_ratio, category, "PRO")
    _use_per_class(search, search.search == "exact", search.ratio, category, "PRO, seconds")
    return out


def _use_per_class(table: pd.DataFrame, rows: pd.Series, ratios: pd.Series, category: str, rest: str) -> None:
    """In place: the ``rows`` of a paper ``table`` (PatchCore with the paper's backbone at ``ratios``) take the
    paper's per-class image and pixel AUROC on ``category`` where it prints them; ``scope``, ``source`` and
    ``per_class`` say so (``rest``: the columns that stay 15-class means)."""
    for index in table.index[rows]:
        per_class, label = per_class_patchcore(category, float(ratios[index]), ("image_auroc", "pixel_auroc"))
        for metric, value in per_class.items():
            table.loc[index, metric] = value
        if per_class:
            table.loc[index, "scope"] = f"{label}; {rest}: {table.loc[index, 'scope']}"
            table.loc[index, "source"] = f"{label.split(', ')[0]} per class (patchcore_lib/paper/data/README.md)"
            table.loc[index, "per_class"] = ",".join(per_class)
