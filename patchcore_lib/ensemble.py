"""Ensembles of PatchCore members (e.g. several backbones, as in the paper's WR101/ResNeXt101/DN201 run).

Each member keeps its own memory bank. Member scores live on different scales, so each member is
standardised with statistics of nominal data: after fitting, a member scores a few training images and
the mean / standard deviation of those anomaly-map pixels become its offset / scale. The ensemble's image
score and map are the means of the standardised member scores and maps. (The official code instead
min-max normalises each member over the whole test set, which needs all test images at once; ours scores
single images the same way at any time.)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch

from .data import make_loader
from .errors import ConfigError
from .model import PatchCore, PatchCoreConfig, Predictions, predict_over_dataset

PAPER_ENSEMBLE_BACKBONES = ("wide_resnet101_2", "resnext101_32x8d", "densenet201")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """The members' configurations (same image geometry) and the calibration size."""

    members: tuple[PatchCoreConfig, ...]
    calibration_images: int = 8
    method: str = "patchcore_ensemble"

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least two member configurations, got {len(self.members)}")
        geometry = {(c.resize, c.imagesize) for c in self.members}
        if len(geometry) != 1:
            raise ConfigError(f"ensemble members must share resize/imagesize, got {sorted(geometry)}")
        if isinstance(self.calibration_images, bool) or not isinstance(self.calibration_images, int) \
                or self.calibration_images < 1:
            raise ConfigError(f"calibration_images must be a positive integer, got {self.calibration_images!r}")

    @classmethod
    def from_backbones(cls, base: PatchCoreConfig, backbones: Sequence[str], calibration_images: int = 8
                       ) -> "EnsembleConfig":
        """One member per backbone: ``base``'s settings with that backbone and its default layers."""
        if isinstance(backbones, str) or len(backbones) < 2:
            raise ConfigError(f"an ensemble needs at least two backbones, got {backbones!r}")
        members = tuple(dataclasses.replace(base, backbone=name, layers=None) for name in backbones)
        return cls(members, calibration_images)

    # the shared settings, read by evaluation and prediction code like a PatchCoreConfig's
    resize = property(lambda self: self.members[0].resize)
    imagesize = property(lambda self: self.members[0].imagesize)
    batch_size = property(lambda self: self.members[0].batch_size)
    backbone = property(lambda self: "+".join(c.backbone for c in self.members))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "calibration_images": self.calibration_images,
                "backbone": self.backbone, "imagesize": self.imagesize, "resize": self.resize,
                **{key: getattr(self.members[0], key) for key in ("coreset_ratio", "sampler", "patch_size", "num_nn",
                                                                  "score", "seed")},
                "members": [c.to_dict() for c in self.members]}


class PatchCoreEnsemble:
    """Several PatchCore members sharing the image geometry; ``predict`` -> (scores [B], maps [B, S, S])."""

    def __init__(self, configs: Sequence[PatchCoreConfig] | EnsembleConfig, calibration_images: int = 8) -> None:
        if not isinstance(configs, EnsembleConfig):
            configs = EnsembleConfig(tuple(configs), calibration_images)
        self.config = configs
        self.members = [PatchCore(c) for c in configs.members]
        self.calibration_images = configs.calibration_images
        configs = configs.members
        self.offsets = torch.zeros(len(configs))
        self.scales = torch.ones(len(configs))
        self.timings: dict[str, float] = {}
        self.memory_bank_size = 0

    def fit(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> "PatchCoreEnsemble":
        """Fit every member on the nominal images, then calibrate each member's scale on them."""
        start = time.perf_counter()
        calibration = next(iter(make_loader(dataset, min(self.calibration_images, len(dataset)))))["image"]
        for index, member in enumerate(self.members):
            member.fit(dataset, show_progress=show_progress)
            _, maps = member.predict(calibration)
            self.offsets[index] = maps.mean()
            self.scales[index] = maps.std().clamp_min(1e-12)
        self.memory_bank_size = sum(len(m.memory_bank) for m in self.members)
        self.timings["fit_seconds"] = time.perf_counter() - start
        return self

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the members' standardised image scores [B] and anomaly maps [B, S, S]."""
        scores, maps = [], []
        for index, member in enumerate(self.members):
            member_scores, member_maps = member.predict(images)
            scores.append((member_scores - self.offsets[index]) / self.scales[index])
            maps.append((member_maps - self.offsets[index]) / self.scales[index])
        return torch.stack(scores).mean(0), torch.stack(maps).mean(0)

    def predict_dataset(self, dataset: torch.utils.data.Dataset, show_progress: bool = True) -> Predictions:
        predictions = predict_over_dataset(self.predict, dataset, self.config.batch_size, self.config.imagesize,
                                           show_progress)
        self.timings["predict_seconds"] = predictions.seconds
        return predictions

    def member_predictions(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Raw (unstandardised) predictions of each member, for analysis."""
        return [member.predict(images) for member in self.members]

    def save(self, path: Any) -> None:
        raise ConfigError("saving an ensemble is not supported; save each member (ensemble.members[i].save(path))")
