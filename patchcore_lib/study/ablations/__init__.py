"""Notebook 08 (the rest of the paper's ablations, on real data): patch size, hierarchy levels, aggregation vs
stride, memory-bank utilisation, IVF-PQ vs exact search, and why Eq. 7's weights are ~1 at these distances.

* :mod:`.ablation_features`: backbone stage outputs kept in the store, aggregated per patch size / stride /
  hierarchy level (the library's own aggregation), one scoring path that also returns the nearest bank entries;
* :mod:`.ablation_runs` (sections 1-3), :mod:`.utilisation` (sections 4-5), :mod:`.eq7_gaps` (section 6),
  :mod:`.ablation_plots` (their tables and figures).
"""
from __future__ import annotations

from patchcore_lib.study.ablations import ablation_plots, ablation_runs, eq7_gaps, utilisation
from patchcore_lib.study.ablations.ablation_features import extract_stage_maps, level_layers
from patchcore_lib.study.outputs import records

__all__ = ["ablation_plots", "ablation_runs", "eq7_gaps", "utilisation", "extract_stage_maps", "level_layers",
           "records"]
