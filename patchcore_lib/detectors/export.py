"""Exported PatchCore models: the backbone and patch-feature stage as an ONNX or TorchScript graph, the memory
bank, kNN and scoring beside it (the same code as the eager model), in one small bundle file.

Bundle (``torch.save`` of a dict, format :data:`EXPORT_FORMAT`): ``graph`` (the ONNX or TorchScript bytes),
``graph_format``, ``config``, ``memory_bank`` [M, D], ``grid`` (h, w), ``threshold`` (the calibrated record or
None) and ``check`` (the export-time comparison). The graph maps images [B, 3, S, S] (preprocessed, S the
model's imagesize) to patch features [B, h*w, D]; the sparse (CSR) aggregation does not trace, so the graph
uses the equivalent convolution path of :class:`~patchcore_lib.components.features.SparseAggregation`.

:func:`export_model` refuses to write the bundle when any check image's score differs from the eager model's
by more than ``rtol`` (relative).
"""
from __future__ import annotations

import dataclasses
import io
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from patchcore_lib.components.knn import NearestNeighbourSearch
from patchcore_lib.data import ImageList
from patchcore_lib.detectors.base import predict_over_dataset
from patchcore_lib.detectors.onnx_model import INSTALL_HINT
from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig, read_model_file
from patchcore_lib.detectors.threshold import checked_threshold_record
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.utils.files import atomic_torch_save
from patchcore_lib.utils.integrity import seal

EXPORT_FORMAT = "patchcore_lib.exported/1"
FORMATS = ("onnx", "torchscript")
#: progress-bar labels of an export check: the eager model, then the exported graph, score the same check images
CHECK_EAGER = "Scoring check images (eager torch model)"
CHECK_EXPORTED = {"onnx": "Scoring check images (exported ONNX feature graph)",
                  "torchscript": "Scoring check images (exported TorchScript feature graph)"}


class _FeatureGraph(nn.Module):
    """images [B, 3, S, S] -> patch features [B, h*w, D] (the extractor with the convolution aggregation)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)[0]


def export_graph(model: PatchCore, graph_format: str) -> bytes:
    """The model's feature stage as ONNX (opset 17, dynamic batch) or TorchScript bytes, traced on CPU."""
    if graph_format not in FORMATS:
        raise ConfigError(f"unknown export format {graph_format!r}; valid: {', '.join(FORMATS)}")
    extractor = model.extractor
    saved_device = next(extractor.parameters()).device
    methods = [aggregation.method for aggregation in extractor.layer_aggregations]
    extractor.to("cpu")
    for aggregation in extractor.layer_aggregations:
        aggregation.method = "conv"
    try:
        graph = _FeatureGraph(extractor).eval()
        example = torch.zeros(2, 3, model.config.imagesize, model.config.imagesize)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks (constant for a fixed imagesize)
            if graph_format == "onnx":
                try:
                    import onnx  # noqa: F401
                except ImportError as exc:
                    raise ConfigError(f"ONNX export needs the onnx package; {INSTALL_HINT}") from exc
                torch.onnx.export(graph, (example,), buffer,  # type: ignore[arg-type]  # a file object works
                                  input_names=["images"], output_names=["features"],
                                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                                  opset_version=17, dynamo=False)
            else:
                torch.jit.save(torch.jit.trace(graph, (example,), check_trace=False), buffer)
        return buffer.getvalue()
    finally:
        for aggregation, method in zip(extractor.layer_aggregations, methods):
            aggregation.method = method
        extractor.to(saved_device)


def _onnx_session(graph: bytes, device: torch.device) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"running an ONNX model needs onnxruntime; {INSTALL_HINT}") from exc
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(graph, options, providers=providers)


