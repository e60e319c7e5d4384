"""PatchCore: fit a memory bank of nominal patch features, predict image scores and anomaly maps."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .anomaly_map import anomaly_maps
from .backbones import get_spec, check_layers
from .data import make_loader
from .errors import ConfigError, ModelFileError
from .features import PatchFeatureExtractor
from .io_utils import atomic_torch_save
from .knn import DISTANCES, NearestNeighbourSearch
from .sampling import SAMPLER_NAMES, make_sampler
from .scoring import SCORE_MODES, image_scores_max, image_scores_reweighted, patch_scores_from_distances

MODEL_FORMAT = "patchcore_lib.model/1"


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
class PatchCoreConfig:
    """Every setting of a PatchCore model. ``None`` dimensions/layers mean the backbone's defaults."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] | None = None
    weights: str | None = None  # explicit weights file, "random", or None (registry resolution)
    resize: int = 256
    imagesize: int = 224
    patch_size: int = 3
    pretrain_embed_dimension: int | None = None
    target_embed_dimension: int | None = None
    sampler: str = "approx_greedy"
    coreset_ratio: float = 0.1
    num_nn: int = 1
    score: str = "max"
    reweight_neighbourhood: int = 3
    distance: str = "sqeuclidean"
    sigma: float = 4.0
    knn_backend: str = "auto"
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        spec = get_spec(self.backbone)
        self.layers = check_layers(spec, tuple(self.layers) if self.layers else spec.default_layers)
        pre, tgt = spec.embed_dims
        self.pretrain_embed_dimension = int(self.pretrain_embed_dimension or pre)
        self.target_embed_dimension = int(self.target_embed_dimension or tgt)
        for name in ("resize", "imagesize", "patch_size", "batch_size", "num_nn", "reweight_neighbourhood",
                     "pretrain_embed_dimension", "target_embed_dimension"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.imagesize > self.resize:
            raise ConfigError(f"imagesize ({self.imagesize}) must not exceed resize ({self.resize})")
        min_size = 2 * max(spec.layers[layer][1] for layer in self.layers)
        if self.imagesize < min_size:
            raise ConfigError(f"imagesize {self.imagesize} is too small for {self.backbone} layers "
                              f"{', '.join(self.layers)}: it needs at least {min_size} px")
        if self.sampler not in SAMPLER_NAMES:
            raise ConfigError(f"unknown sampler {self.sampler!r}; valid samplers: {', '.join(SAMPLER_NAMES)}")
        if isinstance(self.coreset_ratio, bool) or not isinstance(self.coreset_ratio, (int, float)) \
                or not 0 < self.coreset_ratio <= 1:
            raise ConfigError(f"coreset ratio must be in (0, 1], got {self.coreset_ratio!r}")
        if self.score not in SCORE_MODES:
            raise ConfigError(f"unknown score {self.score!r}; valid: {', '.join(SCORE_MODES)}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"unknown distance {self.distance!r}; valid: {', '.join(DISTANCES)}")
        if not isinstance(self.sigma, (int, float)) or self.sigma < 0:
            raise ConfigError(f"sigma must be a number >= 0, got {self.sigma!r}")
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatchCoreConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "layers" and v is not None else v) for k, v in data.items() if k in known})

    def feature_key(self) -> dict[str, Any]:
        """The settings that determine the extracted patch features (cache key material)."""
        return {k: self.to_dict()[k] for k in ("backbone", "layers", "weights", "resize", "imagesize", "patch_size",
                                               "pretrain_embed_dimension", "target_embed_dimension", "seed")}


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


