"""PaDiM (Defard et al., ICPR 2021) and OrthoAD (Kim et al., 2021): one Gaussian per feature-map position.

Both methods share everything except the channel reduction:

* features: the outputs of the backbone's first three feature stages (ResNets: ``layer1..layer3``;
  EfficientNet-Lite: ``blocks.1, blocks.2, blocks.4``, see ``BackboneSpec.gaussian_layers``), the coarser ones
  upsampled to the finest grid by *nearest-neighbour replication* -- exactly what PaDiM's
  ``embedding_concat`` (unfold/fold) and OrthoAD's ``F.interpolate(scale_factor=2/4)`` do -- and
  concatenated to D channels (1792 for WideResNet-50, 448 for ResNet-18, 176 for EfficientNet-Lite0);
* reduction: PaDiM keeps a seeded random subset of ``d`` channels (official code: d=100 for R18,
  d=550 for WR50); OrthoAD multiplies by a seeded random semi-orthogonal matrix W (D x k, W^T W = I,
  from the QR decomposition of a Gaussian matrix with the signs of diag(R) fixed, as
  ``torch.nn.init.orthogonal_``), k in {100, 300};
* fit: per position, the mean and covariance of the reduced features of the nominal images, plus
  ``epsilon * I`` (0.01, both official codes) -- the covariance uses the unbiased N-1 normaliser like
  PaDiM's ``np.cov``;
* predict: the Mahalanobis distance ``sqrt((x - mu)^T Sigma^-1 (x - mu))`` at every position,
  bilinearly upsampled to the image size and blurred with a Gaussian (sigma 4,
  :func:`patchcore_lib.components.anomaly_map.anomaly_maps`); the image score is the maximum of the map.

Memory (the reason this module does not copy the official code). PaDiM's code keeps every training
embedding (WR50, 209 images: 209 x 1792 x 56 x 56 float32 = 4.7 GB) and a float64 covariance array.
Here nothing per training image is kept:

1. *Streaming, numerically stable moments.* Per position we hold the running mean (float64, small) and
   the running centred scatter matrix ``M2 = sum (x - mean)(x - mean)^T`` (float32, P x k x k). Each
   batch is merged with Chan et al.'s pairwise update: the batch's own centred scatter plus the
   rank-one correction ``n_a n_b / n * delta delta^T``. Only centred quantities are summed, so float32
   does not suffer the cancellation of ``sum x x^T - n mean mean^T``. The update runs over chunks of
   positions (``position_chunk``), so temporaries stay small.
2. *In-place precision.* After the last batch each chunk of M2 is turned, in float64, into
   ``Sigma = M2 / (n - 1) + epsilon I``, inverted through its Cholesky factor, and written back as a
   float32 precision matrix *into the same buffer*: the peak is one P x k x k float32 array
   (WR50, 224 px, d=550: 56*56*550*550*4 B = 3.8 GB) plus chunk temporaries.
3. *Chunked distances.* Test distances are computed chunk of positions by chunk of positions with
   one batched matrix product, never materialising a per-pixel k x k product for all positions.
4. *Streaming save/load.* The model file is written straight to a temporary file (no in-memory copy
   of the whole payload) and renamed atomically; loading memory-maps the file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from patchcore_lib.version import __version__
from patchcore_lib.components.anomaly_map import anomaly_maps
from patchcore_lib.components.gaussian_stats import mahalanobis, random_channel_subset, semi_orthogonal_matrix
from patchcore_lib.components.backbones import FeatureExtractor
from patchcore_lib.data import make_loader
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.utils.files import atomic_torch_save
from patchcore_lib.utils.integrity import checksum_problem, seal
from patchcore_lib.detectors.base import (DETECTORS, Predictions, predict_images, predict_over_dataset,
                                          resolve_device, shared_settings, state_fingerprint)
from patchcore_lib.detectors.gaussian_config import GaussianADConfig
from patchcore_lib.detectors.patchcore import check_options

GAUSSIAN_FORMAT = "patchcore_lib.gaussian/1"
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- model
class GaussianAD:
    """Per-position Gaussian anomaly detector; :class:`PaDiM` and :class:`OrthoAD` fix ``method``.

    Same interface as :class:`patchcore_lib.detectors.patchcore.PatchCore`: ``fit``, ``predict``, ``predict_dataset``,
    ``save``, ``load``, ``timings``.
    """

    method: str | None = None  # fixed by subclasses
    options_class = GaussianADConfig
    file_format = GAUSSIAN_FORMAT

    @classmethod
    def make_config(cls, base: Any = None, **options: Any) -> GaussianADConfig:
        """``base`` (any detector's config, or None) with ``options`` (GaussianADConfig fields) applied;
        d, k and layers are method-specific, so they are only carried over from a config of the same method."""
        options = {k: v for k, v in options.items() if v is not None}
        allowed = {f.name for f in dataclasses.fields(GaussianADConfig)} - {"method"}
        check_options(options, allowed, cls.method or "GaussianAD")
        if isinstance(base, GaussianADConfig):
            settings = {k: v for k, v in base.to_dict().items() if k != "method"}
            if base.method != cls.method:
                settings.pop("d", None)
        else:
            settings = shared_settings(base)
        return GaussianADConfig(method=cls.method or "padim", **{**settings, **options})

    def __init__(self, config: GaussianADConfig | None = None, **overrides: Any) -> None:
        if config is None:
            if self.method is not None:
                overrides.setdefault("method", self.method)
            config = GaussianADConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if self.method is not None and config.method != self.method:
            raise ConfigError(f"{type(self).__name__} needs method={self.method!r}, got {config.method!r}")
        self.config = config
        self.device = resolve_device(config.device)
        log.debug("%s on %s: backbone %s, layers %s", type(self).__name__, self.device, config.backbone, config.layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # makes "random" backbone weights reproducible
            self.backbone = FeatureExtractor(config.backbone, config.layers, config.weights).to(self.device)
        total = config.total_channels
        self.channel_index: torch.Tensor | None = None  # PaDiM's kept channels
        self.projection: torch.Tensor | None = None  # OrthoAD's D x k matrix
        if config.method == "padim":
            self.channel_index = random_channel_subset(total, config.reduced_dim, config.seed)
        else:
            self.projection = semi_orthogonal_matrix(total, config.k, config.seed)
        self.mean: torch.Tensor | None = None  # [P, k] float32
        self.precision: torch.Tensor | None = None  # [P, k, k] float32
        self.grid: tuple[int, int] | None = None
        self.num_train = 0
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ features
    @property
    def memory_bank_size(self) -> int:
        """Number of stored Gaussians (one per feature-map position); 0 before fit."""
        return 0 if self.mean is None else int(self.mean.shape[0])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images [B, 3, S, S] -> reduced features [B, k, h, w] (float32) on the finest layer's grid.

        The reduction is applied to each layer on its native grid before upsampling (it is per-channel
        linear and commutes with upsampling), so the full D-channel map is never built.
        """
        images = images.to(self.device)
        maps = self.backbone(images)
        grid: tuple[int, int] | None = None
        total: torch.Tensor | None = None
        offset = 0
        for layer in self.config.layers or ():
            x = maps[layer].float()
            channels = x.shape[1]
            if grid is None:
                grid = (x.shape[-2], x.shape[-1])
            if self.projection is not None:
                weight = self.projection[offset:offset + channels].to(x.device)
                y = torch.einsum("bchw,ck->bkhw", x, weight)
            else:
                index = self.channel_index
                assert index is not None  # PaDiM's channel subset, set in __init__
                local = index[(index >= offset) & (index < offset + channels)] - offset
                y = x.index_select(1, local.to(x.device))
            offset += channels
            if (y.shape[-2], y.shape[-1]) != grid:
                if self.config.upsample == "nearest":
                    y = F.interpolate(y, size=grid, mode="nearest")
                else:
                    y = F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
            if self.projection is not None:
                total = y if total is None else total + y
            else:
                total = y if total is None else torch.cat([total, y], 1)
        if total is None or grid is None:
            raise ConfigError(f"{type(self).__name__}: no feature layers to embed (config.layers is empty)")
        return total.contiguous(), grid

    # ------------------------------------------------------------------ fit
    def _chunk(self, k: int) -> int:
        """Positions per chunk: at most ``position_chunk`` and about 32 MB of float64 k x k matrices."""
        return max(1, min(self.config.position_chunk, (32 << 20) // (8 * k * k)))

    def _batches(self, data: Any) -> tuple[Iterable, int | None]:
        if isinstance(data, torch.utils.data.Dataset):
            loader = make_loader(data, self.config.batch_size)
            return loader, len(loader)
        return data, (len(data) if hasattr(data, "__len__") else None)

    @torch.no_grad()
    def fit(self, data: Iterable[dict[str, Any]] | torch.utils.data.Dataset, show_progress: bool = True) -> "GaussianAD":
        """Estimate the per-position Gaussians from nominal images (dataset or loader of batches).

        Streaming: per batch the batch mean and centred scatter are merged into the running mean
        (float64) and scatter M2 (float32) with Chan's pairwise update, chunk of positions by chunk.
        Afterwards M2 is overwritten in place, chunk by chunk, with the float32 precision matrix
        ``(M2 / (n - 1) + epsilon I)^-1`` computed in float64 through a Cholesky factorisation.
        """
        start = time.perf_counter()
        k = self.config.reduced_dim
        chunk = self._chunk(k)
        loader, total_batches = self._batches(data)
        mean: torch.Tensor | None = None  # running mean [P, k] float64
        scatter: torch.Tensor | None = None  # running scatter M2 [P, k, k] float32
        n = 0
        for batch in tqdm(loader, total=total_batches, desc=f"Fitting {self.config.method} Gaussians",
                          disable=not show_progress, leave=False):
            images = batch["image"] if isinstance(batch, dict) else batch
            features, grid = self.embed(images)
            b = features.shape[0]
            x = features.flatten(2).permute(2, 0, 1)  # [P, B, k]
            positions = x.shape[0]
            if mean is None or scatter is None:
                self.grid = grid
                mean = torch.zeros(positions, k, dtype=torch.float64, device=x.device)
                scatter = torch.zeros(positions, k, k, dtype=torch.float32, device=x.device)
            elif grid != self.grid:
                raise ConfigError(f"feature grid {grid} differs from the first batch's {self.grid}: "
                                  "all training images must have the same size")
            batch_mean = x.double().mean(1)  # [P, k]
            delta = batch_mean - mean
            n_new = n + b
            for p0 in range(0, positions, chunk):
                p1 = min(p0 + chunk, positions)
                centred = x[p0:p1] - batch_mean[p0:p1].unsqueeze(1).float()  # [c, B, k]
                if n > 0:  # Chan's correction n_a n_b / n * delta delta^T, as one extra weighted row
                    correction = (delta[p0:p1] * (n * b / n_new) ** 0.5).float().unsqueeze(1)
                    centred = torch.cat([centred, correction], 1)
                scatter[p0:p1].baddbmm_(centred.transpose(1, 2), centred)
            mean += delta * (b / n_new)
            n = n_new
        if mean is None or scatter is None:
            raise ConfigError("no images to fit on")
        extracted = time.perf_counter()
        eye = torch.eye(k, dtype=torch.float64, device=scatter.device)
        positions = scatter.shape[0]
        for p0 in tqdm(range(0, positions, chunk), desc="Inverting covariances", disable=not show_progress,
                       leave=False):
            p1 = min(p0 + chunk, positions)
            cov = scatter[p0:p1].double().div_(max(n - 1, 1)).add_(eye, alpha=self.config.epsilon)
            factor, info = torch.linalg.cholesky_ex(cov)  # reads the lower triangle only
            if bool((info != 0).any()):
                precision = torch.linalg.inv(cov)
            else:
                del cov
                precision = torch.cholesky_inverse(factor)
            del factor
            scatter[p0:p1] = precision.add_(precision.transpose(1, 2).clone()).mul_(0.5)
            del precision
        self.mean = mean.float()
        self.precision = scatter
        self.num_train = n
        end = time.perf_counter()
        self.timings.update(extract_seconds=extracted - start, invert_seconds=end - extracted,
                            fit_seconds=end - start)
        return self

    # ------------------------------------------------------------------ predict
    def _require_fitted(self) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(mean, precision, grid) of the fitted model; ConfigError before fit() or load()."""
        if self.mean is None or self.precision is None or self.grid is None:
            raise ConfigError("the model is not fitted: call fit() or load() first")
        return self.mean, self.precision, self.grid

    @torch.no_grad()
    def distance_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Reduced features [B, k, h, w] -> Mahalanobis distance maps [B, h, w] (chunked over positions)."""
        fitted_mean, precision, fitted_grid = self._require_fitted()
        b, k, h, w = features.shape
        if (h, w) != fitted_grid:
            raise ConfigError(f"feature grid {(h, w)} differs from the fitted grid {self.grid}: predict with "
                              f"imagesize {self.config.imagesize} as at fit time")
        x = features.flatten(2).permute(2, 0, 1)  # [P, B, k]
        out = torch.empty(x.shape[0], b, dtype=torch.float32, device=x.device)
        chunk = self._chunk(k)
        mean = fitted_mean.to(x.device)
        for p0 in range(0, x.shape[0], chunk):
            p1 = min(p0 + chunk, x.shape[0])
            out[p0:p1] = mahalanobis(x[p0:p1], mean[p0:p1], precision[p0:p1].to(x.device))
        return out.T.reshape(b, h, w)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] (preprocessed) -> (scores [B], maps [B, S, S]) as CPU tensors."""
        self._require_fitted()
        if images.ndim == 3:
            images = images.unsqueeze(0)
        features, _ = self.embed(images)
        distances = self.distance_maps(features)
        maps = anomaly_maps(distances, (images.shape[-2], images.shape[-1]), self.config.sigma)
        scores = maps.flatten(1).max(1).values
        return scores.float().cpu(), maps.float().cpu()

    @torch.no_grad()
    def predict_images(self, images: list[Any], show_progress: bool = False) -> Predictions:
        """Scores and maps of images given as paths, PIL images or arrays (see detectors.base.predict_images)."""
        return predict_images(self, images, show_progress)

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> Predictions:
        """Scores, maps, masks and labels for every image of ``dataset`` (an MVTecDataset test split)."""
        self._require_fitted()
        predictions = predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                           show_progress)
        self.timings["predict_seconds"] = predictions.seconds
        return predictions

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write config, Gaussians (mean, float32 precision), reduction and backbone fingerprint atomically."""
        mean, precision, grid = self._require_fitted()
        payload = {
            "format": GAUSSIAN_FORMAT,
            "library_version": __version__,
            "config": self.config.to_dict(),
            "grid": list(grid),
            "num_train": int(self.num_train),
            "mean": mean.detach().cpu(),
            "precision": precision.detach().cpu(),
            "channel_index": self.channel_index,
            "projection": self.projection,
            "backbone_fingerprint": state_fingerprint(self.backbone),
        }
        return atomic_torch_save(seal(payload), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, backbone: str | None = None) -> "GaussianAD":
        """Load a saved PaDiM/OrthoAD model; errors name the file when it is missing, truncated, foreign,
        of another method, or fitted with another backbone or other backbone weights."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        try:
            if not zipfile.is_zipfile(path):
                raise ValueError("not a torch zip archive")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ModelFileError(f"model file {path} is truncated or not a patchcore_lib model "
                                 f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != GAUSSIAN_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ModelFileError(f"model file {path} has format {found!r}; {cls.__name__}.load reads "
                                 f"{GAUSSIAN_FORMAT!r} (PaDiM/OrthoAD models; load PatchCore models with "
                                 "PatchCore.load or patchcore_lib.detectors.load_detector)")
        if checksum_problem(payload) is not None:
            raise ModelFileError(f"model file {path} cannot be used: {checksum_problem(payload)}; re-fit the model")
        try:
            config = GaussianADConfig.from_dict(payload["config"])
        except (KeyError, TypeError, ConfigError) as exc:
            raise ModelFileError(f"model file {path} has an invalid configuration: {exc}") from exc
        if cls.method is not None and config.method != cls.method:
            raise ModelFileError(f"model file {path} holds a {config.method!r} model, not {cls.method!r}")
        if backbone is not None and backbone != config.backbone:
            raise ModelFileError(f"model file {path} was fitted with backbone {config.backbone!r}, not {backbone!r}")
        if device is not None:
            config = dataclasses.replace(config, device=device)
        target = {"padim": PaDiM, "orthoad": OrthoAD}[config.method] if cls.method is None else cls
        model = target(config)
        if state_fingerprint(model.backbone) != payload.get("backbone_fingerprint"):
            raise ModelFileError(f"model file {path}: the {config.backbone} weights found on this machine differ "
                                 "from those the model was fitted with; scores would be wrong")
        mean, precision = payload.get("mean"), payload.get("precision")
        k = config.reduced_dim
        grid = tuple(payload.get("grid", ()))
        if (not isinstance(mean, torch.Tensor) or not isinstance(precision, torch.Tensor) or len(grid) != 2
                or mean.shape != (grid[0] * grid[1], k) or precision.shape != (grid[0] * grid[1], k, k)):
            raise ModelFileError(f"model file {path}: Gaussian parameters do not match its config (k={k})")
        if not bool(torch.isfinite(mean).all() and torch.isfinite(precision).all()):
            raise ModelFileError(f"model file {path}: the Gaussian parameters hold NaN or infinite values")
        stored = payload.get("projection") if config.method == "orthoad" else payload.get("channel_index")
        current = model.projection if config.method == "orthoad" else model.channel_index
        if current is None:
            raise ModelFileError(f"model file {path}: its config has no channel reduction for {config.method!r}")
        if not isinstance(stored, torch.Tensor) or not torch.equal(stored, current):
            # keep the stored reduction: it is what the Gaussians were estimated with
            if not isinstance(stored, torch.Tensor) or stored.shape != current.shape:
                raise ModelFileError(f"model file {path}: stored channel reduction does not match its config")
            if config.method == "orthoad":
                model.projection = stored
            else:
                model.channel_index = stored
        model.mean = mean.to(model.device)
        model.precision = precision.to(model.device)
        model.grid = (int(grid[0]), int(grid[1]))
        model.num_train = int(payload.get("num_train", 0))
        return model


@DETECTORS.register("padim")
class PaDiM(GaussianAD):
    """PaDiM: random channel subset (d), per-position Gaussian, Mahalanobis distance."""

    method = "padim"
    method_options = ("d", "layers", "epsilon", "upsample", "position_chunk")
    option_prefix = "padim"


@DETECTORS.register("orthoad")
class OrthoAD(GaussianAD):
    """OrthoAD: semi-orthogonal projection (D x k), per-position Gaussian, Mahalanobis distance."""

    method = "orthoad"
    method_options = ("k", "layers", "epsilon", "upsample", "position_chunk")
    option_prefix = "orthoad"
