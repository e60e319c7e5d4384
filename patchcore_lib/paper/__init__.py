"""The paper's published numbers and the official implementation's runs, as data: what the study compares its
results with. ``reference`` (paper class means, official per-category results, PaDiM/OrthoAD means),
``ablations`` (the paper's ablation tables), ``anchors`` (the official code run on this project's data; the paper
on other datasets); the files themselves are in ``data/`` with their sources in ``data/README.md``.

Nothing below the study imports this package; it imports only ``errors`` (and ``utils``)."""
