"""The official PatchCore preprocessing (resize, centre crop, ImageNet mean/std) as torch tensors, plus the
batching every detector uses. Layout-independent: the layouts (``mvtec.py``, ...) build on it. Image and mask
files are read by :mod:`.image_files` (``load_rgb``, ``load_mask``, re-exported here); :mod:`.model_input` is the
same image preprocessing without torch."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from patchcore_lib.data.image_files import IMAGE_EXTENSIONS, load_mask, load_rgb  # noqa: F401 (re-exported)
from patchcore_lib.data.model_input import (CROP_MODES, IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401 (re-exported)
                                            MAX_RESIZED_PIXELS, check_resizable)
from patchcore_lib.data.prefetch import PrefetchingLoader
from patchcore_lib.errors import ConfigError

#: How ground-truth masks are brought to the crop: ``nearest`` (nearest-neighbour resize of the 0/255 mask,
#: threshold 127: the MVTec and anomalib convention) or ``official`` (the official PatchCore code: bilinear
#: resize, centre crop, then an integer cast of the [0, 1] mask, so only fully covered pixels are anomalous).
MASK_CONVENTIONS = ("nearest", "official")
#: the defaults of every dataset, image list, preprocessing and detector configuration: the official geometry
#: (short side resized to 256 px, 224 px centre crop) and the MVTec mask convention
DEFAULT_RESIZE = 256
DEFAULT_IMAGESIZE = 224
DEFAULT_CROP = "center"
DEFAULT_MASK_CONVENTION = "nearest"
#: images per batch of a loader (and per forward pass of a detector)
DEFAULT_BATCH_SIZE = 8


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
        self._mean_array, self._std_array = self._mean.numpy(), self._std.numpy()

    def image(self, img: Image.Image, name: str = "image") -> torch.Tensor:
        """PIL RGB -> normalised float tensor [3, imagesize, imagesize]; DatasetError naming ``name`` when the
        resized image would be unreasonably large (an extreme aspect ratio)."""
        check_resizable(*img.size, self.resize, self.crop, name)
        # [3, S, S] float32; / 255, - mean, / std as one float32 operation each, the values torch's ops give (and
        # model_input's), in place in numpy: no intra-op thread pool for 150k elements (data/prefetch.py reads
        # images beside the forward pass), no temporaries
        array = np.ascontiguousarray(np.asarray(self._geometry(img)).transpose(2, 0, 1), dtype=np.float32)
        array /= 255.0
        array -= self._mean_array
        array /= self._std_array
        return torch.from_numpy(array)

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
                num_workers: int = 0) -> torch.utils.data.DataLoader | PrefetchingLoader:
    """A deterministic (unshuffled) loader over ``dataset``: the library's datasets (``threaded_loading``) are read
    ahead in a background thread while the caller runs the current batch (:mod:`.prefetch`: the same batches),
    others (and ``num_workers`` > 0) by a DataLoader."""
    if num_workers == 0 and getattr(dataset, "threaded_loading", False):
        return PrefetchingLoader(dataset, batch_size, collate)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
