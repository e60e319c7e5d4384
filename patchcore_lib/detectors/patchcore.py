"""PatchCore: fit a memory bank of nominal patch features, predict image scores and anomaly maps."""
from __future__ import annotations

import copy
import dataclasses
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sized

import torch
from tqdm.auto import tqdm

from patchcore_lib.version import __version__
from patchcore_lib.components.anomaly_map import anomaly_maps
from patchcore_lib.components.backbones import check_layers, get_spec
from patchcore_lib.data import IMAGENET_MEAN, IMAGENET_STD, make_loader
from patchcore_lib.detectors.base import (DETECTORS, Predictions, check_geometry, predict_images, predict_over_dataset,
                                         resolve_device, shared_option, shared_settings, state_fingerprint)
from patchcore_lib.detectors.threshold import ThresholdOptions, calibrate, checked_threshold_record
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.components.features import PRECISIONS, PatchFeatureExtractor
from patchcore_lib.utils.files import atomic_torch_save
from patchcore_lib.utils.integrity import CHECKSUM_KEY, checksum_problem, seal
from patchcore_lib.utils.schema import check_fields, config_dict, config_from_dict, option
from patchcore_lib.components.knn import BACKENDS, DISTANCES, NearestNeighbourSearch
from patchcore_lib.components.knn_ivfpq import OFFICIAL_IVFPQ, IVFPQSearch
from patchcore_lib.components.sampling import SAMPLERS, make_sampler
from patchcore_lib.components.scoring import SCORE_MODES, image_and_patch_scores

MODEL_FORMAT = "patchcore_lib.model/1"
log = logging.getLogger(__name__)


#: nearest-neighbour searches (:func:`make_search`): exact, or approximate FAISS IVF-PQ
KNN_SEARCHES = ("exact", "ivfpq")

#: the PatchCoreConfig fields the feature extractor is built from: a copy that shares the extractor
#: (:meth:`PatchCore.with_bank`) cannot change them
EXTRACTOR_FIELDS = ("backbone", "layers", "weights", "patch_size", "patch_stride", "pretrain_embed_dimension",
                    "target_embed_dimension", "precision", "device")