class PatchCore:
    """PatchCore anomaly detector (Roth et al., CVPR 2022)."""

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
                                                   weights=config.weights).to(self.device)
        self.search = NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend)
        self.memory_bank: torch.Tensor | None = None
        self.timings: dict[str, float] = {}

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
        total_images = len(loader.dataset) if hasattr(loader, "dataset") else None
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
            show_progress: bool = True) -> "PatchCore":
        """Build the memory bank from nominal images (dataset, loader, or precomputed features [N, D])."""
        start = time.perf_counter()
        features = data.to(self.device) if isinstance(data, torch.Tensor) else self.extract_features(data, show_progress)
        extracted = time.perf_counter()
        sampler = make_sampler(self.config.sampler, self.config.coreset_ratio, seed=self.config.seed,
                               device=self.device, show_progress=show_progress)
        indices = sampler.select(features)
        self.memory_bank = features[indices.to(features.device)].contiguous()
        del features
        selected = time.perf_counter()
        self.search.fit(self.memory_bank)
        end = time.perf_counter()
        self.timings.update(extract_seconds=extracted - start, coreset_seconds=selected - extracted,
                            index_seconds=end - selected, fit_seconds=end - start)
        return self

    # ------------------------------------------------------------------ predict
    def _require_fitted(self) -> None:
        if self.memory_bank is None:
            raise ConfigError("the model is not fitted: call fit() or load() first")

    @torch.no_grad()
    def score_features(self, features: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features [B, h*w, D] -> (image scores [B], anomaly maps [B, H, W]) on CPU."""
        self._require_fitted()
        batch, per_image, dim = features.shape
        distances, indices = self.search.query(features.reshape(-1, dim))
        patch_scores = patch_scores_from_distances(distances).reshape(batch, per_image)
        if self.config.score == "max":
            scores = image_scores_max(patch_scores)
        else:
            scores = image_scores_reweighted(patch_scores, features, indices[:, 0].reshape(batch, per_image),
                                             self.search, self.config.reweight_neighbourhood)
        maps = anomaly_maps(patch_scores.reshape(batch, *grid), image_size, self.config.sigma)
        return scores.float().cpu(), maps.float().cpu()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] (preprocessed) -> (scores [B], maps [B, S, S]) as CPU tensors."""
        self._require_fitted()
        if images.ndim == 3:
            images = images.unsqueeze(0)
        features, grid = self.embed(images)
        return self.score_features(features, grid, tuple(images.shape[-2:]))

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> Predictions:
        """Scores, maps, masks and labels for every image of ``dataset`` (an MVTecDataset test split)."""
        self._require_fitted()
        predictions = predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                           show_progress)
        self.timings["predict_seconds"] = predictions.seconds
        return predictions

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write config, memory bank and a backbone fingerprint to ``path`` (atomically)."""
        self._require_fitted()
        payload = {
            "format": MODEL_FORMAT,
            "library_version": __version__,
            "config": self.config.to_dict(),
            "memory_bank": self.memory_bank.detach().cpu(),
            "backbone_fingerprint": state_fingerprint(self.extractor.backbone),
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, backbone: str | None = None) -> "PatchCore":
        """Load a saved model; errors name the file when it is truncated, foreign, or of another backbone."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        try:
            payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"model file {path} is truncated or not a patchcore_lib model ({type(exc).__name__}: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ModelFileError(f"model file {path} has format {found!r}; this version reads {MODEL_FORMAT!r} "
                                 "(re-fit the model with this version)")
        config = PatchCoreConfig.from_dict(payload["config"])
        if backbone is not None and backbone != config.backbone:
            raise ModelFileError(f"model file {path} was fitted with backbone {config.backbone!r}, "
                                 f"not {backbone!r}")
        if device is not None:
            config = dataclasses.replace(config, device=device)
        model = cls(config)
        fingerprint = state_fingerprint(model.extractor.backbone)
        if fingerprint != payload["backbone_fingerprint"]:
            raise ModelFileError(f"model file {path}: the {config.backbone} weights found on this machine differ "
                                 "from those the model was fitted with; scores would be wrong")
        bank = payload["memory_bank"]
        if bank.ndim != 2 or bank.shape[1] != config.target_embed_dimension:
            raise ModelFileError(f"model file {path}: memory bank shape {tuple(bank.shape)} does not match its config")
        model.memory_bank = bank.to(model.device)
        model.search.fit(model.memory_bank)
        return model
