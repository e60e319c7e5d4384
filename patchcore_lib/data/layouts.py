"""Dataset layouts behind one entry point, :func:`open_split`.

A layout is a ``torch.utils.data.Dataset`` class registered with ``@LAYOUTS.register(name)`` whose
constructor is ``(root, category, split, resize, imagesize, crop="center")`` and whose items are dicts with ``image``
[3, S, S], ``mask`` [1, S, S], ``label``, ``defect_type`` and ``path``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from patchcore_lib.utils.registry import Registry

LAYOUTS: Registry[type[torch.utils.data.Dataset]] = Registry("dataset layout")


def open_split(root: str | Path, category: str, split: str, resize: int = 256, imagesize: int = 224,
               layout: str = "mvtec", crop: str = "center") -> torch.utils.data.Dataset:
    """The ``split`` ('train' or 'test') of ``category`` under ``root``, preprocessed to ``imagesize`` px
    (``crop``: see :class:`~patchcore_lib.data.preprocessing.Preprocess`)."""
    return LAYOUTS.get(layout)(root, category, split, resize, imagesize, crop=crop)
