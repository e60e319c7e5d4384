"""Notebook 08 (ablations), what its sections share: the backbone's stage outputs of a split, extracted once
and kept in the store, aggregated into patch features for any patch size, stride and layer set without
running the backbone again, and one scoring path (exact or IVF-PQ search) that also returns the nearest
memory-bank entry of every test patch.

The aggregation is :class:`~patchcore_lib.components.features.PatchFeatureExtractor`'s own after its backbone
pass (:func:`~patchcore_lib.components.features.aggregate_stage_maps`); ``tests/test_ablations.py`` checks that
the two give the same features.

Hierarchy levels: the paper's levels 1, 2, 3 are WideResNet-50's ``layer1..layer3`` (strides 4, 8, 16); for
another backbone they are the registry's equivalent stages, :attr:`BackboneSpec.gaussian_layers` (the three
stages PaDiM / OrthoAD use; efficientnet_lite0: ``blocks.1``, ``blocks.2``, ``blocks.4``), so the default
layers of PatchCore are "2+3" on both backbones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from patchcore_lib.components.anomaly_map import anomaly_maps
from patchcore_lib.components.backbones import FeatureExtractor, get_spec
from patchcore_lib.components.features import SparseAggregation, aggregate_stage_maps, aggregation_kernels
from patchcore_lib.components.sampling import make_sampler
from patchcore_lib.data import dataset_fingerprint, make_loader, open_split
from patchcore_lib.detectors import PatchCoreConfig, state_fingerprint
from patchcore_lib.errors import ConfigError
from patchcore_lib.evaluation.metrics import image_auroc, pixel_auroc
from patchcore_lib.study.cached_features import extraction_code, feature_store
from patchcore_lib.study.cached_scoring import SplitTargets, split_targets
from patchcore_lib.utils.store import content_key

#: the paper's neighbourhood sizes p (Sec. 4.4.1, Fig. 4) and hierarchy-level sets
PATCH_SIZES = (1, 3, 5, 7, 9)
LEVEL_SETS = ("1", "2", "3", "1+2", "2+3", "1+2+3")
#: (patch size, stride) of the aggregation-vs-stride section: the default, no aggregation, strided patches
STRIDE_SETTINGS = ((3, 1), (1, 1), (1, 2), (3, 2), (3, 3))
STAGE_MAPS = "stage_maps"


def level_layers(backbone: str) -> dict[str, str]:
    """Hierarchy level ("1", "2", "3") -> the backbone's layer name (see the module docstring)."""
    return dict(zip(("1", "2", "3"), get_spec(backbone).gaussian_layers))


def layers_of(levels: str, backbone: str) -> tuple[str, ...]:
    """``"1+2"`` -> the backbone's layers of levels 1 and 2, in network order."""
    mapping = level_layers(backbone)
    return tuple(mapping[level] for level in levels.split("+"))


@dataclass
class StageMaps:
    """Backbone outputs of the train and test split, {layer: [N, C, h, w]} float32 on CPU, the test targets,
    the config they were extracted with, and whether each split came from the store."""

    config: PatchCoreConfig
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    targets: SplitTargets
    cached: dict[str, bool]
    seconds: dict[str, float] = field(default_factory=dict)


def _split_maps(extractor: FeatureExtractor, config: PatchCoreConfig, params: dict[str, Any], split: str,
                dataset: Any) -> tuple[dict[str, torch.Tensor], bool, float]:
    """Stage outputs of one split from the store, else computed (one backbone pass) and stored."""
    store = feature_store(params.get("cache_dir"))
    settings = {k: config.feature_key()[k] for k in ("backbone", "weights", "resize", "imagesize", "crop", "seed",
                                                    "precision")}
    key = content_key(STAGE_MAPS, code=extraction_code(), data=dataset_fingerprint(params["data_root"],
                                                                                   params["category"]),
                      params={"category": params["category"], "split": split, "layers": list(extractor.layers),
                              **settings, "backbone_fingerprint": state_fingerprint(extractor)})
    entry = store.load_tensors(STAGE_MAPS, key)
    if entry is not None and all(isinstance(entry.get(layer), torch.Tensor) for layer in extractor.layers):
        return {layer: entry[layer] for layer in extractor.layers}, True, 0.0
    start = time.perf_counter()
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in extractor.layers}
    with torch.no_grad():
        for batch in tqdm(make_loader(dataset, config.batch_size), desc=f"Backbone stages ({split})", leave=False):
            for layer, value in extractor(batch["image"]).items():
                chunks[layer].append(value.float().cpu())
    maps = {layer: torch.cat(values) for layer, values in chunks.items()}
    store.save_tensors(STAGE_MAPS, key, maps, value={"category": params["category"], "split": split})
    return maps, False, time.perf_counter() - start


