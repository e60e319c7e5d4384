"""One factory over every registered detector (:data:`~patchcore_lib.detectors.base.DETECTORS`).

``make_detector(method, config, **options)`` builds an unfitted detector; ``load_detector(path)`` reads
any saved one, dispatching on the file's format. Each detector builds its own configuration
(``make_config``): shared settings (backbone, weights, geometry, sigma, batch size, seed, device) carry
over from any other detector's configuration.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from patchcore_lib.detectors.base import DETECTORS, Detector
from patchcore_lib.detectors.ensemble import PatchCoreEnsemble  # noqa: F401 (registers patchcore_ensemble)
from patchcore_lib.detectors.export import EXPORT_FORMAT, ExportedPatchCore
from patchcore_lib.detectors.gaussian import GaussianAD
from patchcore_lib.detectors.patchcore import PatchCore
from patchcore_lib.errors import ModelFileError


def method_config(method: str, config: Any = None, **method_options: Any) -> Any:
    """The full configuration ``make_detector`` would use (``None`` options mean defaults)."""
    return DETECTORS.get(method).make_config(config, **method_options)


def make_detector(method: str, config: Any = None, **method_options: Any) -> Detector:
    """An unfitted detector registered as ``method``, configured from ``config`` and ``method_options``."""
    cls = DETECTORS.get(method)
    return cls(cls.make_config(config, **method_options))


def _file_format(path: Path) -> str | None:
    """The ``format`` string of a torch zip model file, read without unpickling tensors (None if unknown)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            data = archive.read(names[0]) if names else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    for _, cls in DETECTORS.items():
        if cls.file_format.encode() in data:
            return cls.file_format
    return EXPORT_FORMAT if EXPORT_FORMAT.encode() in data else None


def load_detector(path: str | os.PathLike, device: str | None = None, backbone: str | None = None) -> Detector:
    """Load any saved detector or exported bundle; dispatches on the file's format (PatchCore gives the precise error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    found = _file_format(path)
    if found == EXPORT_FORMAT:  # an exported bundle (patchcore export): graph + memory bank
        return ExportedPatchCore.load(path, device=device, backbone=backbone)
    for _, cls in DETECTORS.items():
        if cls.file_format == found:
            return (GaussianAD if issubclass(cls, GaussianAD) else cls).load(path, device=device, backbone=backbone)
    return PatchCore.load(path, device=device, backbone=backbone)
