"""Images outside any dataset layout: a folder of normal images searched recursively, the inputs of
``patchcore predict`` (files, folders, globs), and in-memory images (PIL images or arrays).

Every image goes through the same loading (:func:`load_rgb`) and preprocessing (:class:`Preprocess`) as the
dataset layouts, so a file scores the same here as in ``evaluate``.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from patchcore_lib.data.mvtec import GOOD, is_hidden_or_system, list_images
from patchcore_lib.data.preprocessing import (DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_RESIZE, IMAGE_EXTENSIONS,
                                              Preprocess, load_rgb)
from patchcore_lib.errors import DatasetError

#: what :class:`ImageList` accepts per image: a path, a PIL image, or an array [H, W], [H, W, 3|4] (uint8 or 0..1 float)
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def list_images_recursive(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` and its sub-folders (sorted, folder by folder); hidden/system files and
    folders are skipped, any other non-image file is an error naming it (the checks of the dataset layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    found = list_images(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden_or_system(p)):
        found.extend(list_images_recursive(sub))
    return found


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs``: files, folders (searched recursively) and glob patterns, in the given
    order, each file once. An input that names nothing, or a file that is not an image, is an error."""
    files: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = list_images_recursive(path)
            if not found:
                raise DatasetError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DatasetError(f"{path}: not an image file (accepted extensions: {', '.join(IMAGE_EXTENSIONS)})")
            found = [path]
        elif glob.has_magic(text):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True))
                     if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS
                     and not is_hidden_or_system(Path(p))]
            if not found:
                raise DatasetError(f"{text}: the pattern matches no image file")
        else:
            raise DatasetError(f"{path}: no such file or folder")
        files.extend(found)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise DatasetError("no input images given")
    return unique


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise DatasetError(f"image {index}: array of shape {array.shape} is not [H, W], [H, W, 3] or [H, W, 4]")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
            raise DatasetError(f"image {index}: arrays must be uint8 or floats in [0, 1], got {array.dtype} "
                               f"in [{array.min()}, {array.max()}]")
        array = (array * 255.0 + 0.5).astype(np.uint8)
    image = Image.fromarray(array)
    if image.mode == "RGBA":  # the same compositing as files with transparency (black background)
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


class ImageList(torch.utils.data.Dataset):
    """Images given as paths, PIL images or arrays, preprocessed as the dataset layouts.

    Items are dicts like the layouts' (``image`` [3, S, S], ``mask`` zeros [1, S, S], ``label`` from ``labels``
    or -1 when unknown, ``defect_type``, ``path``: the file path, or ``<image N>`` for in-memory images).
    """

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
        item = self.images[index]
        if isinstance(item, (str, os.PathLike)):
            return load_rgb(Path(item))
        if isinstance(item, Image.Image):
            return _array_to_pil(np.asarray(item.convert("RGBA") if item.mode in ("RGBA", "LA", "P")
                                            else item.convert("RGB")), index)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            return _array_to_pil(np.asarray(item), index)
        raise DatasetError(f"image {index}: expected a path, PIL image or array, got {type(item).__name__}")

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
