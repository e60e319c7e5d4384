"""Ensembles of PatchCore members (e.g. several backbones, as in the paper's WR101/ResNeXt101/DN201 run).

Each member keeps its own memory bank. Member scores live on different scales; two fusions put them on one:

* ``official`` (the official code, used by the reproduction presets): over the whole test set, each member's
  image scores are min-max normalised, and separately its anomaly maps with the minimum and maximum over all
  pixels of all its test maps; the ensemble's score and map are the means over members. It needs every test
  image, so only :meth:`PatchCoreEnsemble.predict_dataset` offers it; ``predict`` on a batch raises.
* ``standardised`` (for deployment, where test images arrive one at a time): after fitting, each member
  scores a few training images and the mean / standard deviation of those anomaly-map pixels become its
  offset / scale for both scores and maps; the means over members of the standardised values are returned,
  by ``predict`` and ``predict_dataset`` alike.

The members share every PatchCore setting but the backbone and its layers, including the embedding
dimensions: the official ensemble runs use 1024 -> 384 (``params/ensemble_im320.yaml`` sets them).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Sequence, Sized, cast

import numpy as np
import torch

from patchcore_lib.version import __version__
from patchcore_lib.components.backbones import BACKBONES
from patchcore_lib.data import make_loader
from patchcore_lib.detectors.base import DETECTORS, Predictions, predict_images, predict_over_dataset, shared_settings
from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig, check_options, read_model_file
from patchcore_lib.errors import ConfigError, ModelFileError
from patchcore_lib.utils.files import atomic_torch_save
from patchcore_lib.utils.integrity import seal
from patchcore_lib.utils.schema import check_fields, option

PAPER_ENSEMBLE_BACKBONES = ("wide_resnet101_2", "resnext101_32x8d", "densenet201")
ENSEMBLE_FORMAT = "patchcore_lib.ensemble/1"
FUSIONS = ("standardised", "official")
#: the ensemble defaults, shared by its options, its configuration and its constructor
DEFAULT_FUSION = "standardised"
DEFAULT_CALIBRATION_IMAGES = 8


def minmax_fusion(scores: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official ensemble fusion. scores [M, N] and maps [M, N, H, W] of M members over N test images ->
    (scores [N], maps [N, H, W]): each member's scores scaled by (s - min) / (max - min) over its N scores, its
    maps by the min / max over all its N*H*W pixels, then the mean over members. A member whose values are all
    equal contributes zeros (the official code would divide by zero)."""
    def normalise(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(len(values), -1).astype(np.float64)
        low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        return ((flat - low) / span).reshape(values.shape)

    return normalise(scores).mean(0).astype(np.float32), normalise(maps).mean(0).astype(np.float32)


@dataclasses.dataclass
class EnsembleOptions:
    """The ensemble's own options (the members share every other PatchCore setting)."""

    backbones: tuple[str, ...] = option(PAPER_ENSEMBLE_BACKBONES, "one PatchCore member per backbone, each with "
                                        "its default layers (at least two)", choices=BACKBONES.names,
                                        metavar="NAME")
    calibration_images: int = option(DEFAULT_CALIBRATION_IMAGES, "nominal images that standardise each member "
                                     "(fusion standardised)", minimum=1)
    fusion: str = option(DEFAULT_FUSION, "official: min-max over the whole test set, as the official code "
                         "(evaluation only); standardised: statistics of nominal images, works image by image",
                         choices=FUSIONS)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """The members' configurations (same image geometry), the calibration size and the fusion."""

    members: tuple[PatchCoreConfig, ...]
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    method: str = "patchcore_ensemble"
    fusion: str = DEFAULT_FUSION

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least two member configurations, got {len(self.members)}")
        geometry = {(c.resize, c.imagesize, c.crop) for c in self.members}
        if len(geometry) != 1:
            raise ConfigError(f"ensemble members must share resize/imagesize/crop, got {sorted(geometry)}")
        if isinstance(self.calibration_images, bool) or not isinstance(self.calibration_images, int) \
                or self.calibration_images < 1:
            raise ConfigError(f"calibration_images must be a positive integer, got {self.calibration_images!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown ensemble fusion {self.fusion!r}; valid: {', '.join(FUSIONS)}")

    @classmethod
    def from_backbones(cls, base: PatchCoreConfig, backbones: Sequence[str],
                       calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                       fusion: str = DEFAULT_FUSION) -> "EnsembleConfig":
        """One member per backbone: ``base``'s settings (embedding dimensions included) with that backbone
        and its default layers."""
        if isinstance(backbones, str) or len(backbones) < 2:
            raise ConfigError(f"an ensemble needs at least two backbones, got {backbones!r}")
        members = tuple(dataclasses.replace(base, backbone=name, layers=None) for name in backbones)
        return cls(members, calibration_images, fusion=fusion)

    # the shared settings, read by evaluation and prediction code like a PatchCoreConfig's
    resize = property(lambda self: self.members[0].resize)
    imagesize = property(lambda self: self.members[0].imagesize)
    crop = property(lambda self: self.members[0].crop)
    batch_size = property(lambda self: self.members[0].batch_size)
    backbone = property(lambda self: "+".join(c.backbone for c in self.members))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "calibration_images": self.calibration_images, "fusion": self.fusion,
                "backbone": self.backbone, "imagesize": self.imagesize, "resize": self.resize,
                **{key: getattr(self.members[0], key) for key in ("coreset_ratio", "sampler", "patch_size", "num_nn",
                                                                  "score", "seed")},
                "members": [c.to_dict() for c in self.members]}


