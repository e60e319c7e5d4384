"""Image and mask loading and the official PatchCore preprocessing (resize, centre crop, ImageNet mean/std),
plus the batching every detector uses. Layout-independent: the layouts (``mvtec.py``, ...) build on it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import transforms

from patchcore_lib.errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: How ground-truth masks are brought to the crop: ``nearest`` (nearest-neighbour resize of the 0/255 mask,
#: threshold 127: the MVTec and anomalib convention) or ``official`` (the official PatchCore code: bilinear
#: resize, centre crop, then an integer cast of the [0, 1] mask, so only fully covered pixels are anomalous).
MASK_CONVENTIONS = ("nearest", "official")
#: image geometries: ``center`` = resize the short side, centre crop (official); ``none`` = the whole image
#: resized to a square ``imagesize`` x ``imagesize`` (aspect ratio not kept, nothing cut away)
CROP_MODES = ("center", "none")
#: the defaults of every dataset, image list, preprocessing and detector configuration: the official geometry
#: (short side resized to 256 px, 224 px centre crop) and the MVTec mask convention
DEFAULT_RESIZE = 256
DEFAULT_IMAGESIZE = 224
DEFAULT_CROP = "center"
DEFAULT_MASK_CONVENTION = "nearest"
#: images per batch of a loader (and per forward pass of a detector)
DEFAULT_BATCH_SIZE = 8


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


#: (mask file, size, modification time) already warned about in this process
_WARNED: set[tuple[str, int, int]] = set()


def _warn_once(path: Path, message: str) -> None:
    """Warn about one mask file once per process (every opening of a split reads its masks again); a file
    that changed since is warned about again."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


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
        _warn_once(path, f"{path}: the mask of defect image {image_path} is empty (no foreground pixel); "
                   "pixel AUROC and PRO count it as defect-free")
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


#: the largest image the short-side resize may produce (an extreme aspect ratio would allocate gigabytes)
MAX_RESIZED_PIXELS = 50_000_000


class Preprocess:
    """Official geometry: resize the short side to ``resize``, centre crop ``imagesize``, ImageNet mean/std.
    Masks follow ``mask_convention`` (:data:`MASK_CONVENTIONS`).

    ``crop="none"``: the whole image is resized to ``imagesize`` x ``imagesize`` instead (``resize`` unused),
    so nothing at the border of a non-square image is cut away."""

    def __init__(self, resize: int = DEFAULT_RESIZE, imagesize: int = DEFAULT_IMAGESIZE,
                 mask_convention: str = DEFAULT_MASK_CONVENTION, crop: str = DEFAULT_CROP) -> None:
        if not isinstance(resize, int) or not isinstance(imagesize, int) or resize < 1 or imagesize < 1:
            raise ConfigError(f"resize and imagesize must be positive integers, got resize={resize!r}, imagesize={imagesize!r}")
        if imagesize > resize:
            raise ConfigError(f"imagesize ({imagesize}) must not exceed resize ({resize}): the centre crop is taken from the resized image")
        if mask_convention not in MASK_CONVENTIONS:
            raise ConfigError(f"unknown mask_convention {mask_convention!r}; valid: {', '.join(MASK_CONVENTIONS)}")
        if crop not in CROP_MODES:
            raise ConfigError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        self.resize = resize
        self.imagesize = imagesize
        self.mask_convention = mask_convention
        self.crop = crop
        interpolation = transforms.InterpolationMode.NEAREST if mask_convention == "nearest" \
            else transforms.InterpolationMode.BILINEAR
        if crop == "none":
            self._geometry = transforms.Resize((imagesize, imagesize))
            self._mask_geometry = transforms.Resize((imagesize, imagesize), interpolation=interpolation)
        else:
            self._geometry = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(imagesize)])
            self._mask_geometry = transforms.Compose(
                [transforms.Resize(resize, interpolation=interpolation), transforms.CenterCrop(imagesize)]
            )
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def image(self, img: Image.Image, name: str = "image") -> torch.Tensor:
        """PIL RGB -> normalised float tensor [3, imagesize, imagesize]; DatasetError naming ``name`` when the
        resized image would be unreasonably large (an extreme aspect ratio)."""
        if self.crop != "none":
            width, height = img.size
            short, long = min(width, height), max(width, height)
            if short < 1 or self.resize * self.resize * (long / short) > MAX_RESIZED_PIXELS:
                raise DatasetError(f"{name}: a {width}x{height} image; resizing its short side to {self.resize} px "
                                   f"would give {self.resize * long // max(short, 1)} x {self.resize} pixels (aspect "
                                   f"ratio {long / max(short, 1):.0f}:1); crop it first, or use --crop none")
        array = np.asarray(self._geometry(img), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return (tensor - self._mean) / self._std

    def mask(self, mask: Image.Image | None) -> torch.Tensor:
        """Binary 0/255 mask -> float tensor [1, imagesize, imagesize] of 0/1 (zeros when ``mask`` is None).

        ``nearest``: nearest-neighbour resize, > 127. ``official``: bilinear resize (8-bit, as PIL does for the
        official code), then ``ToTensor`` + ``astype(int)`` there, i.e. anomalous only where the value is 255.
        """
        if mask is None:
            return torch.zeros(1, self.imagesize, self.imagesize)
        resized = np.asarray(self._mask_geometry(mask))
        array = resized > 127 if self.mask_convention == "nearest" else resized == 255
        return torch.from_numpy(array.astype(np.float32))[None]

    def denormalise(self, image: torch.Tensor) -> np.ndarray:
        """Normalised [3, H, W] tensor -> displayable uint8 array [H, W, 3]."""
        array = (image.detach().cpu() * self._std + self._mean).clamp(0, 1).permute(1, 2, 0).numpy()
        return (array * 255 + 0.5).astype(np.uint8)



def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings and ints as lists/tensors."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "mask": torch.stack([b["mask"] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch]),
        "defect_type": [b["defect_type"] for b in batch],
        "path": [b["path"] for b in batch],
    }


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int = DEFAULT_BATCH_SIZE,
                num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A deterministic (unshuffled) DataLoader over ``dataset``."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
