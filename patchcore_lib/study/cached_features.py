"""Patch features of a split, extracted once and kept in the store (:mod:`patchcore_lib.utils.store`).

The key holds the content fingerprint of the category's data, the feature settings, the backbone weights'
content and the code that extracts them; an entry that is truncated, altered or of another key is extracted
again, never used.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchcore_lib.data import dataset_fingerprint, open_split
from patchcore_lib.detectors import state_fingerprint
from patchcore_lib.utils.source_fingerprint import code_fingerprint
from patchcore_lib.utils.store import Store, content_key, default_store_root

FEATURES = "features"


@functools.cache
def extraction_code() -> str:
    """Fingerprint of the code that loads images and extracts patch features."""
    return code_fingerprint(("patchcore_lib.detectors.patchcore", "patchcore_lib.data"))


def feature_store(cache_dir: str | Path | None = None) -> Store:
    """The store of features and ablation rows: ``cache_dir``, else :func:`default_store_root`."""
    return Store(Path(cache_dir) if cache_dir is not None else default_store_root())


def content_digest(*arrays: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of the shapes, dtypes and bytes of tensors / arrays (the data part of a key made from tensors)."""
    digest = hashlib.sha256()
    for array in arrays:
        data = np.ascontiguousarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
        digest.update(f"{data.shape}|{data.dtype}|".encode())
        digest.update(data.data.cast("B"))  # the array's own buffer, not a copy
    return digest.hexdigest()


def load_features(model: Any, params: dict[str, Any], split: str,
                  show_progress: bool = False) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """Stored patch features of ``split`` for notebook parameters (``data_root``, ``category``, ``cache_dir``):
    ([N_images, h*w, D] on CPU, grid, was_stored)."""
    return cached_split_features(model, params["data_root"], params["category"], split,
                                 cache_dir=params.get("cache_dir"), show_progress=show_progress)


def cached_split_features(model: Any, data_root: str | Path, category: str, split: str,
                          cache_dir: str | Path | None = None, show_progress: bool = True
                          ) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """Patch features of a split, [N_images, h*w, D] on CPU, from the store or extracted (then stored).

    Returns (features, grid, was_stored). ``model`` is a PatchCore (its config gives the settings).
    """
    config = model.config
    # the weights' content, not only their file name: a file replaced at the same path is a different key
    settings = dict(config.feature_key(), backbone_fingerprint=state_fingerprint(model.extractor.backbone))
    store = feature_store(cache_dir)
    key = content_key(FEATURES, code=extraction_code(), params={"category": category, "split": split, **settings},
                      data=dataset_fingerprint(data_root, category))
    entry = store.load_tensors(FEATURES, key)
    if entry is not None and isinstance(entry.get("features"), torch.Tensor) \
            and entry["features"].shape[0] == entry.get("num_images"):
        return entry["features"], tuple(entry["grid"]), True
    dataset = open_split(data_root, category, split, config.resize, config.imagesize, crop=config.crop)
    flat = model.extract_features(dataset, show_progress=show_progress, desc=f"Extracting {split} features")
    grid = model.extractor.feature_grid(config.imagesize)
    features = flat.reshape(len(dataset), grid[0] * grid[1], -1).cpu()
    store.save_tensors(FEATURES, key, {"features": features, "grid": list(grid), "num_images": len(dataset)},
                       value={"category": category, "split": split})
    return features, grid, False
