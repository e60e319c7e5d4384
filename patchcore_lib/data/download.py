"""Download of the real MVTec AD dataset: resumable, checksum-verified, safely extracted.

MVTec AD is released by MVTec Software GmbH under CC BY-NC-SA 4.0 (non-commercial use); see
https://www.mvtec.com/company/research/datasets/mvtec-ad. The archive (about 4.9 GB) holds one
folder per category at its top level (``bottle/``, ``cable/``, ...) plus ``license.txt`` and
``readme.txt``.

The archive URL and SHA-256 checksum are those used by anomalib
(``openvinotoolkit/anomalib``, ``src/anomalib/data/datamodules/image/mvtec.py``, ``DOWNLOAD_INFO``;
anomalib checks ``hashsum`` with SHA-256).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Sequence

from tqdm.auto import tqdm

from patchcore_lib.errors import ConfigError, DatasetError, OutputError
from patchcore_lib.utils.files import atomic_write_text

__all__ = [
    "MVTEC_CATEGORIES",
    "MVTEC_URL",
    "MVTEC_SHA256",
    "MVTEC_HOMEPAGE",
    "download_mvtec",
    "missing_dataset_message",
    "category_present",
]

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)

MVTEC_URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/"
             "download/420938113-1629952094/mvtec_anomaly_detection.tar.xz")
#: SHA-256 of ``mvtec_anomaly_detection.tar.xz`` (anomalib's ``DOWNLOAD_INFO.hashsum``).
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"

_CHUNK = 1 << 20
_DOWNLOADS = ".downloads"


def category_present(root: str | os.PathLike, category: str) -> bool:
    """True when ``root/category/train/good`` is a folder."""
    return (Path(root) / category / "train" / "good").is_dir()


def _manual_instructions(root: Path) -> str:
    return (f"to get MVTec AD, run patchcore_lib.data.download.download_mvtec({str(root)!r}) with internet access, "
            f"or download it manually from {MVTEC_HOMEPAGE} and extract mvtec_anomaly_detection.tar.xz "
            f"so that {root / '<category>' / 'train' / 'good'} exists")


def missing_dataset_message(root: str | os.PathLike, category: str) -> str:
    """One message saying where the category was looked for and how to obtain the data."""
    root = Path(root).expanduser()
    return (f"MVTec AD category {category!r} not found: {root / category / 'train' / 'good'} does not exist; "
            + _manual_instructions(root))


def _check_categories(categories: Sequence[str] | None) -> tuple[str, ...]:
    if categories is None:
        return MVTEC_CATEGORIES
    if isinstance(categories, str):
        categories = (categories,)
    wanted = tuple(dict.fromkeys(categories))
    unknown = [c for c in wanted if c not in MVTEC_CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown MVTec AD categories {unknown}; choose among: {', '.join(MVTEC_CATEGORIES)}")
    if not wanted:
        raise ConfigError("categories is empty; pass None for all MVTec AD categories")
    return wanted


def _archive_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name or name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        name = "mvtec_anomaly_detection.tar.xz"
    return name


def _file_hash(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _network_error(url: str, reason: object, root: Path, extra: str = "") -> DatasetError:
    return DatasetError(f"could not download {url}: {reason}{extra}; " + _manual_instructions(root))


def _fetch(url: str, part: Path, root: Path, show_progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server allows it."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "patchcore_lib"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # "range not satisfiable": the part file already holds the whole file (or is too long);
            # the checksum decides. If the server reports a smaller total, restart.
            total = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
            exc.close()
            if total is None or int(total.group(1)) == have:
                return
            part.unlink()
            return _fetch(url, part, root, show_progress, timeout)
        raise _network_error(url, f"HTTP {exc.code} {exc.reason}", root) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _network_error(url, reason, root) from exc

    with response:
        status = getattr(response, "status", 200)
        mode = "wb"
        if have and status == 206:
            match = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", "") or "")
            if match is None or int(match.group(1)) != have:
                raise _network_error(url, f"server answered an unexpected Content-Range "
                                          f"{response.headers.get('Content-Range')!r} to a resume request", root,
                                     f"; delete {part} and retry")
            mode = "ab"
        else:
            have = 0  # server ignored Range (or there was nothing to resume): start over
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        received = have
        try:
            handle = open(part, mode)
        except OSError as exc:
            raise OutputError(f"cannot write download file {part}: {exc.strerror or exc}") from exc
        with handle, tqdm(total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=part.name[: -len(".part")], disable=not show_progress) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError, socket.timeout) as exc:
                    raise _network_error(url, f"connection lost after {received} bytes ({exc or type(exc).__name__})",
                                         root, f"; run download_mvtec again to resume from {part}") from exc
                if not chunk:
                    break
                try:
                    handle.write(chunk)
                except OSError as exc:
                    raise OutputError(f"cannot write download file {part}: {exc.strerror or exc}") from exc
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _network_error(url, f"connection closed after {received} of {expected} bytes", root,
                             f"; run download_mvtec again to resume from {part}")


def _verify(archive: Path, checksum: str | None, algorithm: str) -> None:
    if not checksum:
        return
    actual = _file_hash(archive, algorithm)
    if actual.lower() != checksum.strip().lower():
        try:
            archive.unlink()
        except OSError:
            pass
        raise DatasetError(f"{algorithm} checksum mismatch for downloaded file {archive}: expected {checksum}, "
                           f"got {actual}; the corrupt file was deleted, run download_mvtec again")


def _member_parts(name: str) -> tuple[str, ...]:
    """Normalised path components of a tar member, refusing absolute paths and ``..``."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DatasetError(f"refusing to extract archive member with an absolute path: {name!r}")
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise DatasetError(f"refusing to extract archive member escaping the dataset root: {name!r}")
    return parts


