"""On-disk cache of extracted patch features, keyed by dataset fingerprint + feature settings.

An entry stores its own key and a checksum of its content; an entry whose stored key differs, whose checksum
does not match (a flipped bit), or which is truncated/unreadable, is rebuilt, never used. The key holds the
dataset's content fingerprint, the feature settings, the backbone weights' fingerprint and the library
version. Entries are written atomically (temporary file + rename).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from patchcore_lib import __version__
from patchcore_lib.data import dataset_fingerprint, open_split
from patchcore_lib.detectors import state_fingerprint
from patchcore_lib.utils.files import atomic_torch_save
from patchcore_lib.utils.integrity import checksum_problem, seal

CACHE_FORMAT = "patchcore_lib.features/2"


def default_cache_dir() -> Path:
    """``$PATCHCORE_CACHE/features`` or ``~/.cache/patchcore_lib/features``."""
    base = os.environ.get("PATCHCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "patchcore_lib")
    return Path(base) / "features"


def feature_cache_key(data_root: str | Path, category: str, split: str, feature_settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines the features of one split."""
    return {"format": CACHE_FORMAT, "library_version": __version__, "category": category, "split": split,
            "dataset_fingerprint": dataset_fingerprint(data_root, category), "settings": feature_settings}


def _key_name(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def load_entry(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached payload if ``path`` holds a complete entry for exactly ``key``; else None."""
    try:
        payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("key") != json.loads(json.dumps(key)):
        return None
    if checksum_problem(payload) is not None:
        return None
    features = payload.get("features")
    if not isinstance(features, torch.Tensor) or features.shape[0] != payload.get("num_images"):
        return None
    return payload


def cached_split_features(model: Any, data_root: str | Path, category: str, split: str,
                          cache_dir: str | Path | None = None, show_progress: bool = True) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """Patch features of a split, [N_images, h*w, D] on CPU, from the cache or extracted (then stored).

    Returns (features, grid, was_cached). ``model`` is a PatchCore (its config gives the settings).
    """
    config = model.config
    # the weights' content, not only their file name: a file replaced at the same path is a different key
    settings = dict(config.feature_key(), backbone_fingerprint=state_fingerprint(model.extractor.backbone))
    key = feature_cache_key(data_root, category, split, settings)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{category}-{split}-{_key_name(key)}.pt"
    entry = load_entry(path, key) if path.is_file() else None
    if entry is not None:
        return entry["features"], tuple(entry["grid"]), True
    dataset = open_split(data_root, category, split, config.resize, config.imagesize,
                         crop=config.crop)
    flat = model.extract_features(dataset, show_progress=show_progress, desc=f"Extracting {split} features")
    grid = model.extractor.feature_grid(config.imagesize)
    features = flat.reshape(len(dataset), grid[0] * grid[1], -1).cpu()
    atomic_torch_save(seal({"key": key, "features": features, "grid": list(grid), "num_images": len(dataset)}), path)
    return features, grid, False
