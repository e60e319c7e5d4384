"""Deterministic synthetic images, defects and masks (the drawing half of ``synthetic.py``; the scenes and
defects themselves are drawn by ``synthetic_drawing.py``).

The generator needs no download and is meant for tests, notebooks and smoke runs::

    <root>/<category>/train/good/000.png            normal RGB images
    <root>/<category>/test/good/000.png             normal RGB images
    <root>/<category>/test/<defect>/000.png         defective RGB images
    <root>/<category>/ground_truth/<defect>/000_mask.png   8-bit 'L' masks, values 0/255
    <root>/<category>/.synthetic.json               marker with the generation arguments

Two kinds of normal images exist:

* ``"texture"``: a fabric/carpet-like weave (oriented sinusoid gratings plus smoothed noise), with
  a per-image random phase, offset and brightness jitter;
* ``"object"``: a bottle seen from above (a shaded disc with a dark rim and a dark opening) centred
  on a plain background, with jitter in position, size and illumination.

Each defect mask is *exactly* the set of pixels whose value differs from the clean image of the same
index (see :func:`synthetic_sample`, which returns the clean image, the defective image and the mask).

Every image is drawn from a numpy ``Generator`` seeded from ``(seed, kind, split, defect, index)``
and saved as PNG without timestamps, so the same arguments give byte-identical files.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from patchcore_lib.data.synthetic_drawing import _DEFECTS, _KIND_CODES, _RENDERERS, _grid
from patchcore_lib.errors import ConfigError

SYNTHETIC_KINDS = ("texture", "object")

#: Every defect type the generator can draw (for both kinds).
DEFECT_TYPES = ("scratch", "hole", "spot", "color", "crack", "missing")

#: Defect types used when ``defect_types`` is not given.
DEFAULT_DEFECTS = {
    "texture": ("scratch", "hole", "color", "crack"),
    "object": ("scratch", "spot", "color", "missing"),
}

MARKER_NAME = ".synthetic.json"

#: Bumped whenever the images drawn for given arguments change; part of the marker, so old caches
#: are regenerated.
GENERATOR_VERSION = 1

_SPLIT_CODES = {"train": 1, "test": 2}


# --------------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------------

def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_kind(kind: Any) -> str:
    if kind not in SYNTHETIC_KINDS:
        raise ConfigError(f"unknown synthetic kind {kind!r}; choose one of: {', '.join(SYNTHETIC_KINDS)}")
    return kind


def _check_defects(kind: str, defect_types: Sequence[str] | None) -> tuple[str, ...]:
    if defect_types is None:
        return DEFAULT_DEFECTS[kind]
    if isinstance(defect_types, str):
        defect_types = (defect_types,)
    defects = tuple(defect_types)
    for name in defects:
        if name not in DEFECT_TYPES:
            raise ConfigError(f"unknown synthetic defect type {name!r}; choose among: {', '.join(DEFECT_TYPES)}")
    if len(set(defects)) != len(defects):
        raise ConfigError(f"defect_types contains duplicates: {list(defects)}")
    return defects


def _check_category(category: Any) -> str:
    if not isinstance(category, str) or not category or category in (".", "..") \
            or category.startswith(".") or "/" in category or "\\" in category or os.sep in category:
        raise ConfigError(f"category must be a plain folder name (no path separator, not hidden), got {category!r}")
    return category


assert set(_DEFECTS) == set(DEFECT_TYPES)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def synthetic_sample(kind: str = "texture", split: str = "train", index: int = 0, defect: str | None = None,
                     image_size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic sample, exactly as :func:`make_synthetic_dataset` writes it.

    Returns ``(clean, image, mask)``: ``clean`` and ``image`` are uint8 arrays HxWx3, ``mask`` a
    bool array HxW. ``image`` is the file written for (split, defect, index) and equals ``clean``
    outside ``mask``; inside ``mask`` every pixel differs from ``clean`` in at least one channel.
    For normal samples (``defect`` None or ``"good"``) ``image`` equals ``clean`` and the mask is empty.
    """
    kind = _check_kind(kind)
    if split not in _SPLIT_CODES:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(_SPLIT_CODES)}")
    if defect == "good":
        defect = None
    if defect is not None:
        if defect not in DEFECT_TYPES:
            raise ConfigError(f"unknown synthetic defect type {defect!r}; choose among: {', '.join(DEFECT_TYPES)}")
        if split != "test":
            raise ConfigError("defective samples exist only in the 'test' split")
    index = _check_int("index", index, 0)
    size = _check_int("image_size", image_size, 32)
    seed = _check_int("seed", seed, 0)

    defect_code = 0 if defect is None else DEFECT_TYPES.index(defect) + 1
    ss = np.random.SeedSequence([seed, _KIND_CODES[kind], _SPLIT_CODES[split], defect_code, index])
    scene_ss, defect_ss = ss.spawn(2)
    scene = _RENDERERS[kind](size, seed, np.random.default_rng(scene_ss))
    clean = _to_uint8(scene["image"])
    if defect is None:
        return clean, clean.copy(), np.zeros((size, size), dtype=bool)

    rng = np.random.default_rng(defect_ss)
    yy, xx = _grid(size)
    altered, region = _DEFECTS[defect](scene["image"], scene, size, rng, yy, xx)
    if scene["footprint"] is not None:  # object kinds: defects lie on the object only
        region = region & scene["footprint"]
    if not region.any():  # cannot happen with the sizes above; keep the mask non-empty regardless
        region = np.zeros((size, size), dtype=bool)
        region[size // 2, size // 2] = True
    altered_u8 = _to_uint8(np.broadcast_to(altered, scene["image"].shape))
    image = np.where(region[..., None], altered_u8, clean)
    # make every region pixel differ from the clean one, so that mask == changed pixels exactly
    same = region & np.all(image == clean, axis=2)
    if same.any():
        px = clean[same].astype(np.int16)
        px = np.where(px.mean(axis=1, keepdims=True) < 128, px + 40, px - 40)
        image[same] = np.clip(px, 0, 255).astype(np.uint8)
    return clean, image, region
