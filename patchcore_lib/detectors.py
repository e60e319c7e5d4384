"""One factory for every anomaly detector of the study: PatchCore, PaDiM and OrthoAD.

``make_detector(method, config, **method_options)`` returns an object with the PatchCore interface
(``fit(dataset, show_progress)``, ``predict(images)``, ``predict_dataset(dataset)``, ``save(path)``,
``load(path)``, ``timings``, ``config.to_dict()``, ``memory_bank_size``).

``config`` may be a :class:`~patchcore_lib.model.PatchCoreConfig` (the shared settings -- backbone,
weights, resize, imagesize, sigma, batch size, seed, device -- are carried over; PaDiM/OrthoAD use
their own layers, the backbone's first three stages), a
:class:`~patchcore_lib.padim.GaussianADConfig`, or None (defaults). ``method_options`` are
method-specific: PatchCore: any PatchCoreConfig field; PaDiM: ``d``, ``layers``, ``epsilon``, ...;
OrthoAD: ``k``, ``layers``, ``epsilon``, ...; ensemble (``patchcore_ensemble``): ``backbones`` (default
the paper's WideResNet-101, ResNeXt-101, DenseNet-201, each with its default layers), ``calibration_images``.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelFileError
from .model import PatchCore, PatchCoreConfig
from .padim import GaussianAD, GaussianADConfig, GAUSSIAN_FORMAT, OrthoAD, PaDiM

METHODS = ("patchcore", "padim", "orthoad", "patchcore_ensemble")
_SHARED = ("backbone", "weights", "resize", "imagesize", "sigma", "batch_size", "seed", "device")


def method_config(method: str, config: PatchCoreConfig | GaussianADConfig | None = None,
                  **method_options: Any) -> PatchCoreConfig | GaussianADConfig:
    """The full configuration ``make_detector`` would use (``None`` options mean defaults)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    options = {k: v for k, v in method_options.items() if v is not None}
    if method == "patchcore_ensemble":
        from .ensemble import PAPER_ENSEMBLE_BACKBONES, EnsembleConfig

        if isinstance(config, EnsembleConfig) and not options:
            return config
        unknown = set(options) - {"backbones", "calibration_images"}
        if unknown:
            raise ConfigError(f"unknown patchcore_ensemble option(s) {', '.join(sorted(unknown))}; "
                              "valid: backbones, calibration_images")
        base = config.members[0] if isinstance(config, EnsembleConfig) else config
        if not isinstance(base, PatchCoreConfig):
            base = PatchCoreConfig(**{k: getattr(base, k) for k in _SHARED}) if base is not None else PatchCoreConfig()
        return EnsembleConfig.from_backbones(base, tuple(options.get("backbones", PAPER_ENSEMBLE_BACKBONES)),
                                             options.get("calibration_images", 8))
    if method == "patchcore":
        if isinstance(config, GaussianADConfig):
            config = PatchCoreConfig(**{k: getattr(config, k) for k in _SHARED})
        config = config or PatchCoreConfig()
        unknown = set(options) - {f.name for f in dataclasses.fields(PatchCoreConfig)}
        if unknown:
            raise ConfigError(f"unknown PatchCore option(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(config, **options) if options else config
    known = {f.name for f in dataclasses.fields(GaussianADConfig)} - {"method"}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown {method} option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    if isinstance(config, GaussianADConfig):
        base = {k: v for k, v in config.to_dict().items() if k != "method"}
        if config.method != method:  # d/k/layers are method-specific defaults
            base.pop("d", None)
    elif isinstance(config, PatchCoreConfig):
        base = {k: getattr(config, k) for k in _SHARED}
    elif config is None:
        base = {}
    else:
        raise ConfigError(f"config must be a PatchCoreConfig or GaussianADConfig, got {type(config).__name__}")
    base.update(options)
    return GaussianADConfig(method=method, **base)


def make_detector(method: str, config: PatchCoreConfig | GaussianADConfig | None = None,
                  **method_options: Any) -> PatchCore | GaussianAD:
    """A PatchCore, PaDiM or OrthoAD detector (unfitted) for ``method``."""
    full = method_config(method, config, **method_options)
    if method == "patchcore":
        return PatchCore(full)
    if method == "patchcore_ensemble":
        from .ensemble import PatchCoreEnsemble

        return PatchCoreEnsemble(full)
    return {"padim": PaDiM, "orthoad": OrthoAD}[method](full)


def detector_size(detector: Any) -> int:
    """The number of stored items: memory-bank patches (PatchCore) or Gaussians (PaDiM/OrthoAD)."""
    if getattr(detector, "memory_bank", None) is not None:
        return int(len(detector.memory_bank))
    return int(getattr(detector, "memory_bank_size", 0))


def load_detector(path: str | os.PathLike, device: str | None = None, backbone: str | None = None
                  ) -> PatchCore | GaussianAD:
    """Load any saved detector; dispatches on the file's format (PatchCore or PaDiM/OrthoAD)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    is_gaussian = False
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if names:
                is_gaussian = GAUSSIAN_FORMAT.encode() in archive.read(names[0])
    except (zipfile.BadZipFile, OSError, KeyError):
        is_gaussian = False  # PatchCore.load gives the precise error
    if is_gaussian:
        return GaussianAD.load(path, device=device, backbone=backbone)
    return PatchCore.load(path, device=device, backbone=backbone)
