"""Dataset layouts behind one entry point, :func:`open_split`.

A layout is a ``torch.utils.data.Dataset`` class registered with ``@LAYOUTS.register(name)`` whose
constructor is ``(root, category, split, resize, imagesize, mask_convention="nearest", crop="center")`` and whose items are
dicts with ``image`` [3, S, S], ``mask`` [1, S, S], ``label``, ``defect_type`` and ``path``. A layout class may
define ``matches(root, category) -> bool`` (used by ``layout="auto"``), ``check(root, category)`` (raises a
DatasetError saying what is missing) and ``has_masks`` (False: pixel metrics are unavailable, reported as NaN).
"""
from __future__ import annotations

from pathlib import Path

import torch

from patchcore_lib.data.preprocessing import DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_MASK_CONVENTION, DEFAULT_RESIZE
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.utils.registry import Registry

LAYOUTS: Registry[type[torch.utils.data.Dataset]] = Registry("dataset layout")
AUTO = "auto"


def resolve_layout(root: str | Path, category: str, layout: str = AUTO) -> str:
    """``layout`` itself, or for ``"auto"`` the one registered layout whose ``matches`` accepts the folder;
    a DatasetError when none or several do."""
    if layout != AUTO:
        LAYOUTS.get(layout)
        return layout
    found = [name for name, cls in LAYOUTS.items() if getattr(cls, "matches", None) and cls.matches(root, category)]
    if len(found) == 1:
        return found[0]
    folder = Path(root) / category
    if not found:
        for _, cls in LAYOUTS.items():  # the layouts' own checks name what is missing (data root, category)
            if getattr(cls, "check", None):
                cls.check(root, category)
        raise DatasetError(f"{folder}: no known dataset layout ({', '.join(LAYOUTS.names())}); "
                           "a category needs at least a train/ folder of normal images")
    raise DatasetError(f"{folder} matches several dataset layouts ({', '.join(found)}); choose one with --layout")


def open_split(root: str | Path, category: str, split: str, resize: int = DEFAULT_RESIZE,
               imagesize: int = DEFAULT_IMAGESIZE,
               layout: str = AUTO, mask_convention: str = DEFAULT_MASK_CONVENTION, shots: int | None = None,
               shots_seed: int = 0, crop: str = DEFAULT_CROP) -> torch.utils.data.Dataset:
    """The ``split`` ('train' or 'test') of ``category`` under ``root``, preprocessed to ``imagesize`` px
    (``layout="auto"``: detected, see :func:`resolve_layout`); ground-truth masks resized by
    ``mask_convention`` (``nearest`` or ``official``) and cropped by ``crop`` (``center`` or ``none``), see
    :class:`~patchcore_lib.data.preprocessing.Preprocess`.

    ``shots``: keep only that many images, drawn by ``shots_seed`` (:func:`select_shots`; the paper's
    few-shot study fits on n nominal training images); None keeps every image.
    """
    cls = LAYOUTS.get(resolve_layout(root, category, layout))
    dataset = cls(root, category, split, resize, imagesize, mask_convention=mask_convention, crop=crop)
    if shots is None:
        return dataset
    return torch.utils.data.Subset(dataset, select_shots(len(dataset), shots, shots_seed, f"{root}/{category}/{split}"))


def select_shots(count: int, shots: int, seed: int, where: str = "the split") -> list[int]:
    """``shots`` distinct indices of ``count`` images, drawn uniformly by ``seed`` (same seed, same images),
    in ascending order. ConfigError when ``shots`` is not in [1, count]."""
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= count:
        raise ConfigError(f"train_shots must be an integer in [1, {count}] ({where} has {count} images), "
                          f"got {shots!r}")
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(count, generator=generator)[:shots].tolist())
