"""The data behind the study's results, described once: source, stored image size and split of each category
(from ``../shared/data/README.md``), used by the data notes under the summary tables."""
from __future__ import annotations

from typing import Any

from patchcore_lib.paper.reference import is_mvtec_category

#: per category: source, where it is stored, its stored image size and its split (facts of ../shared/data)
DATASETS: dict[str, dict[str, str]] = {
    "bottle": {
        "source": "MVTec AD, category `bottle` (Bergmann et al., CVPR 2019; CC BY-NC-SA 4.0)",
        "stored": "`../shared/data/mvtec_ad/bottle`",
        "image_size": "512x512 px (downscaled from 900x900, bicubic; masks nearest-neighbour)",
        "split": ("the official MVTec AD split: train/good 209; test 83 (good 20, broken_large 20, "
                  "broken_small 22, contamination 21)"),
    },
    "magnetic_tile": {
        "source": "Magnetic-tile surface defects (Huang et al., The Visual Computer 2018)",
        "stored": "`../shared/data/magnetic_tile/magnetic_tile`",
        "image_size": "grey JPG images of varying size (about 200-600 px); masks binarised at 127",
        "split": ("a deterministic split of the good images (sorted, every 5th to test/good): train/good 761; "
                  "test 583 (good 191, blowhole 115, break 85, crack 57, fray 32, uneven 103; four `uneven` "
                  "masks are empty in the source). Not the paper's MTD protocol (DifferNet: 20% of the "
                  "defect-free images held out)"),
    },
}


def data_description(category: str) -> dict[str, str]:
    """``source``, ``stored``, ``image_size`` and ``split`` of ``category`` (:data:`DATASETS`); another MVTec AD
    category: the official split at the stored resolution; an unknown one: says it is not described."""
    if category in DATASETS:
        return dict(DATASETS[category])
    if is_mvtec_category(category):
        return {"source": f"MVTec AD, category `{category}`", "stored": "the run's data root",
                "image_size": "its stored size", "split": "the official MVTec AD split"}
    return {"source": f"category `{category}` (not described in patchcore_lib.study.report.datasets)",
            "stored": "the run's data root", "image_size": "its stored size", "split": "the split stored there"}


def geometry_text(config: dict[str, Any]) -> str:
    """How a run's images were fed to the network: ``resize 256, centre crop 224 px`` or ``whole image
    resized to 224 px``."""
    if str(config.get("crop", "center")) == "none":
        return f"whole image resized to {config.get('imagesize', '?')} px"
    return f"resize {config.get('resize', '?')}, centre crop {config.get('imagesize', '?')} px"


def data_note(category: str, config: dict[str, Any] | None = None) -> str:
    """One line under a results table: the data (source, stored size, split) and the run's input geometry."""
    d = data_description(category)
    text = (f"Data ({category}): {d['source']}, stored in {d['stored']} at {d['image_size']}; split: {d['split']}.")
    if config:
        text += f" Input: {geometry_text(config)}."
    return text
