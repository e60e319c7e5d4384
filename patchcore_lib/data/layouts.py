"""Dataset layouts behind one entry point, :func:`open_split`.

A layout is a :class:`SplitDataset` (a ``torch.utils.data.Dataset``) class registered with
``@LAYOUTS.register(name)`` whose constructor is ``(root, category, split, resize, imagesize,
mask_convention="nearest", crop="center")`` and whose items are dicts with ``image`` [3, S, S], ``mask``
[1, S, S], ``label``, ``defect_type`` and ``path``. A layout class may
define ``matches(root, category) -> bool`` (used by ``layout="auto"``), ``check(root, category)`` (raises a
DatasetError saying what is missing) and ``has_masks`` (False: pixel metrics are unavailable, reported as NaN).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from patchcore_lib.data.preprocessing import DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_MASK_CONVENTION, DEFAULT_RESIZE
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.utils.registry import Registry


class SplitDataset(torch.utils.data.Dataset):
    """The base of a layout class: the constructor :func:`open_split` calls, ``__len__`` (which torch's Dataset
    does not declare), ``samples`` (one per item, with ``path``, ``label``, ``defect_type``, ``mask_path``) and
    ``has_masks``."""

    has_masks: bool = True
    samples: list[Any]
    threaded_loading = True  # make_loader may read items in a background thread (data/prefetch.py)

    def __init__(self, root: str | Path, category: str, split: str = "train", resize: int = DEFAULT_RESIZE,
                 imagesize: int = DEFAULT_IMAGESIZE, mask_convention: str = DEFAULT_MASK_CONVENTION,
                 crop: str = DEFAULT_CROP) -> None:
        raise NotImplementedError(f"{type(self).__name__} is a dataset layout without its own constructor")

    def __len__(self) -> int:
        return len(self.samples)


class FewShots(torch.utils.data.Subset, SplitDataset):
    """``indices`` of a split (the few-shot draw of :func:`select_shots`): a Subset with the split's
    ``samples`` of those images and its ``has_masks``."""

    def __init__(self, dataset: SplitDataset, indices: list[int]) -> None:
        torch.utils.data.Subset.__init__(self, dataset, indices)
        self.samples = [dataset.samples[i] for i in indices]
        self.has_masks = dataset.has_masks

    def __len__(self) -> int:
        return len(self.indices)


LAYOUTS: Registry[type[SplitDataset]] = Registry("dataset layout",  # the modules that register the layouts
                                                providers=("patchcore_lib.data.mvtec", "patchcore_lib.data.folder"))
AUTO = "auto"


def _accepts(cls: type[SplitDataset], root: str | Path, category: str) -> bool:
    """Whether layout ``cls`` has a ``matches`` that accepts ``root/category``."""
    matches = getattr(cls, "matches", None)
    return bool(matches is not None and matches(root, category))


def resolve_layout(root: str | Path, category: str, layout: str = AUTO) -> str:
    """``layout`` itself, or for ``"auto"`` the one registered layout whose ``matches`` accepts the folder;
    a DatasetError when none or several do."""
    if layout != AUTO:
        LAYOUTS.get(layout)
        return layout
    found = [name for name, cls in LAYOUTS.items() if _accepts(cls, root, category)]
    if len(found) == 1:
        return found[0]
    folder = Path(root) / category
    if not found:
        for _, cls in LAYOUTS.items():  # the layouts' own checks name what is missing (data root, category)
            check = getattr(cls, "check", None)
            if check is not None:
                check(root, category)
        raise DatasetError(f"{folder}: no known dataset layout ({', '.join(LAYOUTS.names())}); "
                           "a category needs at least a train/ folder of normal images")
    raise DatasetError(f"{folder} matches several dataset layouts ({', '.join(found)}); choose one with --layout")


def open_split(root: str | Path, category: str, split: str, resize: int = DEFAULT_RESIZE,
               imagesize: int = DEFAULT_IMAGESIZE,
               layout: str = AUTO, mask_convention: str = DEFAULT_MASK_CONVENTION, shots: int | None = None,
               shots_seed: int = 0, crop: str = DEFAULT_CROP) -> SplitDataset:
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
    return FewShots(dataset, select_shots(len(dataset), shots, shots_seed, f"{root}/{category}/{split}"))


def select_shots(count: int, shots: int, seed: int, where: str = "the split") -> list[int]:
    """``shots`` distinct indices of ``count`` images, drawn uniformly by ``seed`` (same seed, same images),
    in ascending order. ConfigError when ``shots`` is not in [1, count]."""
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= count:
        raise ConfigError(f"train_shots must be an integer in [1, {count}] ({where} has {count} images), "
                          f"got {shots!r}")
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(count, generator=generator)[:shots].tolist())
