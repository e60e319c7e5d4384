"""What every detector shares: the Detector protocol, Predictions, the prediction loop over a dataset,
device resolution and weight fingerprints."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from patchcore_lib.data import ImageList, make_loader
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.registry import Registry


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


@dataclass
class Predictions:
    """Per-image results over a dataset. scores [N], maps [N, S, S] float32, masks [N, S, S] uint8."""

    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    paths: list[str]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a module's state dict: names and tensor bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def predict_over_dataset(predict: Any, dataset: torch.utils.data.Dataset, batch_size: int, imagesize: int,
                         show_progress: bool = True) -> Predictions:
    """Run ``predict(images [B, 3, S, S]) -> (scores [B], maps [B, S, S])`` over a test split."""
    loader = make_loader(dataset, batch_size)
    n = len(dataset)
    scores = np.empty(n, dtype=np.float32)
    maps = np.empty((n, imagesize, imagesize), dtype=np.float32)
    masks = np.empty((n, imagesize, imagesize), dtype=np.uint8)
    labels, defects, paths = [], [], []
    position = 0
    start = time.perf_counter()
    for batch in tqdm(loader, desc="Scoring test images", disable=not show_progress, leave=False):
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


#: Detectors by name. ``@DETECTORS.register(name)`` on a class with ``config_class``, ``options_class``,
#: ``method_options`` (option names, CLI ``--<option_prefix>-<name>``), ``make_config(shared, **options)``,
#: ``file_format`` and ``load(path, device, backbone)`` adds one to the CLI, the notebooks and the tests.
DETECTORS: Registry[type] = Registry("detector")

#: Settings every detector shares (carried over when a PatchCore configuration builds another detector).
SHARED_SETTINGS = ("backbone", "weights", "resize", "imagesize", "crop", "sigma", "batch_size", "seed", "device")


def shared_settings(config: Any) -> dict[str, Any]:
    """The :data:`SHARED_SETTINGS` of any detector configuration (an ensemble's come from its first member)."""
    if config is None:
        return {}
    source = config.members[0] if hasattr(config, "members") else config
    return {k: getattr(source, k) for k in SHARED_SETTINGS if hasattr(source, k)}
