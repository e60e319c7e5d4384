"""The notebook study: what the notebooks of ``notebooks/`` import (nothing in the library imports it).

* :mod:`.engine`: the runner (``python -m patchcore_lib.study -f params/quick.yaml``), run keys, Dask, sweeps;
* :mod:`.params`: the one check of notebook parameters (:func:`~.params.validate_parameters`);
* :mod:`.outputs`: run folders, figures, tables and ``metrics.json``; :mod:`.cached_features`: patch features
  kept in the store;
* one module per notebook: :mod:`.feature_extraction` (01), :mod:`.coreset_ablation` (02),
  :mod:`.knn_scoring` (03), :mod:`.evaluate` (04), :mod:`.report` (05), :mod:`.baselines` (06),
  :mod:`.paper_experiments` (07), :mod:`.ablations` (08); :mod:`.cached_scoring`: what they share (test targets,
  scoring on cached features), :mod:`.display`: labels, colours, percent tables.
"""
