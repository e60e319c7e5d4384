"""What every detector shares: the Detector protocol, Predictions, the prediction loop over a dataset,
device resolution and weight fingerprints."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Protocol, Sized, cast, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from patchcore_lib.components.anomaly_map import DEFAULT_SIGMA
from patchcore_lib.components.backbones import BACKBONES, DEFAULT_BACKBONE, get_spec
from patchcore_lib.data import (CROP_MODES, DEFAULT_BATCH_SIZE, DEFAULT_CROP, DEFAULT_IMAGESIZE, DEFAULT_RESIZE,
                                ImageList, make_loader)
from patchcore_lib.detectors.predictions import Predictions
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.registry import Registry
from patchcore_lib.utils.schema import option


@runtime_checkable
class Detector(Protocol):
    """An anomaly detector: fit on nominal images, predict scores [B] and maps [B, S, S], save and load.

    ``config`` has ``to_dict()``, ``resize``, ``imagesize`` and ``batch_size``; ``timings`` holds
    ``fit_seconds`` after :meth:`fit` and ``predict_seconds`` after :meth:`predict_dataset`.
    """

    config: Any
    timings: dict[str, float]

    def fit(self, data: torch.utils.data.Dataset, show_progress: bool = True) -> "Detector": ...

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> "Predictions": ...

    def save(self, path: str | os.PathLike) -> Path: ...

    @property
    def memory_bank_size(self) -> int: ...


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; otherwise the named device (ConfigError if unusable)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a module's state dict: names and tensor bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def predict_over_dataset(predict: Any, dataset: torch.utils.data.Dataset, batch_size: int, imagesize: int,
                         show_progress: bool = True, desc: str = "Scoring test images") -> Predictions:
    """Run ``predict(images [B, 3, S, S]) -> (scores [B], maps [B, S, S])`` over a test split (``desc``: the
    progress bar's label)."""
    loader = make_loader(dataset, batch_size)
    n = len(cast(Sized, dataset))  # a map-style dataset (torch's Dataset declares no __len__)
    scores = np.empty(n, dtype=np.float32)
    maps = np.empty((n, imagesize, imagesize), dtype=np.float32)
    masks = np.empty((n, imagesize, imagesize), dtype=np.uint8)
    labels, defects, paths = [], [], []
    position = 0
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, disable=not show_progress, leave=False):
        batch_scores, batch_maps = predict(batch["image"])
        count = len(batch_scores)
        scores[position:position + count] = batch_scores.numpy()
        maps[position:position + count] = batch_maps.numpy()
        masks[position:position + count] = batch["mask"][:, 0].numpy().astype(np.uint8)
        labels.extend(batch["label"].tolist())
        defects.extend(batch["defect_type"])
        paths.extend(batch["path"])
        position += count
    return Predictions(scores, maps, masks, np.asarray(labels), defects, paths, time.perf_counter() - start)


def predict_images(detector: Any, images: list[Any], show_progress: bool = False) -> Predictions:
    """``detector.predict_dataset`` over images given as paths, PIL images or arrays, preprocessed with the
    detector's own ``resize`` / ``imagesize`` exactly as a dataset layout would (so scores equal evaluate's)."""
    if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__len__"):
        images = [images]
    config = detector.config
    dataset = ImageList(list(images), config.resize, config.imagesize, crop=config.crop)
    return detector.predict_dataset(dataset, show_progress)


#: Detectors by name. ``@DETECTORS.register(name)`` on a class with ``options_class``,
#: ``method_options`` (option names, CLI ``--<option_prefix>-<name>``), ``make_config(shared, **options)``,
#: ``file_format`` and ``load(path, device, backbone)`` adds one to the CLI, the notebooks and the tests (entries
#: typed Any: a protocol of those class attributes would need ClassVar declarations in every detector).
DETECTORS: Registry[Any] = Registry("detector", providers=(  # the modules that register the detectors
    "patchcore_lib.detectors.patchcore", "patchcore_lib.detectors.ensemble", "patchcore_lib.detectors.gaussian"))

#: The declaration (default, help, checks) of each setting every detector shares, stated once: each detector
#: configuration builds its field with :func:`shared_option`.
_SHARED_OPTIONS: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "backbone": (DEFAULT_BACKBONE, "feature backbone", {"choices": BACKBONES.names, "metavar": "NAME"}),
    "weights": (None, "backbone weights file, or 'random'", {"metavar": "FILE"}),
    "resize": (DEFAULT_RESIZE, "resize the short image side to this many pixels", {"minimum": 1}),
    "imagesize": (DEFAULT_IMAGESIZE, "centre crop size in pixels (<= resize)", {"minimum": 1}),
    "crop": (DEFAULT_CROP, "image geometry: center (resize short side + centre crop, official) or none "
             "(whole image resized to imagesize x imagesize)", {"choices": CROP_MODES}),
    "sigma": (DEFAULT_SIGMA, "Gaussian blur of the anomaly maps in pixels (0: none)", {"minimum": 0.0}),
    "batch_size": (DEFAULT_BATCH_SIZE, "images per forward pass", {"minimum": 1}),
    "seed": (0, "random seed", {}),
    "device": ("auto", "auto, cpu or cuda[:N]", {"metavar": "DEVICE"}),
}

#: Settings every detector shares (carried over when a PatchCore configuration builds another detector).
SHARED_SETTINGS = tuple(_SHARED_OPTIONS)


def shared_option(name: str, help: str | None = None) -> Any:
    """The dataclass field of the shared setting ``name`` (:data:`SHARED_SETTINGS`): its one default, help and
    checks; ``help`` words it for one detector."""
    default, text, checks = _SHARED_OPTIONS[name]
    return option(default, help or text, **checks)


def check_geometry(config: Any) -> None:
    """The cross-field rules of the shared image settings, checked by every detector configuration after its
    fields: the centre crop fits the resized image, and it spans at least two cells of the coarsest layer."""
    if config.imagesize > config.resize:
        raise ConfigError(f"imagesize ({config.imagesize}) must not exceed resize ({config.resize})")
    spec = get_spec(config.backbone)
    min_size = 2 * max(spec.layers[layer][1] for layer in config.layers)
    if config.imagesize < min_size:
        raise ConfigError(f"imagesize {config.imagesize} is too small for {config.backbone} layers "
                          f"{', '.join(config.layers)}: it needs at least {min_size} px")


def shared_settings(config: Any) -> dict[str, Any]:
    """The :data:`SHARED_SETTINGS` of any detector configuration (an ensemble's come from its first member)."""
    if config is None:
        return {}
    source = config.members[0] if hasattr(config, "members") else config
    return {k: getattr(source, k) for k in SHARED_SETTINGS if hasattr(source, k)}
