"""Where a category's data lives when no ``data_root`` is given: the one resolution used by the notebooks'
parameter check, ``patchcore evaluate`` and the study runner.

With an empty ``data_root``:

1. an empty ``category``, or one naming the embedded synthetic set (``synthetic_texture``,
   ``synthetic_object``): the synthetic set, generated offline on first use;
2. else the first of these folders that holds ``<category>/train/good``: ``$PATCHCORE_DATA_ROOT``, then the
   per-user data folder (``$XDG_DATA_HOME/patchcore_lib`` or ``~/.local/share/patchcore_lib``);
3. else, for an MVTec AD category and ``download=True``: the checksummed, resumable MVTec AD download
   (:func:`~patchcore_lib.data.download.download_mvtec`) into the first of those folders, extracting only
   that category (the archive holds all 15, about 4.9 GB; it is kept in ``<folder>/.downloads`` so that a
   later category does not download it again; ``$PATCHCORE_MVTEC_URL`` names a mirror);
4. else one :class:`~patchcore_lib.errors.DatasetError` naming the category, the folders searched and how to
   get the data. A category is never replaced by another one.

A given ``data_root`` must hold ``category`` (:func:`~patchcore_lib.data.mvtec.check_category`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from patchcore_lib.data.download import (MVTEC_CATEGORIES, MVTEC_HOMEPAGE, MVTEC_SHA256, MVTEC_URL, category_present,
                                         download_mvtec)
from patchcore_lib.data.mvtec import check_category
from patchcore_lib.data.synthetic import SYNTHETIC_KINDS, default_category, ensure_default_dataset
from patchcore_lib.errors import DatasetError

#: environment variable naming a folder that holds ``<category>/train/good`` folders
DATA_ROOT_ENV = "PATCHCORE_DATA_ROOT"
#: environment variables of an MVTec AD mirror: the archive's URL and, when it is another file, its SHA-256
URL_ENV, SHA256_ENV = "PATCHCORE_MVTEC_URL", "PATCHCORE_MVTEC_SHA256"


def user_data_dir() -> Path:
    """The per-user data folder: ``$XDG_DATA_HOME/patchcore_lib``, else ``~/.local/share/patchcore_lib``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "patchcore_lib"


def search_roots() -> list[Path]:
    """The folders searched, in order, when ``data_root`` is empty (``$PATCHCORE_DATA_ROOT`` only when set)."""
    roots = []
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(user_data_dir())
    return roots


def synthetic_kind_of(category: str) -> str | None:
    """The synthetic kind a category names (``synthetic_texture`` -> ``texture``), else None."""
    for kind in SYNTHETIC_KINDS:
        if category == default_category(kind):
            return kind
    return None


def _not_found(category: str, roots: list[Path], reason: str = "") -> DatasetError:
    searched = ", ".join(str(r / category / "train" / "good") for r in roots)
    how = (f"pass data_root (--data-root) pointing at a folder that holds {category}/train/good, or set "
           f"${DATA_ROOT_ENV} to such a folder")
    if category in MVTEC_CATEGORIES:
        how += (f"; MVTec AD ({MVTEC_HOMEPAGE}) is downloaded into {roots[0]} automatically when the network "
                f"allows (or run patchcore_lib.data.download.download_mvtec({str(roots[0])!r}, [{category!r}]))")
    message = f"category {category!r} not found; searched: {searched}; {how}"
    if reason:
        message += f". The download failed: {reason}"
    return DatasetError(message)


def resolve_data_root(data_root: str | os.PathLike | None, category: str | None, download: bool = True,
                      synthetic_kind: str = "texture", url: str | None = None, checksum: str | None = None,
                      show_progress: bool = True) -> tuple[Path, str]:
    """``(data root, category)`` to use; see the module docstring for the order.

    ``synthetic_kind``: the synthetic set of an empty ``category``. ``url``/``checksum``: the MVTec AD archive
    and its SHA-256 (default: ``$PATCHCORE_MVTEC_URL`` / ``$PATCHCORE_MVTEC_SHA256`` when set, else the
    official archive). Raises DatasetError when the category is not found and cannot be downloaded.
    """
    category = category or ""
    if data_root:
        if not category:
            raise DatasetError(f"category is empty but data_root {data_root} is given: name a category under it")
        root = Path(data_root).expanduser()  # checked where it is read from ("~/data" as the home's data)
        check_category(root, category)
        return root, category
    kind = synthetic_kind_of(category) if category else synthetic_kind
    if kind is not None:
        root, name = ensure_default_dataset(kind=kind)
        return root, name
    roots = search_roots()
    for root in roots:
        if category_present(root, category):
            return root, category
    if category not in MVTEC_CATEGORIES or not download:
        raise _not_found(category, roots)
    url = url or os.environ.get(URL_ENV) or MVTEC_URL
    checksum = checksum or os.environ.get(SHA256_ENV) or MVTEC_SHA256
    try:
        download_mvtec(roots[0], [category], url=url, checksum=checksum, show_progress=show_progress,
                       keep_archive=True)
    except DatasetError as exc:
        raise _not_found(category, roots, str(exc)) from exc
    return roots[0], category


def category_roots(categories: Sequence[str], download: bool = True, show_progress: bool = True,
                   include_synthetic: bool = True) -> dict[str, Path]:
    """The folder of each category when no data root is given (:func:`resolve_data_root` for each, so a
    missing category fails with its one clear error before any work starts); ``include_synthetic=False``
    leaves synthetic names out (a notebook generates that set itself)."""
    return {c: resolve_data_root("", c, download=download, show_progress=show_progress)[0]
            for c in categories if include_synthetic or not synthetic_kind_of(c)}


def resolve_common_root(categories: list[str], download: bool = True, show_progress: bool = True) -> Path:
    """The one folder holding every category of ``categories`` when no data root is given
    (:func:`category_roots`); DatasetError when they lie in different folders."""
    roots = category_roots(categories, download=download, show_progress=show_progress)
    if len(set(roots.values())) > 1:
        raise DatasetError("the categories lie in different folders (" + ", ".join(
            f"{c}: {r}" for c, r in roots.items()) + "); pass --data-root, or evaluate one folder at a time")
    return next(iter(roots.values()))
