"""Image and mask loading and the official PatchCore preprocessing (resize, centre crop, ImageNet mean/std),
plus the batching every detector uses. Layout-independent: the layouts (``mvtec.py``, ...) build on it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from patchcore_lib.errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: image geometries: ``center`` = resize the short side, centre crop (official); ``none`` = the whole image
#: resized to a square ``imagesize`` x ``imagesize`` (aspect ratio not kept, nothing cut away)
CROP_MODES = ("center", "none")


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB (grey, 16-bit, palette and RGBA are converted); name the file on failure."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img, dtype=np.float64)
                scale = 65535.0 if array.max() > 255 else 255.0
                img = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
            if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc


def load_mask(path: Path, expected_size: tuple[int, int], image_path: Path) -> Image.Image:
    """Open a mask as a binary 'L' image (0/255); warn if it was not binary; error if its size differs."""
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read mask ({exc})") from exc
    if (array.shape[1], array.shape[0]) != expected_size:
        raise DatasetError(
            f"{path}: mask size {array.shape[1]}x{array.shape[0]} differs from its image "
            f"{image_path} ({expected_size[0]}x{expected_size[1]})"
        )
    values = np.unique(array)
    if not np.all(np.isin(values, (0, 255))):
        warnings.warn(f"{path}: mask is not binary ({len(values)} grey levels); binarised at 127", stacklevel=2)
    return Image.fromarray(((array > 127) * 255).astype(np.uint8))


class Preprocess:
    """Official geometry: resize the short side to ``resize``, centre crop ``imagesize``, ImageNet mean/std.

    ``crop="none"``: the whole image is resized to ``imagesize`` x ``imagesize`` instead (``resize`` unused),
    so nothing at the border of a non-square image is cut away."""

    def __init__(self, resize: int = 256, imagesize: int = 224, crop: str = "center") -> None:
        if not isinstance(resize, int) or not isinstance(imagesize, int) or resize < 1 or imagesize < 1:
            raise ConfigError(f"resize and imagesize must be positive integers, got resize={resize!r}, imagesize={imagesize!r}")
        if imagesize > resize:
            raise ConfigError(f"imagesize ({imagesize}) must not exceed resize ({resize}): the centre crop is taken from the resized image")
        if crop not in CROP_MODES:
            raise ConfigError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        self.resize = resize
        self.imagesize = imagesize
        self.crop = crop
        nearest = transforms.InterpolationMode.NEAREST
        if crop == "none":
            self._geometry = transforms.Resize((imagesize, imagesize))
            self._mask_geometry = transforms.Resize((imagesize, imagesize), interpolation=nearest)
        else:
            self._geometry = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(imagesize)])
            self._mask_geometry = transforms.Compose(
                [transforms.Resize(resize, interpolation=nearest), transforms.CenterCrop(imagesize)]
            )
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def image(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB -> normalised float tensor [3, imagesize, imagesize]."""
        array = np.asarray(self._geometry(img), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return (tensor - self._mean) / self._std

    def mask(self, mask: Image.Image | None) -> torch.Tensor:
        """Binary mask -> float tensor [1, imagesize, imagesize] of 0/1 (zeros when ``mask`` is None)."""
        if mask is None:
            return torch.zeros(1, self.imagesize, self.imagesize)
        array = np.asarray(self._mask_geometry(mask)) > 127
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


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int = 8, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A deterministic (unshuffled) DataLoader over ``dataset``."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