def _check_target_free(root: Path, category: str) -> None:
    """DatasetError when ``root/category`` exists (a folder, file or symbolic link) without ``train/good``:
    it holds someone's files, which are never deleted or replaced."""
    target = root / category
    if target.is_symlink() or target.exists():
        kind = "a symbolic link" if target.is_symlink() else ("a folder" if target.is_dir() else "a file")
        raise DatasetError(f"{target} exists ({kind}) but is not a complete MVTec AD category (no train/good); "
                           "it is left untouched: move or delete it yourself, or choose another root")


def _url_record(archive: Path) -> Path:
    return archive.with_name(archive.name + ".url")


def _forget_other_download(archive: Path, part: Path, url: str) -> None:
    """Without a checksum, a file in ``.downloads`` is reused only for the URL it was downloaded from."""
    try:
        recorded = _url_record(archive).read_text().strip()
    except OSError:
        recorded = None
    if recorded != url:
        for path in (archive, part):
            path.unlink(missing_ok=True)


def _extract(archive: Path, root: Path, wanted: set[str]) -> None:
    """Extract the categories in ``wanted`` (and top-level text files) from ``archive`` into ``root``.

    Members are extracted into a staging folder under ``root/.downloads`` with tarfile's ``data``
    filter (no absolute paths, no escaping links, no device files), then each category folder is
    renamed into place, so a category folder appears only once complete.
    """
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root / _DOWNLOADS))
    try:
        try:
            tar = tarfile.open(archive, mode="r:*")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot open archive {archive}: {exc}") from exc
        found: set[str] = set()
        top_files: list[str] = []
        with tar:
            try:
                for member in tar:
                    parts = _member_parts(member.name)
                    if not parts:
                        continue
                    # tolerate one wrapper folder (e.g. "mvtec_anomaly_detection/bottle/...")
                    if parts[0] not in MVTEC_CATEGORIES and len(parts) > 1 and parts[1] in MVTEC_CATEGORIES:
                        parts = parts[1:]
                    category = parts[0]
                    if len(parts) == 1 and member.isfile() and category not in MVTEC_CATEGORIES:
                        if (root / category).exists():
                            continue
                        top_files.append(category)  # license.txt, readme.txt
                    elif category not in wanted:
                        continue
                    else:
                        found.add(category)
                    if member.islnk() or member.issym():
                        raise DatasetError(f"refusing to extract link member {member.name!r} from {archive}")
                    if not (member.isfile() or member.isdir()):
                        continue  # devices, fifos: never part of the dataset
                    member.name = "/".join(parts)
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, staging, filter="data")
                    else:  # pragma: no cover - Python without extraction filters
                        target = (staging / member.name).resolve()
                        if not target.is_relative_to(staging.resolve()):
                            raise DatasetError(f"refusing to extract {member.name!r}: outside {root}")
                        tar.extract(member, staging)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise DatasetError(f"cannot extract archive {archive}: {exc}") from exc
        missing = sorted(wanted - found)
        if missing:
            raise DatasetError(f"archive {archive} does not contain the categories {missing}")
        for category in sorted(found):
            _check_target_free(root, category)  # never replace a folder we did not create
            os.replace(staging / category, root / category)
        for name in top_files:
            if not (root / name).exists():
                os.replace(staging / name, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_mvtec(root: str | os.PathLike, categories: Sequence[str] | None = None, url: str = MVTEC_URL,
                   show_progress: bool = True, checksum: str | None = MVTEC_SHA256,
                   hash_algorithm: str = "sha256", keep_archive: bool = False, timeout: float = 60.0) -> Path:
    """Download and extract MVTec AD into ``root`` (so that ``root/<category>/train/good`` exists).

    Args:
        root: dataset root folder (created if needed).
        categories: categories to extract (default: all 15). Categories already present are kept
            as they are; when all requested ones are present nothing is downloaded.
        url: archive URL (a ``.tar.xz``/``.tar.gz``/``.tar`` with one folder per category).
        show_progress: show a tqdm progress bar.
        checksum: expected hex digest of the archive (``None`` skips the check, e.g. for a mirror
            of another archive; an archive or partial download left in ``.downloads`` is then reused
            only for the URL it came from); the default is the official archive's SHA-256.
        hash_algorithm: hashlib name of the checksum's algorithm.
        keep_archive: keep ``root/.downloads/<archive>`` after extraction (otherwise it is deleted;
            extracting other categories later then downloads again).
        timeout: socket timeout in seconds.

    The archive is downloaded to ``root/.downloads/<name>.part``; an interrupted download is resumed
    with an HTTP Range request on the next call (restarted if the server ignores Range).

    A ``root/<category>`` that exists without ``train/good`` (a folder, file or symbolic link) is never
    deleted: the call refuses before downloading.

    Returns ``root``. Raises DatasetError on network failure, checksum mismatch or a bad archive,
    ConfigError on unknown categories, OutputError when ``root`` cannot be written.
    """
    root = Path(root).expanduser()
    wanted = _check_categories(categories)
    needed = {c for c in wanted if not category_present(root, c)}
    if not needed:
        return root
    for category in sorted(needed):
        _check_target_free(root, category)  # before downloading 5 GB
    try:
        hashlib.new(hash_algorithm)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"unknown hash algorithm {hash_algorithm!r}") from exc

    downloads = root / _DOWNLOADS
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create download folder {downloads}: {exc.strerror or exc}") from exc
    name = _archive_name(url)
    archive = downloads / name
    part = downloads / (name + ".part")

    if not checksum:
        _forget_other_download(archive, part, url)
    if archive.exists():  # left by an earlier run with keep_archive=True, or interrupted extraction
        _verify(archive, checksum, hash_algorithm)
    if not archive.exists():
        atomic_write_text(_url_record(archive), url)
        _fetch(url, part, root, show_progress, timeout)
        os.replace(part, archive)
        _verify(archive, checksum, hash_algorithm)

    _extract(archive, root, needed)
    if not keep_archive:
        try:
            archive.unlink()
            _url_record(archive).unlink(missing_ok=True)
            downloads.rmdir()
        except OSError:
            pass
    still_missing = [c for c in wanted if not category_present(root, c)]
    if still_missing:
        raise DatasetError(f"after extracting {archive}, these categories lack train/good: {still_missing}")
    return root
