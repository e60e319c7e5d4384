"""The folder layout: any category of normal training images, with or without masks.

Layout::

    <root>/<category>/train/**                     normal images (searched recursively)
    <root>/<category>/test/<label>/**              ``good`` = normal, any other label = defect
    <root>/<category>/ground_truth/<label>/<stem>_mask.*   optional

Defect images need no mask. When any defect image has none, the dataset's ``has_masks`` is False: image
metrics are computed and pixel metrics are reported as unavailable (NaN with a note).
"""
from __future__ import annotations

from pathlib import Path

from patchcore_lib.data.download import missing_dataset_message
from patchcore_lib.data.images import list_images_recursive
from patchcore_lib.data.layouts import LAYOUTS
from patchcore_lib.data.mvtec import GOOD, MVTecDataset, Sample, check_category_name, find_mask, is_hidden_or_system
from patchcore_lib.data.preprocessing import (DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_MASK_CONVENTION, DEFAULT_RESIZE,
                                              IMAGE_EXTENSIONS, Preprocess)
from patchcore_lib.errors import ConfigError, DatasetError


def check_folder_category(root: str | Path, category: str) -> Path:
    """``root/category`` if it has a ``train`` folder; a DatasetError saying where we looked otherwise."""
    check_category_name(category)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist. " + missing_dataset_message(root, category))
    folder = root / category
    if not (folder / "train").is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
        raise DatasetError(f"category '{category}' not found: {folder / 'train'} does not exist "
                           f"(categories found under {root}: {', '.join(found) or 'none'})")
    return folder


def find_folder_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """Samples of ``split`` ('train' or 'test') in the folder layout, in a deterministic order."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    folder = check_folder_category(root, category)
    if split == "train":
        images = list_images_recursive(folder / "train")
        if not images:
            raise DatasetError(f"{folder / 'train'} contains no images: PatchCore needs normal training images "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        return [Sample(p, 0, GOOD, None) for p in images]
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir} does not exist: a category needs a test folder")
    samples = []
    for label_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not is_hidden_or_system(p)):
        for image in list_images_recursive(label_dir):
            if label_dir.name == GOOD:
                samples.append(Sample(image, 0, GOOD, None))
            else:
                mask = find_mask(folder / "ground_truth" / label_dir.name, image.stem)
                samples.append(Sample(image, 1, label_dir.name, mask))
    if not samples:
        raise DatasetError(f"{test_dir} contains no test images (expected test/{GOOD}/ and test/<defect>/ folders)")
    return samples


@LAYOUTS.register("folder")
class FolderDataset(MVTecDataset):
    """One category and split of the folder layout; items as :class:`MVTecDataset`'s (zero masks where none)."""

    check = staticmethod(lambda root, category: check_folder_category(root, category))

    @staticmethod
    def matches(root: str | Path, category: str) -> bool:
        """A ``train`` folder, and not the MVTec layout (which the MVTec reader handles)."""
        return (Path(root) / category / "train").is_dir() and not MVTecDataset.matches(root, category)

    def __init__(self, root: str | Path, category: str, split: str = "train", resize: int = DEFAULT_RESIZE,
                 imagesize: int = DEFAULT_IMAGESIZE, mask_convention: str = DEFAULT_MASK_CONVENTION,
                 crop: str = DEFAULT_CROP) -> None:
        self.root = Path(root)
        self.category = category
        self.split = split
        self.preprocess = Preprocess(resize, imagesize, mask_convention, crop)
        self.samples = find_folder_samples(self.root, category, split)
        defects = [s for s in self.samples if s.label == 1]
        self.missing_masks = sum(s.mask_path is None for s in defects)
        self.has_masks = bool(defects) and self.missing_masks == 0
