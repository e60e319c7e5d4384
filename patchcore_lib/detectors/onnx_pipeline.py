"""The whole PatchCore pipeline as one standard ONNX model that onnxruntime runs alone (no torch, no patchcore_lib).

Graph (opset :data:`OPSET`): input ``image`` float32 [N, 3, S, S], already resized, cropped and normalised as
the metadata's ``preprocessing`` says; outputs ``score`` [N] and ``anomaly_map`` [N, S, S]. Inside: the backbone
and patch features (the convolution path of the aggregation), the memory bank [M, D] as an initializer, exact kNN
as a matrix product and top-k (squared L2, as FAISS's flat index), the image score (max patch score, or the
paper's Eq. 7 re-weighting with the b nearest bank neighbours of every bank feature precomputed), and the map:
bilinear upsampling of the patch-score grid and the Gaussian blur.

Metadata: the ONNX ``metadata_props`` entry :data:`METADATA_KEY` and a side file ``<out>.json`` hold the same JSON:
``format``, ``preprocessing`` (resize, imagesize, crop, mean, std), ``threshold`` (the calibrated record or None),
``config``, ``grid``, ``inputs`` / ``outputs`` and the export-time ``check``.

:func:`export_onnx_pipeline` refuses to write the file when a check image's score differs from the eager model's
by more than ``rtol`` (relative). :class:`~.onnx_model.OnnxPipelineModel` runs such a file for ``patchcore
predict``; it lives in :mod:`.onnx_model`, which imports no torch (re-exported here). Not imported by
:mod:`patchcore_lib.detectors` (only the CLI and users who export need onnx / onnxruntime).
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from patchcore_lib.components.anomaly_map import anomaly_maps
from patchcore_lib.data import ImageList
from patchcore_lib.detectors.base import predict_over_dataset
from patchcore_lib.detectors.export import CHECK_EAGER, INSTALL_HINT, ExportedPatchCore, score_difference
from patchcore_lib.detectors.onnx_model import (METADATA_KEY, ONNX_FORMAT,  # noqa: F401 (re-exported)
                                                OnnxPipelineModel, is_onnx_file, read_metadata)
from patchcore_lib.detectors.patchcore import PatchCore, preprocessing_record
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.utils.files import atomic_write_bytes, atomic_write_text
from patchcore_lib.version import __version__

OPSET = 17
#: protobuf's limit on one ONNX file (the memory bank is stored inside it)
MAX_ONNX_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2
#: progress-bar label of the exported model in the export check (the eager model's is export.CHECK_EAGER)
CHECK_PIPELINE = "Scoring check images (exported ONNX pipeline in onnxruntime)"


def bank_neighbourhoods(bank: torch.Tensor, neighbourhood: int, chunk: int = 1024) -> torch.Tensor:
    """[M, b + 1] indices: each bank feature first, then its ``neighbourhood`` (b) nearest other bank features
    (Euclidean), as :func:`~patchcore_lib.components.scoring.reweighting_factors` picks them for m*."""
    rows = []
    for start in range(0, len(bank), chunk):
        candidates = torch.cdist(bank[start:start + chunk], bank).topk(neighbourhood + 1, dim=1, largest=False).indices
        for offset, found in enumerate(candidates.tolist()):
            anchor = start + offset
            rows.append([anchor] + [c for c in found if c != anchor][:neighbourhood])
    return torch.tensor(rows, dtype=torch.int64)


class PipelineGraph(nn.Module):
    """image [N, 3, S, S] -> (score [N], anomaly_map [N, S, S]): a fitted PatchCore's whole scoring path."""

    bank: torch.Tensor  # buffers (register_buffer below)
    bank_sq: torch.Tensor
    support: torch.Tensor

    def __init__(self, model: PatchCore) -> None:
        super().__init__()
        config = model.config
        self.extractor = model.extractor
        if model.memory_bank is None:
            raise ConfigError("the ONNX pipeline needs a fitted PatchCore model")
        bank = model.memory_bank.detach().float().cpu()
        self.register_buffer("bank", bank)
        self.register_buffer("bank_sq", (bank * bank).sum(1))
        self.num_nn = int(config.num_nn)
        self.euclidean = config.distance == "euclidean"
        self.reweighted = config.score == "reweighted"
        self.grid = tuple(int(v) for v in model.extractor.feature_grid(config.imagesize))
        self.size = int(config.imagesize)
        self.sigma = float(config.sigma)
        if self.reweighted:
            self.register_buffer("support", bank_neighbourhoods(bank, int(config.reweight_neighbourhood)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(image)[0]  # [N, P, D]
        patches, dim = int(features.shape[1]), int(features.shape[2])
        queries = features.reshape(-1, dim)
        squared = (queries * queries).sum(1, keepdim=True) - 2.0 * (queries @ self.bank.T) + self.bank_sq.unsqueeze(0)
        values, indices = torch.topk(squared.clamp(min=0.0), self.num_nn, dim=1, largest=False)
        if self.euclidean:
            values = values.sqrt()
        patch_scores = values.mean(dim=1).reshape(-1, patches)  # [N, P]
        if self.reweighted:
            nearest = (values[:, 0] if self.euclidean else values[:, 0].sqrt()).reshape(-1, patches)
            best = nearest.argmax(dim=1, keepdim=True)  # [N, 1]: m^test,*
            s_star = nearest.gather(1, best).squeeze(1)
            test = features.gather(1, best.unsqueeze(-1).expand(-1, 1, dim)).squeeze(1)  # [N, D]
            anchor = indices[:, 0].reshape(-1, patches).gather(1, best).squeeze(1)  # [N]: m*
            support = self.bank[self.support[anchor]]  # [N, b + 1, D]
            distances = ((support - test.unsqueeze(1)) ** 2).sum(-1).sqrt()
            scores = (1.0 - torch.softmax(distances, dim=1)[:, 0]) * s_star
        else:
            scores = patch_scores.max(dim=1).values
        maps = anomaly_maps(patch_scores.reshape(-1, *self.grid), self.size, self.sigma)
        return scores, maps


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(f"the ONNX export needs the onnx package; {INSTALL_HINT}") from exc
    return onnx



def onnx_pipeline_bytes(model: PatchCore) -> bytes:
    """The serialised ONNX model of ``model``'s whole pipeline (traced on CPU, dynamic batch)."""
    _onnx()
    extractor = model.extractor
    saved_device = next(extractor.parameters()).device
    methods = [aggregation.method for aggregation in extractor.layer_aggregations]
    extractor.to("cpu")
    for aggregation in extractor.layer_aggregations:
        aggregation.method = "conv"  # the sparse (CSR) path does not trace; the convolution is the same sum
    try:
        graph = PipelineGraph(model).eval()
        example = torch.zeros(2, 3, model.config.imagesize, model.config.imagesize)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shapes (constant for a fixed imagesize)
            torch.onnx.export(graph, (example,), buffer,  # type: ignore[arg-type]  # a file object works
                              input_names=["image"], output_names=["score", "anomaly_map"],
                              dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "anomaly_map": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    finally:
        for aggregation, method in zip(extractor.layer_aggregations, methods):
            aggregation.method = method
        extractor.to(saved_device)
    return buffer.getvalue()


def with_metadata(graph: bytes, metadata: dict[str, Any]) -> bytes:
    """``graph`` (ONNX bytes) with ``metadata`` as its :data:`METADATA_KEY` property and this library as producer."""
    onnx = _onnx()
    proto = onnx.load_from_string(graph)
    proto.producer_name, proto.producer_version = "patchcore_lib", __version__
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, json.dumps(metadata, default=str))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()



def export_onnx_pipeline(model: PatchCore, out: str | os.PathLike, check_images: Sequence[Any], rtol: float = 1e-4,
                         show_progress: bool = False) -> dict[str, Any]:
    """Write ``model`` as one ONNX file at ``out`` (and its metadata at ``<out>.json``) after checking that every
    image of ``check_images`` (paths, PIL images or arrays) scores within ``rtol`` (relative) of the eager model in
    onnxruntime; returns the check record. Nothing is written when the check fails (ModelFileError)."""
    if isinstance(model, ExportedPatchCore) or not isinstance(model, PatchCore) or model.memory_bank is None:
        raise ConfigError("the ONNX export needs a fitted (eager) PatchCore model")
    if not len(check_images):
        raise ConfigError("export needs at least one image to compare the exported and the eager model on")
    bank_bytes = model.memory_bank.numel() * 4
    if bank_bytes > MAX_ONNX_BYTES:
        raise ConfigError(f"the memory bank ({bank_bytes / 1024 ** 3:.1f} GiB) does not fit into one ONNX file "
                          "(2 GiB); fit with a smaller --coreset-ratio or export --format onnx-bundle")
    start = time.perf_counter()
    config = model.config
    metadata: dict[str, Any] = {
        "format": ONNX_FORMAT, "preprocessing": preprocessing_record(config), "threshold": model.threshold,
        "config": config.to_dict(), "grid": list(model.extractor.feature_grid(config.imagesize)),
        "inputs": {"image": f"float32 [N, 3, {config.imagesize}, {config.imagesize}], preprocessed"},
        "outputs": {"score": "float32 [N]", "anomaly_map": f"float32 [N, {config.imagesize}, {config.imagesize}]"},
    }
    graph = onnx_pipeline_bytes(model)
    images = ImageList(list(check_images), config.resize, config.imagesize, crop=config.crop)
    eager = predict_over_dataset(model.predict, images, config.batch_size, config.imagesize, show_progress, CHECK_EAGER)
    exported_model = OnnxPipelineModel(with_metadata(graph, metadata), "<export check>")
    exported = predict_over_dataset(exported_model.predict, images, config.batch_size, config.imagesize, show_progress,
                                    CHECK_PIPELINE)
    differences = score_difference(eager.scores, exported.scores)
    worst = int(np.argmax(differences))
    map_scale = max(float(np.abs(eager.maps).max()), 1e-12)
    check: dict[str, Any] = {"num_images": len(images), "max_relative_difference": float(differences.max()),
             "max_absolute_difference": float(np.abs(eager.scores.astype(np.float64) - exported.scores).max()),
             "max_map_difference_relative_to_map_max": float(np.abs(eager.maps - exported.maps).max() / map_scale),
             "worst_image": eager.paths[worst], "rtol": rtol, "onnx_bytes": len(graph),
             "seconds": time.perf_counter() - start}
    if not check["max_relative_difference"] <= rtol:  # a NaN difference fails too
        raise ModelFileError(
            f"ONNX model not written: the score of {eager.paths[worst]} differs from the eager model's by "
            f"{check['max_relative_difference']:.3g} relative ({exported.scores[worst]:.6g} vs "
            f"{eager.scores[worst]:.6g}; tolerance {rtol:g})")
    metadata["check"] = check
    out = Path(out)
    atomic_write_bytes(out, with_metadata(graph, metadata))
    atomic_write_text(Path(f"{out}.json"), json.dumps(metadata, indent=2, default=str) + "\n")
    return check