@dataclass
class PatchCoreConfig:
    """Every setting of a PatchCore model, declared once: CLI options and notebook-parameter checks derive
    from these fields (help, choices, ranges in :func:`~patchcore_lib.utils.schema.option`).
    ``None`` dimensions/layers mean the backbone's defaults."""

    backbone: str = shared_option("backbone", "feature backbone (efficientnet_lite0 works offline)")
    layers: tuple[str, ...] | None = option(None, "feature layers (default: the backbone's)", metavar="L")
    weights: str | None = shared_option("weights", "backbone weights file, or 'random' (default: hub cache / package)")
    resize: int = shared_option("resize")
    imagesize: int = shared_option("imagesize")
    crop: str = shared_option("crop")
    patch_size: int = option(3, "neighbourhood size p of the local patch aggregation", minimum=1)
    patch_stride: int = option(1, "stride s of the patch grid (paper Eq. 3; s > 1 keeps every s-th position per "
                               "axis, the paper's ablation)", minimum=1)
    pretrain_embed_dimension: int | None = option(None, "per-layer pooled dimension (default: the backbone's)",
                                                  minimum=1)
    target_embed_dimension: int | None = option(None, "patch feature dimension (default: the backbone's)",
                                                minimum=1)
    sampler: str = option("approx_greedy", "memory-bank subsampling", choices=SAMPLERS.names)
    coreset_ratio: float = option(0.1, "fraction of patch features kept in the memory bank",
                                  exclusive_minimum=0.0, maximum=1.0)
    num_nn: int = option(1, "k nearest neighbours averaged into a patch score", minimum=1)
    score: str = option("max", "image score: max patch score or the paper's Eq. 7 re-weighting",
                        choices=SCORE_MODES)
    reweight_neighbourhood: int = option(3, "b of the paper's Eq. 7: neighbours of m* besides m* itself "
                                         "(anomalib's num_neighbors = b + 1; the paper gives no value)", minimum=1)
    distance: str = option("sqeuclidean", "patch distance of the anomaly maps", choices=DISTANCES)
    sigma: float = shared_option("sigma")
    knn_backend: str = option("auto", "exact nearest-neighbour search backend", choices=BACKENDS)
    knn_search: str = option("exact", "nearest-neighbour search: exact, or ivfpq (approximate FAISS IVF-PQ, the "
                             "paper's Table 5; needs faiss)", choices=KNN_SEARCHES)
    ivf_nlist: int = option(OFFICIAL_IVFPQ["nlist"], "ivfpq: number of inverted lists (official 512)", minimum=1)
    pq_m: int = option(OFFICIAL_IVFPQ["m"], "ivfpq: sub-quantisers per vector, must divide the feature dimension "
                       "(official 64)", minimum=1)
    pq_nbits: int = option(OFFICIAL_IVFPQ["nbits"], "ivfpq: bits per sub-quantiser code (official 8)", minimum=1,
                           maximum=16)
    ivf_nprobe: int = option(OFFICIAL_IVFPQ["nprobe"], "ivfpq: lists searched per query (official: FAISS's default 1)",
                             minimum=1)
    batch_size: int = shared_option("batch_size")
    seed: int = shared_option("seed", "seed of the coreset (and of random backbone weights)")
    device: str = shared_option("device")
    precision: str = option("float32", "backbone forward precision: exact float32, tf32 (CUDA tensor cores), or "
                            "bfloat16/float16 autocast; features, coreset and kNN stay float32",
                            choices=PRECISIONS)

    def __post_init__(self) -> None:
        check_fields(self)
        spec = get_spec(self.backbone)
        self.layers = check_layers(spec, tuple(self.layers) if self.layers else spec.default_layers)
        pre, tgt = spec.embed_dims
        self.pretrain_embed_dimension = int(self.pretrain_embed_dimension or pre)
        self.target_embed_dimension = int(self.target_embed_dimension or tgt)
        check_geometry(self)
        if self.knn_search == "ivfpq" and self.target_embed_dimension % self.pq_m:
            raise ConfigError(f"pq_m ({self.pq_m}) must divide target_embed_dimension ({self.target_embed_dimension})")
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatchCoreConfig":
        return config_from_dict(cls, data)

    def feature_key(self) -> dict[str, Any]:
        """The settings that determine the extracted patch features (cache key material)."""
        return {k: self.to_dict()[k] for k in ("backbone", "layers", "weights", "resize", "imagesize", "crop",
                                               "patch_size", "patch_stride", "pretrain_embed_dimension", "target_embed_dimension",
                                               "seed", "precision")}


def make_search(config: PatchCoreConfig) -> NearestNeighbourSearch | IVFPQSearch:
    """The nearest-neighbour search of ``config``: exact (FAISS flat or torch) or approximate IVF-PQ."""
    if config.knn_search == "ivfpq":
        return IVFPQSearch(config.num_nn, config.distance, config.ivf_nlist, config.pq_m, config.pq_nbits,
                           config.ivf_nprobe)
    return NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend)


def check_options(options: dict[str, Any], allowed: set[str], method: str) -> None:
    """ConfigError naming the options ``method`` does not know."""
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"unknown {method} option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(allowed))}")


