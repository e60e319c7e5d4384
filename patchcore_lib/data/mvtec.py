"""The MVTec AD folder layout: categories, splits, samples, masks, and the dataset fingerprint.

Layout::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png          (``good`` = normal test images)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchcore_lib.data.download import missing_dataset_message
from patchcore_lib.data.layouts import LAYOUTS, SplitDataset
from patchcore_lib.data.image_files import (IMAGE_EXTENSIONS, SYSTEM_FILES,  # noqa: F401 (re-exported)
                                            is_hidden_or_system, list_images, load_mask, load_rgb)
from patchcore_lib.data.preprocessing import (DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_MASK_CONVENTION, DEFAULT_RESIZE,
                                              Preprocess)
from patchcore_lib.errors import ConfigError, DatasetError
from patchcore_lib.utils.fingerprint import files_under, manifest_fingerprint, tree_manifest

GOOD = "good"



@dataclass(frozen=True)
class Sample:
    """One image of a split: its path, label (0 normal, 1 anomalous), defect type and mask path."""

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None


def list_categories(root: str | Path) -> list[str]:
    """Categories under ``root``: sub-folders that contain ``train/good``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def check_category_name(category: object) -> str:
    """``category`` if it is a plain folder name (outputs are named after it); ConfigError for paths."""
    if (not isinstance(category, str) or not category.strip() or category in (".", "..")
            or any(c in category for c in "/\\\0") or Path(category).is_absolute()):
        raise ConfigError(f"category {category!r} is not a folder name: give the name of a folder of the data "
                          "root (no '/', '..' or absolute paths)")
    return category


def check_category(root: str | Path, category: str) -> Path:
    """Return ``root/category`` or raise a DatasetError saying where we looked and how to get data."""
    check_category_name(category)
    root = Path(root)
    if not root.is_dir():
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
        images = list_images(folder / "train" / GOOD)
        if not images:
            raise DatasetError(f"{folder / 'train' / GOOD} contains no images: PatchCore needs normal training images")
        return [Sample(p, 0, GOOD, None) for p in images]
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir} does not exist: a category needs a test folder")
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not is_hidden_or_system(p)):
        defect = defect_dir.name
        for image in list_images(defect_dir):
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


def find_mask(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>_mask.<ext>`` (or ``folder/<stem>.<ext>``) for any image extension; None if absent."""
    return _find_mask(folder, stem)


def _find_mask(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}_mask{ext}", folder / f"{stem}{ext}"):
            if candidate.is_file():
                return candidate
    return None



@LAYOUTS.register("mvtec")
class MVTecDataset(SplitDataset):
    """One category and split of an MVTec-AD-layout dataset, preprocessed as the official code.

    Items are dicts: ``image`` [3, S, S] float, ``mask`` [1, S, S] float 0/1, ``label`` int,
    ``defect_type`` str, ``path`` str (S = ``imagesize``; masks resized by ``mask_convention``).
    """

    #: every defect image has a ground-truth mask in this layout (pixel metrics are defined)
    has_masks = True
    check = staticmethod(lambda root, category: check_category(root, category))

    @staticmethod
    def matches(root: str | Path, category: str) -> bool:
        """Whether ``root/category`` looks like this layout (``train/good`` and ``ground_truth``)."""
        folder = Path(root) / category
        return (folder / "train" / GOOD).is_dir() and (folder / "ground_truth").is_dir()

    def __init__(self, root: str | Path, category: str, split: str = "train", resize: int = DEFAULT_RESIZE,
                 imagesize: int = DEFAULT_IMAGESIZE, mask_convention: str = DEFAULT_MASK_CONVENTION,
                 crop: str = DEFAULT_CROP) -> None:
        self.root = Path(root)
        self.category = category
        self.split = split
        self.preprocess = Preprocess(resize, imagesize, mask_convention, crop)
        self.samples = find_samples(self.root, category, split)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        img = load_rgb(sample.path)
        mask = load_mask(sample.mask_path, img.size, sample.path) if sample.mask_path is not None else None
        return {
            "image": self.preprocess.image(img, str(sample.path)),
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


def dataset_manifest(root: str | Path, category: str) -> dict[str, list]:
    """``{path relative to the category folder: [size, sha256]}`` of every file of a category (hidden and
    system files left out; folders reached through symbolic links followed)."""
    folder = Path(root) / category
    files = [p for p in files_under(folder) if not any(is_hidden_or_system(Path(part))
                                                       for part in p.relative_to(folder).parts)]
    return tree_manifest(folder, files)


def dataset_fingerprint(root: str | Path, category: str) -> str:
    """SHA-256 over the relative paths, sizes and content hashes of every file of a category
    (:func:`dataset_manifest`). File hashes are cached (see :mod:`patchcore_lib.utils.fingerprint`): a second
    call re-reads only changed files."""
    return manifest_fingerprint(dataset_manifest(root, category))