def extract_stage_maps(params: dict[str, Any], config: PatchCoreConfig) -> StageMaps:
    """The stage outputs of hierarchy levels 1-3 and of ``config``'s layers for both splits (one backbone pass
    per split, kept in the store: a second run, or another notebook 08 run with other dimensions, patch sizes or
    coreset ratios, reads them back)."""
    layers = tuple(dict.fromkeys(level_layers(config.backbone).values())) + tuple(config.layers or ())
    extractor = FeatureExtractor(config.backbone, layers, config.weights)
    out: dict[str, Any] = {}
    cached, seconds = {}, {}
    for split in ("train", "test"):
        dataset = open_split(params["data_root"], params["category"], split, config.resize, config.imagesize,
                             crop=config.crop)
        out[split], cached[split], seconds[split] = _split_maps(extractor, config, params, split, dataset)
        if split == "test":
            targets = split_targets(dataset)
    return StageMaps(config, out["train"], out["test"], targets, cached, seconds)


def aggregate(maps: dict[str, torch.Tensor], layers: Sequence[str], channels: Sequence[int], patch_size: int,
              stride: int, pretrain_dim: int, target_dim: int, batch: int = 16
              ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch features [N, h*w, T] of stage outputs ``maps`` for ``layers`` (their ``channels``), in batches of
    images: :func:`~patchcore_lib.components.features.aggregate_stage_maps`, as PatchFeatureExtractor after its
    backbone pass; returns (features, grid)."""
    kernels = aggregation_kernels(list(channels), patch_size, pretrain_dim, target_dim, dtype=torch.float64)
    aggregations = [SparseAggregation(k.reshape(k.shape[0], -1), c, patch_size, stride)
                    for k, c in zip(kernels, channels)]
    count = len(maps[layers[0]])
    out: torch.Tensor | None = None
    grid = (0, 0)
    for start in range(0, count, batch):
        features, grid = aggregate_stage_maps({layer: maps[layer][start:start + batch] for layer in layers}, layers,
                                              aggregations, target_dim)
        if out is None:
            out = torch.empty(count, *features.shape[1:])
        out[start:start + len(features)] = features
    if out is None:
        raise ConfigError(f"no images in the stage outputs of {', '.join(layers)}")
    return out, grid


def variant_features(stage: StageMaps, layers: Sequence[str], patch_size: int, stride: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(train [N, h*w, T], test [M, h*w, T], grid) of one aggregation variant of ``stage``'s config."""
    spec, config = get_spec(stage.config.backbone), stage.config
    layers = tuple(sorted(layers, key=list(spec.layers).index))
    channels = [spec.layers[layer][0] for layer in layers]
    dims = (int(config.pretrain_embed_dimension or 0), int(config.target_embed_dimension or 0))  # set by the config
    train, grid = aggregate(stage.train, layers, channels, patch_size, stride, *dims)
    test, _ = aggregate(stage.test, layers, channels, patch_size, stride, *dims)
    return train, test, grid


def select_bank(train: torch.Tensor, config: PatchCoreConfig, ratio: float, seed: int) -> torch.Tensor:
    """Memory bank [K, D] of train features [N, h*w, D]: ``config.sampler`` at ``ratio`` with ``seed`` (1.0: all)."""
    flat = train.reshape(-1, train.shape[-1])
    if ratio >= 1.0:
        return flat
    sampler = make_sampler(config.sampler, ratio, seed=int(seed), device="cpu", show_progress=False)
    return flat[sampler.select(flat)].contiguous()


@dataclass
class SearchResult:
    """Scores [N], maps [N, H, W], nearest distances [N, h*w] (the search's distance) and nearest bank indices
    [N, h*w] of the test patches, with index and search seconds."""

    scores: np.ndarray
    maps: np.ndarray
    distances: torch.Tensor
    indices: torch.Tensor
    index_seconds: float
    search_seconds: float


def search_and_score(search: Any, bank: torch.Tensor, test: torch.Tensor, grid: tuple[int, int],
                     image_size: tuple[int, int], sigma: float, chunk_images: int = 16) -> SearchResult:
    """Index ``bank`` with ``search`` (NearestNeighbourSearch or IVFPQSearch, k = 1), query every test patch
    and score as ``PatchCore.score_features`` with ``score="max"`` and k = 1: image score = the largest
    nearest distance, map = the distance grid upsampled and blurred (``sigma``)."""
    start = time.perf_counter()
    search.fit(bank)
    index_seconds = time.perf_counter() - start
    n, per_image, dim = test.shape
    distances = torch.empty(n, per_image)
    indices = torch.empty(n, per_image, dtype=torch.long)
    start = time.perf_counter()
    for first in range(0, n, chunk_images):
        d, i = search.query(test[first:first + chunk_images].reshape(-1, dim))
        distances[first:first + chunk_images] = d[:, 0].reshape(-1, per_image)
        indices[first:first + chunk_images] = i[:, 0].reshape(-1, per_image)
    search_seconds = time.perf_counter() - start
    scores = distances.max(dim=1).values.numpy()
    maps = anomaly_maps(distances.reshape(n, *grid), image_size, sigma).numpy()
    return SearchResult(scores, maps, distances, indices, index_seconds, search_seconds)


def auroc_metrics(targets: SplitTargets, result: SearchResult) -> dict[str, float]:
    """Image and pixel AUROC (fractions; pixel AUROC NaN without defect masks)."""
    has_defects = bool(targets.masks.any())
    return {"image_auroc": image_auroc(targets.labels, result.scores),
            "pixel_auroc": pixel_auroc(targets.masks, result.maps) if has_defects else float("nan")}