class ExportedPatchCore(PatchCore):
    """A PatchCore whose feature stage runs an exported graph (onnxruntime or TorchScript); kNN, scoring,
    maps, :meth:`predict_images` and :meth:`predict_dataset` are PatchCore's own. Cannot be fitted again."""

    file_format = EXPORT_FORMAT

    def __init__(self, payload: dict[str, Any], path: str | os.PathLike = "<memory>", device: str | None = None) -> None:
        # deliberately not PatchCore.__init__: no backbone (and no backbone weights) is needed
        bank, grid = payload.get("memory_bank"), payload.get("grid")
        if not isinstance(bank, torch.Tensor) or not bank.is_floating_point():
            raise ModelFileError(f"exported model {path}: the memory bank is a {type(bank).__name__}, not a float tensor")
        if not bool(torch.isfinite(bank).all()):
            raise ModelFileError(f"exported model {path}: the memory bank holds {int((~torch.isfinite(bank)).sum())} "
                                 "NaN or infinite values; scores would be meaningless")
        if not isinstance(payload.get("graph"), bytes) or not isinstance(grid, (list, tuple)) or len(grid) != 2 \
                or not all(isinstance(v, int) and v > 0 for v in grid):
            raise ModelFileError(f"exported model {path}: its graph or patch grid is missing or of the wrong type")
        try:
            config = PatchCoreConfig.from_dict(payload["config"])
        except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
            raise ModelFileError(f"exported model {path} has an invalid configuration: {exc}") from exc
        self.config = dataclasses.replace(config, device=device or "cpu")
        self.device = torch.device(self.config.device if self.config.device != "auto" else "cpu")
        self.graph_format = payload.get("graph_format")
        self.grid = (int(grid[0]), int(grid[1]))
        self.payload = payload
        if bank.ndim != 2 or bank.shape[1] != self.config.target_embed_dimension:
            raise ModelFileError(f"exported model {path}: memory bank shape {tuple(bank.shape)} does not match its config")
        self.memory_bank = bank.to(self.device)
        self.search = NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend).fit(self.memory_bank)
        self.threshold = checked_threshold_record(payload.get("threshold"), Path(path))
        self.timings: dict[str, float] = {}
        self.extractor = None  # type: ignore[assignment]  # the exported graph replaces it
        if self.graph_format == "onnx":
            try:
                self._session = _onnx_session(payload["graph"], self.device)
            except ConfigError:
                raise
            except Exception as exc:  # onnxruntime's own error types for a graph it cannot read
                raise ModelFileError(f"exported model {path}: its ONNX graph cannot be read "
                                     f"({str(exc).splitlines()[0][:200]})") from None
        elif self.graph_format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
                try:
                    self._module = torch.jit.load(io.BytesIO(payload["graph"]), map_location=self.device).eval()
                except Exception as exc:  # torch's own error types for a graph it cannot read
                    raise ModelFileError(f"exported model {path}: its TorchScript graph cannot be read "
                                         f"({str(exc).splitlines()[0][:200]})") from None
        else:
            raise ModelFileError(f"exported model {path}: unknown graph format {self.graph_format!r}")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images [B, 3, S, S] -> (patch features [B, h*w, D], grid) from the exported graph."""
        size = self.config.imagesize
        if tuple(images.shape[-2:]) != (size, size):
            raise ConfigError(f"the exported model takes {size} x {size} images, got {tuple(images.shape[-2:])}")
        if self.graph_format == "onnx":
            features = self._session.run(None, {"images": images.detach().cpu().float().numpy()})[0]
            return torch.from_numpy(features).to(self.device), self.grid
        return self._module(images.to(self.device)), self.grid

    def fit(self, *args: Any, **kwargs: Any) -> "ExportedPatchCore":
        raise ConfigError("an exported model cannot be fitted; fit the eager model and export it again")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle (atomically)."""
        return atomic_torch_save(seal(self.payload), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, backbone: str | None = None
             ) -> "ExportedPatchCore":
        path = Path(path)
        payload = read_model_file(path, EXPORT_FORMAT)
        if backbone is not None and payload["config"].get("backbone") != backbone:
            raise ModelFileError(f"exported model {path} uses backbone {payload['config'].get('backbone')!r}, "
                                 f"not {backbone!r}")
        return cls(payload, path, device)


def score_difference(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-image relative difference |a - b| / max(|a|, 1e-12)."""
    reference = np.asarray(reference, dtype=np.float64)
    return np.abs(np.asarray(other, dtype=np.float64) - reference) / np.maximum(np.abs(reference), 1e-12)


def export_model(model: PatchCore, graph_format: str, out: str | os.PathLike, check_images: Sequence[Any],
                 rtol: float = 1e-4, show_progress: bool = False) -> dict[str, Any]:
    """Export ``model`` to a bundle at ``out`` after checking that every image of ``check_images`` (paths,
    PIL images or arrays) scores within ``rtol`` (relative) of the eager model; returns the check record.
    Nothing is written when the check fails (ModelFileError naming the worst image)."""
    if isinstance(model, ExportedPatchCore) or model.memory_bank is None:
        raise ConfigError("export needs a fitted (eager) PatchCore model")
    if not len(check_images):
        raise ConfigError("export needs at least one image to compare the exported and the eager model on")
    start = time.perf_counter()
    config = model.config
    payload: dict[str, Any] = {"format": EXPORT_FORMAT, "graph_format": graph_format, "graph": export_graph(model, graph_format),
               "config": config.to_dict(), "memory_bank": model.memory_bank.detach().cpu(),
               "grid": list(model.extractor.feature_grid(config.imagesize)), "threshold": model.threshold}
    images = ImageList(list(check_images), config.resize, config.imagesize, crop=config.crop)
    eager = predict_over_dataset(model.predict, images, config.batch_size, config.imagesize, show_progress, CHECK_EAGER)
    exported_model = ExportedPatchCore(payload, out, device="cpu")
    exported = predict_over_dataset(exported_model.predict, images, config.batch_size, config.imagesize, show_progress,
                                    CHECK_EXPORTED[graph_format])
    differences = score_difference(eager.scores, exported.scores)
    worst = int(np.argmax(differences))
    check: dict[str, Any] = {"num_images": len(images), "max_relative_difference": float(differences.max()),
             "max_absolute_difference": float(np.abs(eager.scores.astype(np.float64) - exported.scores).max()),
             "worst_image": eager.paths[worst], "rtol": rtol, "graph_bytes": len(payload["graph"]),
             "seconds": time.perf_counter() - start}
    if not check["max_relative_difference"] <= rtol:  # a NaN difference (or tolerance) fails too
        raise ModelFileError(
            f"exported {graph_format} model not written: the score of {eager.paths[worst]} differs from the eager "
            f"model's by {check['max_relative_difference']:.3g} relative ({exported.scores[worst]:.6g} vs "
            f"{eager.scores[worst]:.6g}; tolerance {rtol:g})")
    payload["check"] = check
    atomic_torch_save(seal(payload), out)
    return check
