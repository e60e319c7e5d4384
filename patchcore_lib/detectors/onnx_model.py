"""A whole-pipeline ONNX model (written by ``patchcore export --format onnx``, :mod:`.onnx_pipeline`) run by
onnxruntime for ``patchcore predict``, without torch.

Images are read by :mod:`~patchcore_lib.data.image_files` and prepared by
:func:`~patchcore_lib.data.model_input.model_input` as the model's metadata records (``preprocessing``: resize,
imagesize, crop, mean, std), which gives the same float32 input as the torch preprocessing of a ``.pt`` model;
onnxruntime then computes ``score`` [N] and ``anomaly_map`` [N, S, S]. Neither this module nor what it imports
imports torch, torchvision or timm, so ``patchcore predict --model model.onnx`` starts in about a second
(tests/test_onnx_predict_startup.py).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from patchcore_lib.data.image_files import load_image
from patchcore_lib.data.model_input import CROP_MODES, model_input
from patchcore_lib.detectors.predictions import Predictions
from patchcore_lib.errors import ConfigError, ModelFileError

ONNX_FORMAT = "patchcore_lib.onnx-pipeline/1"
METADATA_KEY = "patchcore_lib"
INSTALL_HINT = "install the export extra: pip install 'patchcore_lib[export]' (onnx, onnxruntime)"


@dataclass(frozen=True)
class OnnxModelConfig:
    """What scoring needs of an ONNX model's settings: its preprocessing and the images per onnxruntime run
    (onnxruntime runs on the CPU). ``batch_size`` is 1, not the fit's: the graph's distance matrix (the patches of
    the batch x the memory bank) grows with the batch, and one image per run is as fast per image on a CPU and
    overlaps better with writing the overlays (``predict --batch-size`` sets it). The whole PatchCore
    configuration the model was exported with is ``metadata["config"]``."""

    resize: int
    imagesize: int
    crop: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 1
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def onnxruntime_module() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"running an ONNX model needs the onnxruntime package; {INSTALL_HINT}") from exc
    return onnxruntime


def make_session(source: bytes | str | os.PathLike, threads: int | None = None, spinning: bool = False) -> Any:
    """An onnxruntime CPU session of ``source`` (file or bytes); ``threads``: its intra-op threads (None:
    onnxruntime's default, one per physical core); ``spinning``: whether idle intra-op threads busy-wait for the
    next operator (onnxruntime's default; off here: ``patchcore predict`` writes the overlays in another thread
    while an image is scored, and a spinning thread takes the core it needs)."""
    onnxruntime = onnxruntime_module()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(source if isinstance(source, bytes) else os.fspath(source), options,
                                        providers=["CPUExecutionProvider"])


def read_metadata(session: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The :data:`METADATA_KEY` JSON of an ONNX session's model (ModelFileError when absent or not ours)."""
    found = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(found) if found else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != ONNX_FORMAT:
        raise ModelFileError(f"{path}: an ONNX model without patchcore_lib metadata ({METADATA_KEY!r}); export it "
                             "with patchcore export --format onnx")
    return metadata


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True for a file named ``*.onnx`` that is not a torch zip (a bundle of an older export is a zip)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(2) != b"PK"


def model_config(metadata: dict[str, Any], path: str | os.PathLike) -> OnnxModelConfig:
    """The preprocessing the metadata records (ModelFileError naming ``path`` when unusable)."""
    record: Any = metadata.get("preprocessing")
    settings = None
    try:
        settings = OnnxModelConfig(int(record["resize"]), int(record["imagesize"]), str(record["crop"]),
                                   tuple(float(v) for v in record["mean"]), tuple(float(v) for v in record["std"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    if settings is None or settings.crop not in CROP_MODES or len(settings.mean) != 3 or len(settings.std) != 3 \
            or not 0 < settings.imagesize <= settings.resize or settings.batch_size < 1:
        raise ModelFileError(f"{path}: the ONNX model's metadata has no usable preprocessing record "
                             f"({record!r}); export it again with patchcore export --format onnx")
    return settings


class OnnxPipelineModel:
    """A whole-pipeline ONNX file run by onnxruntime, with the interface ``patchcore predict`` uses
    (``config``, ``threshold``, :meth:`predict_images`; :meth:`predict` and :meth:`predict_dataset` for
    preprocessed images). ``threads``: onnxruntime's intra-op threads (None: its default)."""

    def __init__(self, source: bytes | str | os.PathLike, path: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        if path is None:  # named in messages: the file, or a placeholder for bytes (never the bytes themselves)
            path = "<ONNX model bytes>" if isinstance(source, bytes) else source
        try:
            self._session = make_session(source, threads)
        except ConfigError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
            raise ModelFileError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        self.metadata = read_metadata(self._session, path)
        self.config = model_config(self.metadata, path)
        self.threshold = self.metadata.get("threshold")

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images float32 [B, 3, S, S] -> (scores [B], maps [B, S, S]) as numpy arrays."""
        batch = np.ascontiguousarray(images, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        scores, maps = self._session.run(None, {"image": batch})
        return scores, maps

    def predict(self, images: Any) -> tuple[Any, Any]:
        """Preprocessed images [B, 3, S, S] -> (scores [B], maps [B, S, S]): CPU tensors for a tensor (the
        detectors' ``predict``), numpy arrays for an array."""
        torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
        if torch is not None and isinstance(images, torch.Tensor):
            scores, maps = self.run(images.detach().cpu().float().numpy())
            return torch.from_numpy(scores), torch.from_numpy(maps)
        return self.run(np.asarray(images))

    def prepare(self, item: Any, index: int = 0, name: str | None = None) -> np.ndarray:
        """One image (a path, PIL image or array) as the model's input [3, S, S] (DatasetError when unreadable)."""
        config = self.config
        name = name if name is not None else (os.fspath(item) if isinstance(item, (str, os.PathLike))
                                              else f"<image {index}>")
        return model_input(load_image(item, index), config.resize, config.imagesize, config.crop, name,
                           config.mean, config.std)

    def predict_images(self, images: Sequence[Any], show_progress: bool = False) -> Predictions:
        """Scores and maps of images given as paths, PIL images or arrays, prepared as the metadata records."""
        if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__len__"):
            images = [images]
        items, size = list(images), self.config.imagesize
        paths = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"<image {i}>" for i, p in enumerate(items)]
        scores = np.empty(len(items), dtype=np.float32)
        maps = np.empty((len(items), size, size), dtype=np.float32)
        start = time.perf_counter()
        for begin in range(0, len(items), self.config.batch_size):
            chunk = range(begin, min(begin + self.config.batch_size, len(items)))
            batch = np.stack([self.prepare(items[i], i, paths[i]) for i in chunk])
            scores[chunk.start:chunk.stop], maps[chunk.start:chunk.stop] = self.run(batch)
        return Predictions(scores, maps, np.zeros((len(items), size, size), dtype=np.uint8),
                           np.full(len(items), -1), [""] * len(items), paths, time.perf_counter() - start)

    def predict_dataset(self, dataset: Any, show_progress: bool = True) -> Predictions:
        """Over a dataset of preprocessed items (the layouts', an ImageList: torch is imported already)."""
        base = importlib.import_module("patchcore_lib.detectors.base")
        return base.predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                         show_progress)
