"""Image files without torch: which files are images (hidden and system files skipped), the inputs of
``patchcore predict`` (files, folders searched recursively, globs), and reading images and masks as 8-bit PIL
images (EXIF orientation, 16-bit and float images, transparency) or in-memory arrays as RGB.

Everything that reads images (the dataset layouts, :class:`~patchcore_lib.data.images.ImageList`, ``patchcore
predict`` with an ONNX model, which imports no torch) reads them here, so a file gives the same pixels everywhere.
"""
from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from patchcore_lib.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def is_hidden_or_system(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (sorted); hidden/system files are skipped, other files are an error."""
    images = []
    for path in sorted(folder.iterdir()):
        if is_hidden_or_system(path) or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{path}: not an image file (accepted extensions: {', '.join(IMAGE_EXTENSIONS)}); "
                "remove it or move it out of the dataset folder"
            )
        images.append(path)
    return images


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


#: full-scale value of each integer mode that is not 8-bit: images are scaled by their storage depth, never per
#: image. 12- or 10-bit data stored in 16-bit files cannot be told from 16-bit data and is scaled by 65535 too
#: (it then looks dark, but every image of a dataset the same way).
_INTEGER_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


def _open(path: Path, what: str) -> Image.Image:
    """Open, decode and orient (EXIF) an image file; one DatasetError naming the file otherwise."""
    try:
        with Image.open(path) as img:
            img.load()
            oriented = ImageOps.exif_transpose(img)  # a copy when rotated, else the same image
            if oriented is img:
                oriented = img.copy()
            return oriented
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{path}: {what} is too large to decode safely ({exc}); "
                           "images of this project's datasets are a few megapixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc})") from exc


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """16/32-bit integer and float grey images -> 8-bit 'L', scaled by their mode's range (not per image)."""
    if img.mode in _INTEGER_FULL_SCALE:
        array = np.asarray(img, dtype=np.float64)
        scale = _INTEGER_FULL_SCALE[img.mode]
        if array.size and (array.min() < 0 or array.max() > scale):
            raise DatasetError(f"{path}: {img.mode} image has values {array.min():g}..{array.max():g}, outside "
                               f"0..{scale:g} (16-bit); convert it to 8- or 16-bit")
        return Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if array.size and not np.isfinite(array).all():
            raise DatasetError(f"{path}: floating-point image holds {int((~np.isfinite(array)).sum())} NaN or "
                               "infinite values; float images must lie in 0..1 (they are scaled by 255)")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise DatasetError(f"{path}: floating-point image has values {array.min():g}..{array.max():g}; "
                               "float images must lie in 0..1 (they are scaled by 255)")
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8))
    return img


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB, oriented by its EXIF tag; 16-bit images are scaled by 65535, float images
    (0..1) by 255; grey, palette and RGBA are converted. Name the file on failure."""
    img = _to_8bit(_open(path, "image"), path)
    try:
        if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, img)
        return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc


def array_to_rgb(array: Any, index: int) -> Image.Image:
    """An in-memory image (array [H, W], [H, W, 3|4] or [C, H, W], uint8 or floats in 0..1; anything
    ``np.asarray`` takes, a CPU tensor too) as an RGB PIL image; transparency composited on black as for files."""
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


def load_image(item: Any, index: int) -> Image.Image:
    """Image ``index`` of a list given as paths, PIL images or arrays (CPU tensors too) as RGB, before resizing."""
    if isinstance(item, (str, os.PathLike)):
        return load_rgb(Path(item))
    if isinstance(item, Image.Image):
        return array_to_rgb(np.asarray(item.convert("RGBA") if item.mode in ("RGBA", "LA", "P")
                                       else item.convert("RGB")), index)
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        return array_to_rgb(np.asarray(item), index)
    raise DatasetError(f"image {index}: expected a path, PIL image or array, got {type(item).__name__}")


#: (mask file, size, modification time) already warned about in this process
_WARNED: set[tuple[str, int, int]] = set()
#: mask folder -> the one file of it warned about as empty (a folder of empty masks warns once, not per file)
_EMPTY_IN_FOLDER: dict[str, str] = {}


def _warn_once(path: Path, message: str) -> None:
    """Warn about one mask file once per process (every opening of a split reads its masks again); a file
    that changed since is warned about again."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def _warn_empty_mask(path: Path, image_path: Path) -> None:
    """The first empty mask of a folder warns, naming it (and again if that file changes); later ones of the same
    folder are counted as defect-free without a warning each (a dataset with many empty masks prints one line)."""
    resolved = Path(path).resolve()
    first = _EMPTY_IN_FOLDER.setdefault(str(resolved.parent), str(resolved))
    if first == str(resolved):
        _warn_once(path, f"{path}: the mask of defect image {image_path} is empty (no foreground pixel); "
                   f"pixel AUROC and PRO count it as defect-free (further empty masks in {Path(path).parent} "
                   "likewise, without a warning each)")


def load_mask(path: Path, expected_size: tuple[int, int], image_path: Path) -> Image.Image:
    """Open a mask (EXIF-oriented) as a binary 'L' image (0/255). Masks whose values are {0, v} (0/1, 0/255,
    0/65535, ...) are foreground wherever non-zero; grey-level masks are binarised at 127 with a warning.
    A mask without foreground warns (its defect image then counts only for the image-level metrics)."""
    img = _to_8bit_mask(_open(path, "mask"), path)
    if img.size != tuple(expected_size):
        raise DatasetError(
            f"{path}: mask size {img.size[0]}x{img.size[1]} differs from its image {image_path} "
            f"({expected_size[0]}x{expected_size[1]}); sizes are width x height, after EXIF orientation"
        )
    array = np.asarray(img)
    values = np.unique(array)
    if len(values) == 1 or (len(values) == 2 and values[0] == 0):
        binary = array > 0  # {0}, {v}, {0, 1}, {0, 255}, {0, v}: every non-zero pixel is foreground
    elif values.max() <= 127:  # a label mask (0, 1, 2, ...): binarising at 127 would empty it
        warnings.warn(f"{path}: mask is not binary (values {', '.join(map(str, values[:6]))}"
                      f"{', ...' if len(values) > 6 else ''}); every non-zero pixel taken as defect", stacklevel=2)
        binary = array > 0
    else:
        warnings.warn(f"{path}: mask is not binary ({len(values)} grey levels); binarised at 127", stacklevel=2)
        binary = array > 127
    if not binary.any():
        _warn_empty_mask(path, image_path)
    return Image.fromarray((binary * 255).astype(np.uint8))


def _to_8bit_mask(img: Image.Image, path: Path) -> Image.Image:
    """A mask as an 'L' image without losing small values: 16-bit or float {0, 1} masks stay {0, 1}."""
    if img.mode in _INTEGER_FULL_SCALE or img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if not np.isfinite(array).all():
            raise DatasetError(f"{path}: mask has non-finite values")
        values = np.unique(array)
        if len(values) == 1 or (len(values) == 2 and values[0] == 0):
            return Image.fromarray((array > 0).astype(np.uint8) * 255)
        if values.min() >= 0 and values.max() <= 127 and np.array_equal(values, np.round(values)):
            return Image.fromarray(array.astype(np.uint8))  # small labels (0, 1, 2, ...): kept for load_mask
        return _to_8bit(img, path)
    try:
        return img.convert("L")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read mask ({exc})") from exc
