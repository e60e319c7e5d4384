"""Images outside any dataset layout: a folder of normal images searched recursively, labelled image folders, and
images given as paths, PIL images or arrays (:class:`ImageList`). The file listing and the inputs of ``patchcore
predict`` (files, folders, globs) are in :mod:`.image_files` (re-exported here).

Every image goes through the same loading (:func:`~.image_files.load_rgb`) and preprocessing
(:class:`Preprocess`) as the dataset layouts, so a file scores the same here as in ``evaluate``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from patchcore_lib.data.image_files import (IMAGE_EXTENSIONS, expand_inputs,  # noqa: F401 (re-exported)
                                            is_hidden_or_system, list_images_recursive, load_image)
from patchcore_lib.data.mvtec import GOOD
from patchcore_lib.data.preprocessing import DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_RESIZE, Preprocess
from patchcore_lib.errors import DatasetError

#: what :class:`ImageList` accepts per image: a path, a PIL image, or an array [H, W], [H, W, 3|4] (uint8 or 0..1 float)
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


class ImageList(torch.utils.data.Dataset):
    """Images given as paths, PIL images or arrays, preprocessed as the dataset layouts.

    Items are dicts like the layouts' (``image`` [3, S, S], ``mask`` zeros [1, S, S], ``label`` from ``labels``
    or -1 when unknown, ``defect_type``, ``path``: the file path, or ``<image N>`` for in-memory images).
    """

    threaded_loading = True  # make_loader may read items in a background thread (data/prefetch.py)

    def __init__(self, images: Sequence[ImageInput], resize: int = DEFAULT_RESIZE, imagesize: int = DEFAULT_IMAGESIZE,
                 labels: Sequence[int] | None = None, defect_types: Sequence[str] | None = None,
                 crop: str = DEFAULT_CROP) -> None:
        self.images = list(images)
        self.preprocess = Preprocess(resize, imagesize, crop=crop)
        self.labels_given = None if labels is None else [int(v) for v in labels]
        self.defect_types_given = None if defect_types is None else list(defect_types)
        self.names = [os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<image {i}>"
                      for i, item in enumerate(self.images)]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        """The RGB PIL image ``index`` (before resizing)."""
        return load_image(self.images[index], index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = -1 if self.labels_given is None else self.labels_given[index]
        defect = "" if self.defect_types_given is None else self.defect_types_given[index]
        return {"image": self.preprocess.image(self.load(index), self.names[index]),
                "mask": self.preprocess.mask(None),
                "label": label, "defect_type": defect, "path": self.names[index]}


def normal_image_folder(folder: str | Path, resize: int = DEFAULT_RESIZE, imagesize: int = DEFAULT_IMAGESIZE,
                        crop: str = DEFAULT_CROP) -> ImageList:
    """Every image under ``folder`` (recursively) as a training set of normal images."""
    images = list_images_recursive(folder)
    if not images:
        raise DatasetError(f"{folder} contains no images: PatchCore needs normal training images "
                           f"({', '.join(IMAGE_EXTENSIONS)})")
    return ImageList(images, resize, imagesize, labels=[0] * len(images), defect_types=[GOOD] * len(images),
                     crop=crop)


def labelled_image_folder(folder: str | Path, resize: int = DEFAULT_RESIZE, imagesize: int = DEFAULT_IMAGESIZE,
                          crop: str = DEFAULT_CROP) -> ImageList:
    """Labelled images: ``folder/<label>/...`` (or ``folder/test/<label>/...``, a category in MVTec layout)
    with ``good`` for normal images and any other label for defects; needs both kinds."""
    folder = Path(folder)
    if (folder / "test").is_dir():
        folder = folder / "test"
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    paths, labels, defects = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden_or_system(p)):
        found = list_images_recursive(sub)
        paths += found
        labels += [0 if sub.name == GOOD else 1] * len(found)
        defects += [sub.name] * len(found)
    if 0 not in labels or 1 not in labels:
        raise DatasetError(f"{folder} needs a '{GOOD}' folder of normal images and at least one folder of defect "
                           f"images (found: {', '.join(sorted(set(defects))) or 'none'})")
    return ImageList(paths, resize, imagesize, labels=labels, defect_types=defects, crop=crop)
