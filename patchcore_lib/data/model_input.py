"""The model's input in numpy and PIL alone (no torch): the geometry of
:class:`~patchcore_lib.data.preprocessing.Preprocess` (the short side resized to ``resize`` and a centre crop of
``imagesize``, or with ``crop="none"`` the whole image resized to ``imagesize`` x ``imagesize``) and the ImageNet
normalisation.

The PIL calls are the ones torchvision's ``Resize`` and ``CenterCrop`` make on a PIL image (``Image.resize`` with
bilinear filtering, skipped when the size is unchanged; ``Image.crop`` at the rounded centre), and the arithmetic
is the same float32 arithmetic, so :func:`model_input` equals ``Preprocess.image`` bit for bit
(tests/test_onnx_predict_startup.py). ``patchcore predict`` with an ONNX model prepares its images here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from patchcore_lib.errors import ConfigError, DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: image geometries: ``center`` = resize the short side, centre crop (official); ``none`` = the whole image
#: resized to a square ``imagesize`` x ``imagesize`` (aspect ratio not kept, nothing cut away)
CROP_MODES = ("center", "none")
#: the largest image the short-side resize may produce (an extreme aspect ratio would allocate gigabytes)
MAX_RESIZED_PIXELS = 50_000_000


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``resize`` (torchvision's ``Resize(int)`` on PIL images)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_origin(width: int, height: int, imagesize: int) -> tuple[int, int]:
    """(left, top) of the centre ``imagesize`` square of a ``width`` x ``height`` image (torchvision's
    ``CenterCrop``)."""
    return int(round((width - imagesize) / 2.0)), int(round((height - imagesize) / 2.0))


def check_resizable(width: int, height: int, resize: int, crop: str, name: str = "image") -> None:
    """DatasetError naming ``name`` when resizing the short side to ``resize`` would give an unreasonably large
    image (an extreme aspect ratio); ``crop="none"`` resizes to a square and is always fine."""
    if crop == "none":
        return
    short, long = min(width, height), max(width, height)
    if short < 1 or resize * resize * (long / short) > MAX_RESIZED_PIXELS:
        raise DatasetError(f"{name}: a {width}x{height} image; resizing its short side to {resize} px "
                           f"would give {resize * long // max(short, 1)} x {resize} pixels (aspect "
                           f"ratio {long / max(short, 1):.0f}:1); crop it first, or use --crop none")


def model_geometry(img: Image.Image, resize: int, imagesize: int, crop: str = "center") -> Image.Image:
    """The ``imagesize`` x ``imagesize`` PIL image the model sees of ``img`` (resize, then centre crop)."""
    width, height = img.size
    if crop == "none":
        size = (imagesize, imagesize)
    else:
        size = resized_size(width, height, resize)
    if size != (width, height):
        img = img.resize(size, Image.Resampling.BILINEAR)
    if crop == "none":
        return img
    left, top = crop_origin(size[0], size[1], imagesize)
    return img.crop((left, top, left + imagesize, top + imagesize))


def model_input(img: Image.Image, resize: int, imagesize: int, crop: str = "center", name: str = "image",
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """An RGB PIL image -> the normalised float32 array [3, imagesize, imagesize] the model scores
    (``Preprocess.image`` without torch); DatasetError naming ``name`` for an extreme aspect ratio."""
    if crop not in CROP_MODES:
        raise ConfigError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    check_resizable(*img.size, resize, crop, name)
    array = np.asarray(model_geometry(img, resize, imagesize, crop), dtype=np.float32) / np.float32(255.0)
    centre = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    scale = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((array.transpose(2, 0, 1) - centre) / scale)
