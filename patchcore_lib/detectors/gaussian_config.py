"""The configuration of PaDiM / OrthoAD (:class:`GaussianADConfig`) and its defaults; the model is in
:mod:`patchcore_lib.detectors.gaussian`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patchcore_lib.components.backbones import check_layers, get_spec
from patchcore_lib.detectors.base import check_geometry, resolve_device, shared_option
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.schema import check_fields, config_dict, config_from_dict, option

GAUSSIAN_METHODS = ("padim", "orthoad")
UPSAMPLE_MODES = ("nearest", "bilinear")

#: PaDiM's official number of randomly kept channels (others: min(100, D)).
PADIM_DEFAULT_D: dict[str, int] = {"resnet18": 100, "wide_resnet50_2": 550}


def default_padim_layers(backbone: str) -> tuple[str, ...]:
    """The backbone's first three feature stages (PaDiM's layer1..layer3 or their equivalent)."""
    return get_spec(backbone).gaussian_layers


@dataclass
class GaussianADConfig:
    """Settings of a PaDiM / OrthoAD model, declared once (CLI options and notebook checks derive from them).
    ``layers=None`` means :func:`default_padim_layers`; ``d=None`` means :data:`PADIM_DEFAULT_D` (or min(100, D))."""

    method: str = option("padim", "padim or orthoad", choices=GAUSSIAN_METHODS, cli=False)
    backbone: str = shared_option("backbone")
    layers: tuple[str, ...] | None = option(None, "feature layers (default: the backbone's first three stages)",
                                            metavar="L")
    weights: str | None = shared_option("weights")
    resize: int = shared_option("resize")
    imagesize: int = shared_option("imagesize")
    crop: str = shared_option("crop")
    d: int | None = option(None, "PaDiM: number of randomly kept channels (default: 100 for resnet18, 550 for "
                                 "wide_resnet50_2, else min(100, D))", minimum=1)
    k: int = option(100, "OrthoAD: rank of the semi-orthogonal projection", minimum=1)
    epsilon: float = option(0.01, "covariance regulariser epsilon * I", exclusive_minimum=0.0)
    sigma: float = shared_option("sigma")
    upsample: str = option("nearest", "upsampling of coarser layers to the finest grid", choices=UPSAMPLE_MODES)
    batch_size: int = shared_option("batch_size")
    position_chunk: int = option(128, "feature-map positions processed at once", minimum=1)
    seed: int = shared_option("seed", "seed of the channel subset / projection")
    device: str = shared_option("device")

    def __post_init__(self) -> None:
        check_fields(self)
        spec = get_spec(self.backbone)
        self.layers = check_layers(spec, tuple(self.layers) if self.layers else default_padim_layers(self.backbone))
        total = self.total_channels
        if self.d is None:
            self.d = min(PADIM_DEFAULT_D.get(self.backbone, 100), total)
        if self.method == "padim" and self.d > total:
            raise ConfigError(f"PaDiM d={self.d} exceeds the {total} channels of {self.backbone} "
                              f"layers {', '.join(self.layers)}")
        if self.method == "orthoad" and self.k > total:
            raise ConfigError(f"OrthoAD k={self.k} exceeds the {total} channels of {self.backbone} "
                              f"layers {', '.join(self.layers)}; a semi-orthogonal D x k matrix needs k <= D")
        check_geometry(self)
        resolve_device(self.device)

    @property
    def total_channels(self) -> int:
        spec = get_spec(self.backbone)
        return sum(int(spec.layers[layer][0]) for layer in self.layers or ())

    @property
    def reduced_dim(self) -> int:
        """Dimension of the modelled features: d (PaDiM) or k (OrthoAD)."""
        dim = self.d if self.method == "padim" else self.k
        assert dim is not None  # d is set by __post_init__
        return int(dim)

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GaussianADConfig":
        return config_from_dict(cls, data)
