"""Reader for the MVTec AD folder layout and the official PatchCore preprocessing.

Layout::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png          (``good`` = normal test images)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a split: its path, label (0 normal, 1 anomalous), defect type and mask path."""

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None


def _is_hidden_or_system(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def _list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (sorted); hidden/system files are skipped, other files are an error."""
    images = []
    for path in sorted(folder.iterdir()):
        if _is_hidden_or_system(path) or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(
                f"{path}: not an image file (accepted extensions: {', '.join(IMAGE_EXTENSIONS)}); "
                "remove it or move it out of the dataset folder"
            )
        images.append(path)
    return images


def list_categories(root: str | Path) -> list[str]:
    """Categories under ``root``: sub-folders that contain ``train/good``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def check_category(root: str | Path, category: str) -> Path:
    """Return ``root/category`` or raise a DatasetError saying where we looked and how to get data."""
    root = Path(root)
    if not root.is_dir():
        from .download import missing_dataset_message

        raise DatasetError(f"data root {root} does not exist. " + missing_dataset_message(root, category))
    folder = root / category
    if not (folder / "train" / GOOD).is_dir():
        found = list_categories(root)
        listing = ", ".join(found) if found else "none"
        raise DatasetError(
            f"category '{category}' not found: {folder / 'train' / GOOD} does not exist "
            f"(categories found under {root}: {listing})"
        )
    return folder


def find_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """All samples of ``split`` ('train' or 'test') of a category, in a deterministic order."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    folder = check_category(root, category)
    samples: list[Sample] = []
    if split == "train":
        images = _list_images(folder / "train" / GOOD)
        if not images:
            raise DatasetError(f"{folder / 'train' / GOOD} contains no images: PatchCore needs normal training images")
        return [Sample(p, 0, GOOD, None) for p in images]
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir} does not exist: a category needs a test folder")
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not _is_hidden_or_system(p)):
        defect = defect_dir.name
        for image in _list_images(defect_dir):
            if defect == GOOD:
                samples.append(Sample(image, 0, GOOD, None))
                continue
            mask = _find_mask(folder / "ground_truth" / defect, image.stem)
            if mask is None:
                raise DatasetError(
                    f"{image}: defect image without a ground-truth mask "
                    f"(expected {folder / 'ground_truth' / defect / (image.stem + '_mask.png')})"
                )
            samples.append(Sample(image, 1, defect, mask))
    if not samples:
        raise DatasetError(f"{test_dir} contains no test images")
    return samples


def _find_mask(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}_mask{ext}", folder / f"{stem}{ext}"):
            if candidate.is_file():
                return candidate
    return None


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
    """Official geometry: resize the short side to ``resize``, centre crop ``imagesize``, ImageNet mean/std."""

    def __init__(self, resize: int = 256, imagesize: int = 224) -> None:
        if not isinstance(resize, int) or not isinstance(imagesize, int) or resize < 1 or imagesize < 1:
            raise ConfigError(f"resize and imagesize must be positive integers, got resize={resize!r}, imagesize={imagesize!r}")
        if imagesize > resize:
            raise ConfigError(f"imagesize ({imagesize}) must not exceed resize ({resize}): the centre crop is taken from the resized image")
        self.resize = resize
        self.imagesize = imagesize
        from torchvision import transforms

        self._geometry = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(imagesize)])
        self._mask_geometry = transforms.Compose(
            [transforms.Resize(resize, interpolation=transforms.InterpolationMode.NEAREST), transforms.CenterCrop(imagesize)]
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


class MVTecDataset(torch.utils.data.Dataset):
    """One category and split of an MVTec-AD-layout dataset, preprocessed as the official code.

    Items are dicts: ``image`` [3, S, S] float, ``mask`` [1, S, S] float 0/1, ``label`` int,
    ``defect_type`` str, ``path`` str (S = ``imagesize``).
    """

    def __init__(self, root: str | Path, category: str, split: str = "train", resize: int = 256, imagesize: int = 224) -> None:
        self.root = Path(root)
        self.category = category
        self.split = split
        self.preprocess = Preprocess(resize, imagesize)
        self.samples = find_samples(self.root, category, split)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        img = load_rgb(sample.path)
        mask = load_mask(sample.mask_path, img.size, sample.path) if sample.mask_path is not None else None
        return {
            "image": self.preprocess.image(img),
            "mask": self.preprocess.mask(mask),
            "label": sample.label,
            "defect_type": sample.defect_type,
            "path": str(sample.path),
        }

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        return [s.defect_type for s in self.samples]


def dataset_fingerprint(root: str | Path, category: str) -> str:
    """SHA-256 over the relative paths and sizes of every file of a category (cheap, content-free)."""
    folder = Path(root) / category
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _is_hidden_or_system(p)):
        digest.update(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


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