@DETECTORS.register("patchcore_ensemble")
class PatchCoreEnsemble:
    """Several PatchCore members sharing the image geometry; ``predict`` -> (scores [B], maps [B, S, S])."""

    options_class = EnsembleOptions
    method_options = ("backbones", "calibration_images", "fusion")
    option_prefix = "ensemble"
    file_format = ENSEMBLE_FORMAT

    @classmethod
    def make_config(cls, base: Any = None, **options: Any) -> EnsembleConfig:
        """Members from ``base`` (a PatchCore or ensemble config, or None) and the ensemble options."""
        options = {k: v for k, v in options.items() if v is not None}
        check_options(options, set(cls.method_options), "patchcore_ensemble")
        if isinstance(base, EnsembleConfig) and not options:
            return base
        member = base.members[0] if isinstance(base, EnsembleConfig) else base
        if not isinstance(member, PatchCoreConfig):
            member = PatchCoreConfig(**shared_settings(member))
        chosen = EnsembleOptions(**options)
        return EnsembleConfig.from_backbones(member, chosen.backbones, chosen.calibration_images, chosen.fusion)

    def __init__(self, configs: Sequence[PatchCoreConfig] | EnsembleConfig,
                 calibration_images: int = DEFAULT_CALIBRATION_IMAGES, fusion: str = DEFAULT_FUSION) -> None:
        if not isinstance(configs, EnsembleConfig):
            configs = EnsembleConfig(tuple(configs), calibration_images, fusion=fusion)
        self.config = configs
        self.members = [PatchCore(c) for c in configs.members]
        self.calibration_images = configs.calibration_images
        configs = configs.members
        self.offsets = torch.zeros(len(configs))
        self.scales = torch.ones(len(configs))
        self.timings: dict[str, float] = {}
        self.memory_bank_size = 0

    def fit(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> "PatchCoreEnsemble":
        """Fit every member on the nominal images, then (fusion standardised) calibrate each member's scale
        on the first ``calibration_images`` of them."""
        start = time.perf_counter()
        standardised = self.config.fusion == "standardised"
        count = len(cast(Sized, dataset))  # a map-style dataset (torch's Dataset declares no __len__)
        calibration = next(iter(make_loader(dataset, min(self.calibration_images, count))))["image"] \
            if standardised else None
        for index, member in enumerate(self.members):
            member.fit(dataset, show_progress=show_progress)
            if calibration is not None:
                _, maps = member.predict(calibration)
                self.offsets[index] = maps.mean()
                self.scales[index] = maps.std().clamp_min(1e-12)
        self.memory_bank_size = sum(m.memory_bank_size for m in self.members)
        self.timings["fit_seconds"] = time.perf_counter() - start
        return self

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the members' standardised image scores [B] and anomaly maps [B, S, S] (fusion standardised;
        the official fusion needs the whole test set: ConfigError, use :meth:`predict_dataset`)."""
        if self.config.fusion != "standardised":
            raise ConfigError("this ensemble uses fusion 'official', which min-max normalises each member over the "
                              "whole test set: call predict_dataset(test_split), or build the ensemble with "
                              "fusion='standardised' to score single images")
        scores, maps = [], []
        for index, member in enumerate(self.members):
            member_scores, member_maps = member.predict(images)
            scores.append((member_scores - self.offsets[index]) / self.scales[index])
            maps.append((member_maps - self.offsets[index]) / self.scales[index])
        return torch.stack(scores).mean(0), torch.stack(maps).mean(0)

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> Predictions:
        """Scores, maps, masks and labels of every image of ``dataset``, fused as ``config.fusion`` says
        (official: :func:`minmax_fusion` of the members' raw predictions, kept in ``extra``)."""
        if self.config.fusion == "standardised":
            predictions = predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                               show_progress)
        else:
            members = [predict_over_dataset(m.predict, dataset, self.config.batch_size, self.config.imagesize,
                                            show_progress) for m in self.members]
            scores, maps = minmax_fusion(np.stack([p.scores for p in members]), np.stack([p.maps for p in members]))
            first = members[0]
            predictions = Predictions(scores, maps, first.masks, first.labels, first.defect_types, first.paths,
                                      sum(p.seconds for p in members),
                                      extra={"member_scores": np.stack([p.scores for p in members])})
        self.timings["predict_seconds"] = predictions.seconds
        return predictions

    def predict_images(self, images: list[Any], show_progress: bool = False) -> Predictions:
        """Scores and maps of images given as paths, PIL images or arrays (see detectors.base.predict_images)."""
        return predict_images(self, images, show_progress)

    def member_predictions(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Raw (unstandardised) predictions of each member, for analysis."""
        return [member.predict(images) for member in self.members]

    def save(self, path: str | os.PathLike) -> Path:
        """Every member's state, offsets and scales in one file (atomically)."""
        if any(m.memory_bank is None for m in self.members):
            raise ConfigError("the ensemble is not fitted: call fit() first")
        payload = {"format": ENSEMBLE_FORMAT, "library_version": __version__,
                   "calibration_images": self.calibration_images, "fusion": self.config.fusion,
                   "members": [m.state() for m in self.members],
                   "offsets": self.offsets.clone(), "scales": self.scales.clone()}
        return atomic_torch_save(seal(payload), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, backbone: str | None = None
             ) -> "PatchCoreEnsemble":
        """Load a saved ensemble; errors name the file (see :meth:`PatchCore.from_state`)."""
        path = Path(path)
        payload = read_model_file(path, ENSEMBLE_FORMAT)
        try:
            members = [PatchCore.from_state(state, path, device) for state in payload["members"]]
            offsets, scales = payload["offsets"].float(), payload["scales"].float()
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"model file {path}: not a valid ensemble ({type(exc).__name__}: {exc})") from exc
        if not bool(torch.isfinite(offsets).all() and torch.isfinite(scales).all() and (scales > 0).all()):
            raise ModelFileError(f"model file {path}: calibration offsets/scales are not finite and positive")
        if len(members) < 2 or offsets.shape != (len(members),) or scales.shape != (len(members),):
            raise ModelFileError(f"model file {path}: member count and calibration do not match")
        ensemble = cls(EnsembleConfig(tuple(m.config for m in members), int(payload.get("calibration_images", 8)),
                                      fusion=str(payload.get("fusion", "standardised"))))
        if backbone is not None and backbone != ensemble.config.backbone:
            raise ModelFileError(f"model file {path} holds an ensemble of {ensemble.config.backbone}, not {backbone!r}")
        ensemble.members = members
        ensemble.offsets, ensemble.scales = offsets, scales
        ensemble.memory_bank_size = sum(m.memory_bank_size for m in members)
        return ensemble
