"""Deterministic synthetic anomaly-detection dataset in the MVTec AD folder layout (written to disk).

The images come from :mod:`patchcore_lib.data.synthetic_images` (see there for what is drawn)::

    <root>/<category>/train/good/000.png            normal RGB images
    <root>/<category>/test/good/000.png             normal RGB images
    <root>/<category>/test/<defect>/000.png         defective RGB images
    <root>/<category>/ground_truth/<defect>/000_mask.png   8-bit 'L' masks, values 0/255
    <root>/<category>/.synthetic.json               marker with the generation arguments
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from patchcore_lib.data.synthetic_images import (DEFAULT_DEFECTS, DEFECT_TYPES, GENERATOR_VERSION, MARKER_NAME,
                                                 SYNTHETIC_KINDS, _check_category, _check_defects, _check_int,
                                                 _check_kind, synthetic_sample)
from patchcore_lib.errors import DatasetError
from patchcore_lib.utils.files import apply_umask

__all__ = [
    "SYNTHETIC_KINDS",
    "DEFECT_TYPES",
    "DEFAULT_DEFECTS",
    "MARKER_NAME",
    "GENERATOR_VERSION",
    "make_synthetic_dataset",
    "synthetic_sample",
    "default_synthetic_root",
    "default_category",
    "ensure_default_dataset",
]


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _expected_files(args: dict[str, Any]) -> list[str]:
    files = [f"train/good/{i:03d}.png" for i in range(args["n_train"])]
    files += [f"test/good/{i:03d}.png" for i in range(args["n_test_good"])]
    for defect in args["defect_types"]:
        for i in range(args["n_test_per_defect"]):
            files.append(f"test/{defect}/{i:03d}.png")
            files.append(f"ground_truth/{defect}/{i:03d}_mask.png")
    return files


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(folder: Path, args: dict[str, Any]) -> bool:
    """True when ``folder`` holds a finished generation for exactly ``args``."""
    if _read_marker(folder) != args:
        return False
    return all((folder / rel).is_file() for rel in _expected_files(args))


def _generate_into(folder: Path, args: dict[str, Any]) -> None:
    kind, size, seed = args["kind"], args["image_size"], args["seed"]
    for split, count in (("train", args["n_train"]), ("test", args["n_test_good"])):
        (folder / split / "good").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _, image, _ = synthetic_sample(kind, split, i, None, size, seed)
            _write(folder / split / "good" / f"{i:03d}.png", _png_bytes(image, "RGB"))
    for defect in args["defect_types"]:
        for i in range(args["n_test_per_defect"]):
            _, image, mask = synthetic_sample(kind, "test", i, defect, size, seed)
            _write(folder / "test" / defect / f"{i:03d}.png", _png_bytes(image, "RGB"))
            _write(folder / "ground_truth" / defect / f"{i:03d}_mask.png",
                   _png_bytes(mask.astype(np.uint8) * 255, "L"))
    # the marker is written last: a folder with a valid marker is a complete dataset
    _write(folder / MARKER_NAME, (json.dumps(args, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def make_synthetic_dataset(root: str | os.PathLike, category: str = "synthetic_texture", kind: str = "texture",
                           n_train: int = 40, n_test_good: int = 10, n_test_per_defect: int = 6,
                           image_size: int = 256, seed: int = 0, defect_types: Sequence[str] | None = None,
                           overwrite: bool = False) -> Path:
    """Generate (or reuse) a synthetic dataset in MVTec AD layout and return ``root / category``.

    An existing ``root/category`` generated with the same arguments (its ``.synthetic.json`` marker
    matches and all files are present) is reused as is. One generated with other arguments is
    replaced. A folder without a marker (e.g. real data) is never replaced unless ``overwrite=True``.
    Generation happens in a temporary folder next to the target, renamed into place at the end, so an
    interrupted run never leaves a folder that looks complete.

    Raises ConfigError on invalid arguments, DatasetError when a non-synthetic folder is in the way
    or the folder cannot be written (the message names the folder).
    """
    kind = _check_kind(kind)
    category = _check_category(category)
    args = {
        "generator_version": GENERATOR_VERSION,
        "kind": kind,
        "n_train": _check_int("n_train", n_train, 1),
        "n_test_good": _check_int("n_test_good", n_test_good, 0),
        "n_test_per_defect": _check_int("n_test_per_defect", n_test_per_defect, 0),
        "image_size": _check_int("image_size", image_size, 32),
        "seed": _check_int("seed", seed, 0),
        "defect_types": list(_check_defects(kind, defect_types)),
    }
    root = Path(root).expanduser()
    target = root / category

    if target.exists() and not overwrite:
        if _is_complete(target, args):
            return target
        if _read_marker(target) is None:
            raise DatasetError(
                f"{target} exists but is not a synthetic dataset generated by patchcore_lib (no {MARKER_NAME}); "
                f"choose another root/category or pass overwrite=True to replace it")

    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{category}.tmp-", dir=root))
    except OSError as exc:
        raise DatasetError(f"cannot create the synthetic dataset folder under {root}: {exc.strerror or exc}") from exc
    try:
        _generate_into(tmp, args)
        apply_umask(tmp)  # mkdtemp made it 0700
        old = None
        if target.exists():
            if not overwrite and _is_complete(target, args):  # made concurrently by another process
                return target
            old = Path(tempfile.mkdtemp(prefix=f".{category}.old-", dir=root))
            os.replace(target, old / category)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process created the target in between: keep theirs if it is what we want
            if _is_complete(target, args):
                return target
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise DatasetError(f"cannot write the synthetic dataset {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# default dataset
# --------------------------------------------------------------------------------------------

def default_synthetic_root() -> Path:
    """Cache folder for generated datasets.

    ``$PATCHCORE_CACHE/synthetic`` when that variable is set, otherwise
    ``$XDG_CACHE_HOME/patchcore_lib/synthetic`` (``~/.cache/patchcore_lib/synthetic``).
    """
    env = os.environ.get("PATCHCORE_CACHE")
    if env:
        return Path(env).expanduser() / "synthetic"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "patchcore_lib" / "synthetic"


def default_category(kind: str = "texture") -> str:
    """Category name of the default dataset of ``kind``: ``synthetic_texture`` or ``synthetic_object``."""
    return f"synthetic_{_check_kind(kind)}"


def ensure_default_dataset(root: str | os.PathLike | None = None, kind: str = "texture",
                           **kwargs: Any) -> tuple[Path, str]:
    """Generate the default synthetic dataset if missing; return ``(data_root, category)``.

    ``root`` defaults to :func:`default_synthetic_root`; the category is ``synthetic_<kind>``.
    Extra keyword arguments (``n_train``, ``seed``, ...) are passed to :func:`make_synthetic_dataset`.
    """
    data_root = Path(root).expanduser() if root is not None else default_synthetic_root()
    category = kwargs.pop("category", None) or default_category(kind)
    make_synthetic_dataset(data_root, category=category, kind=kind, **kwargs)
    return data_root, category