@DETECTORS.register("patchcore")
class PatchCore:
    """PatchCore anomaly detector (Roth et al., CVPR 2022)."""

    options_class = PatchCoreConfig
    method_options: tuple[str, ...] = ()  # every PatchCoreConfig field is a top-level option
    option_prefix = "patchcore"
    file_format = MODEL_FORMAT

    @classmethod
    def make_config(cls, base: Any = None, **options: Any) -> PatchCoreConfig:
        """``base`` (any detector's config, or None) with ``options`` (PatchCoreConfig fields) applied."""
        options = {k: v for k, v in options.items() if v is not None}
        check_options(options, {f.name for f in dataclasses.fields(PatchCoreConfig)}, "PatchCore")
        if isinstance(base, PatchCoreConfig):
            return dataclasses.replace(base, **options) if options else base
        return PatchCoreConfig(**{**shared_settings(base), **options})

    @property
    def memory_bank_size(self) -> int:
        """Number of stored patch features; 0 before fit."""
        return 0 if self.memory_bank is None else int(len(self.memory_bank))

    def __init__(self, config: PatchCoreConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = PatchCoreConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # makes "random" backbone weights reproducible
            self.extractor = PatchFeatureExtractor(config.backbone, config.layers, config.patch_size,
                                                   config.pretrain_embed_dimension, config.target_embed_dimension,
                                                   weights=config.weights, patch_stride=config.patch_stride,
                                                   precision=config.precision).to(self.device)
        log.debug("PatchCore on %s: backbone %s, layers %s", self.device, config.backbone, config.layers)
        self.search = make_search(config)
        self.memory_bank: torch.Tensor | None = None
        self.threshold: dict[str, Any] | None = None  # the calibrated threshold record (detectors/threshold.py)
        self.timings: dict[str, float] = {}

    def with_bank(self, bank: torch.Tensor | None = None, **changes: Any) -> "PatchCore":
        """A copy with the config fields ``changes`` applied (re-validated), sharing this model's feature
        extractor, with its own nearest-neighbour search and no memory bank, threshold or timings; this model
        is left untouched. With ``bank`` [M, D], the copy is fitted on exactly that memory bank (identity
        sampler, ratio 1.0). Fields that build the extractor (:data:`EXTRACTOR_FIELDS`) cannot change."""
        if bank is not None:
            fixed = {"sampler", "coreset_ratio"} & set(changes)
            if fixed:
                raise ConfigError(f"with_bank(bank, ...) keeps the bank as given (identity sampler, ratio 1.0); "
                                  f"drop {', '.join(sorted(fixed))}")
            changes = {**changes, "sampler": "identity", "coreset_ratio": 1.0}
        config = dataclasses.replace(self.config, **changes)
        changed = [name for name in EXTRACTOR_FIELDS if getattr(config, name) != getattr(self.config, name)]
        if changed:
            raise ConfigError(f"with_bank shares the feature extractor, so {', '.join(changed)} cannot change; "
                              "build a new PatchCore instead")
        clone = copy.copy(self)
        clone.config = config
        clone.search = make_search(config)
        clone.memory_bank = None
        clone.threshold, clone.timings = None, {}
        return clone if bank is None else clone.fit(bank, show_progress=False)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images [B, 3, S, S] -> (patch features [B, h*w, D] on self.device, grid (h, w))."""
        return self.extractor(images.to(self.device, non_blocking=True))

    @torch.no_grad()
    def extract_features(self, data: Iterable[dict[str, Any]] | torch.utils.data.Dataset,
                         show_progress: bool = True, desc: str = "Extracting features") -> torch.Tensor:
        """Patch features of every image of a dataset/loader: [N_images * h * w, D] (preallocated, no copies)."""
        loader = make_loader(data, self.config.batch_size) if isinstance(data, torch.utils.data.Dataset) else data
        chunks: list[torch.Tensor] = []
        out: torch.Tensor | None = None
        dataset = getattr(loader, "dataset", None)  # a DataLoader's: its size preallocates the features
        total_images = len(dataset) if isinstance(dataset, Sized) else None
        position = 0
        for batch in tqdm(loader, desc=desc, disable=not show_progress, leave=False):
            images = batch["image"] if isinstance(batch, dict) else batch
            features, _ = self.embed(images)
            flat = features.reshape(-1, features.shape[-1])
            if total_images is not None:
                if out is None:
                    per_image = features.shape[1]
                    out = torch.empty(total_images * per_image, flat.shape[1], device=flat.device)
                out[position:position + len(flat)] = flat
                position += len(flat)
            else:
                chunks.append(flat)
        if out is not None:
            return out[:position]
        if not chunks:
            raise ConfigError("no images to extract features from")
        return torch.cat(chunks)

    # ------------------------------------------------------------------ fit
    def fit(self, data: Iterable[dict[str, Any]] | torch.utils.data.Dataset | torch.Tensor,
            show_progress: bool = True, calibration: ThresholdOptions | None = None) -> "PatchCore":
        """Build the memory bank from nominal images (dataset, loader, or precomputed features [N, D]); with
        ``calibration``, also calibrate :attr:`threshold` out of fold on the same features."""
        start = time.perf_counter()
        features = data.to(self.device) if isinstance(data, torch.Tensor) else self.extract_features(data, show_progress)
        extracted = time.perf_counter()
        sampler = make_sampler(self.config.sampler, self.config.coreset_ratio, seed=self.config.seed,
                               device=self.device, show_progress=show_progress)
        indices = sampler.select(features)
        self.memory_bank = features[indices.to(features.device)].contiguous()
        if calibration is None or not calibration.calibration_folds:
            del features
        selected = time.perf_counter()
        self.search.fit(self.memory_bank)
        end = time.perf_counter()
        self.timings.update(extract_seconds=extracted - start, coreset_seconds=selected - extracted,
                            index_seconds=end - selected, fit_seconds=end - start)
        log.debug("memory bank of %d features; coreset selected in %.2f s", self.memory_bank_size, selected - extracted)
        self.threshold = None  # a threshold of another memory bank is stale
        if calibration is not None and calibration.calibration_folds:
            self.calibrate(features, calibration, show_progress)
        return self

    def calibrate(self, data: torch.utils.data.Dataset | torch.Tensor, options: ThresholdOptions | None = None,
                  show_progress: bool = True) -> dict[str, Any]:
        """Calibrate :attr:`threshold` out of fold on normal images (a dataset, or their patch features
        [N_images * h * w, D] in image order); returns the threshold record (see detectors/threshold.py)."""
        options = options or ThresholdOptions()
        start = time.perf_counter()
        features = data if isinstance(data, torch.Tensor) else self.extract_features(data, show_progress)
        grid = self.extractor.feature_grid(self.config.imagesize)
        per_image = grid[0] * grid[1]
        if features.ndim != 2 or len(features) % per_image:
            raise ConfigError(f"calibration needs patch features [N * {per_image}, D], got {tuple(features.shape)}")
        self.threshold = calibrate(self, features.reshape(-1, per_image, features.shape[-1]), grid, options,
                                   show_progress)
        self.timings["calibration_seconds"] = time.perf_counter() - start
        return self.threshold

    # ------------------------------------------------------------------ predict
    def _require_fitted(self) -> torch.Tensor:
        if self.memory_bank is None:
            raise ConfigError("the model is not fitted: call fit() or load() first")
        return self.memory_bank

    @torch.no_grad()
    def score_features(self, features: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features [B, h*w, D] -> (image scores [B], anomaly maps [B, H, W]) on CPU."""
        self._require_fitted()
        scores, patch_scores = image_and_patch_scores(self.search, features, self.config.score, self.config.distance,
                                                      self.config.reweight_neighbourhood)
        maps = anomaly_maps(patch_scores.reshape(features.shape[0], *grid), image_size, self.config.sigma)
        return scores.float().cpu(), maps.float().cpu()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] (preprocessed) -> (scores [B], maps [B, S, S]) as CPU tensors."""
        self._require_fitted()
        if images.ndim == 3:
            images = images.unsqueeze(0)
        features, grid = self.embed(images)
        return self.score_features(features, grid, (images.shape[-2], images.shape[-1]))

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> Predictions:
        """Scores, maps, masks and labels for every image of ``dataset`` (an MVTecDataset test split)."""
        self._require_fitted()
        predictions = predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                           show_progress)
        self.timings["predict_seconds"] = predictions.seconds
        return predictions

    def predict_images(self, images: list[Any], show_progress: bool = False) -> Predictions:
        """Scores [N] and maps [N, S, S] of images given as paths, PIL images or arrays (preprocessed with the
        model's own resize / imagesize); ``paths`` holds the file names (``<image i>`` for in-memory images)."""
        return predict_images(self, images, show_progress)

    # ------------------------------------------------------------------ save / load
    def state(self) -> dict[str, Any]:
        """Config, memory bank (cpu) and backbone fingerprint: what a model file holds."""
        bank = self._require_fitted()
        return {"config": self.config.to_dict(), "memory_bank": bank.detach().cpu(),
                "backbone_fingerprint": state_fingerprint(self.extractor.backbone), "threshold": self.threshold,
                "preprocessing": preprocessing_record(self.config)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write config, memory bank and a backbone fingerprint to ``path`` (atomically)."""
        payload = {"format": MODEL_FORMAT, "library_version": __version__, **self.state()}
        return atomic_torch_save(seal(payload), path)

    @classmethod
    def from_state(cls, state: dict[str, Any], path: Path, device: str | None = None,
                   backbone: str | None = None) -> "PatchCore":
        """A fitted model from :meth:`state`'s dict; ModelFileError naming ``path`` when it does not fit."""
        bank = state.get("memory_bank") if isinstance(state, dict) else None
        if not isinstance(bank, torch.Tensor) or not bank.is_floating_point():
            raise ModelFileError(f"model file {path}: the memory bank is a {type(bank).__name__}, not a float tensor")
        if not isinstance(state.get("config"), dict) or not isinstance(state.get("backbone_fingerprint"), str):
            raise ModelFileError(f"model file {path}: config or backbone fingerprint missing or of the wrong type")
        if not bool(torch.isfinite(bank).all()):
            raise ModelFileError(f"model file {path}: the memory bank holds {int((~torch.isfinite(bank)).sum())} "
                                 "NaN or infinite values; scores would be meaningless")
        try:
            config = PatchCoreConfig.from_dict(state["config"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFileError(f"model file {path} has an invalid configuration: {exc}") from exc
        if backbone is not None and backbone != config.backbone:
            raise ModelFileError(f"model file {path} was fitted with backbone {config.backbone!r}, not {backbone!r}")
        if device is not None:
            config = dataclasses.replace(config, device=device)
        model = cls(config)
        if state_fingerprint(model.extractor.backbone) != state["backbone_fingerprint"]:
            raise ModelFileError(f"model file {path}: the {config.backbone} weights found on this machine differ "
                                 "from those the model was fitted with; scores would be wrong")
        if state.get("preprocessing", preprocessing_record(config)) != preprocessing_record(config):
            raise ModelFileError(f"model file {path}: its preprocessing {state['preprocessing']} differs from this "
                                 f"version's {preprocessing_record(config)}; re-fit the model")
        if bank.ndim != 2 or bank.shape[1] != config.target_embed_dimension:
            raise ModelFileError(f"model file {path}: memory bank shape {tuple(bank.shape)} does not match its config")
        model.memory_bank = bank.to(model.device)
        model.search.fit(model.memory_bank)
        model.threshold = checked_threshold_record(state.get("threshold"), path)
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, backbone: str | None = None) -> "PatchCore":
        """Load a saved model; errors name the file when it is truncated, foreign, or of another backbone."""
        path = Path(path)
        return cls.from_state(read_model_file(path, MODEL_FORMAT), path, device, backbone)


def preprocessing_record(config: PatchCoreConfig) -> dict[str, Any]:
    """How images are prepared for a model: short side resized + centre crop (or the whole image resized to a
    square, ``crop="none"``), ImageNet mean / std."""
    return {"resize": config.resize, "imagesize": config.imagesize, "crop": config.crop,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def read_model_file(path: Path, expected_format: str) -> dict[str, Any]:
    """The payload dict of a model file of ``expected_format``; one ModelFileError naming the file otherwise."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"model file {path} is truncated or not a patchcore_lib model ({type(exc).__name__}: {exc})") from exc
    if isinstance(payload, dict) and CHECKSUM_KEY in payload:  # damage first: a flipped bit may hit the format
        problem = checksum_problem(payload)
        if problem is not None:
            raise ModelFileError(f"model file {path} is damaged ({problem}); re-fit or copy it again")
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"model file {path} has format {found!r}; this version reads {expected_format!r} "
                             "(re-fit the model with this version)")
    problem = checksum_problem(payload)
    if problem is not None:
        raise ModelFileError(f"model file {path} cannot be used: {problem}; re-fit the model")
    return payload
