"""Notebook 01 (feature extraction): inputs, layer shapes, receptive fields, the feature cache, PCA of
patch features and memory-bank sizes."""
from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from patchcore_lib.components.sampling import num_selected
from patchcore_lib.detectors import PatchCore
from patchcore_lib.errors import ConfigError
from patchcore_lib.study.cached_features import load_features
from patchcore_lib.study.display import draw_contour, percent_axis, plain_log_axis


# ============================================================================ inputs
def pick_examples(dataset: Any, per_type: int = 1) -> list[int]:
    """Indices of the first ``per_type`` images of every defect type (``good`` first)."""
    chosen: dict[str, list[int]] = {}
    for index, defect in enumerate(dataset.defect_types):
        if len(chosen.setdefault(defect, [])) < per_type:
            chosen[defect].append(index)
    order = sorted(chosen, key=lambda d: (d != "good", d))
    return [i for d in order for i in chosen[d]]


def plot_sample_grid(train: Any, test: Any, num_train: int = 4) -> Any:
    """Row 1: training (nominal) images; row 2: one test image per defect type with its mask contour."""
    test_idx = pick_examples(test)
    train_idx = list(range(min(num_train, len(train))))
    cols = max(len(train_idx), len(test_idx))
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for col, index in enumerate(train_idx):
        item = train[index]
        axes[0, col].imshow(train.preprocess.denormalise(item["image"]))
        axes[0, col].set_title(f"train #{index}", fontsize=9)
    for col, index in enumerate(test_idx):
        item = test[index]
        axes[1, col].imshow(test.preprocess.denormalise(item["image"]))
        draw_contour(axes[1, col], item["mask"][0].numpy())
        axes[1, col].set_title(f"test: {item['defect_type']}", fontsize=9)
    fig.suptitle(f"{train.category}: nominal training images (top), test images with ground-truth contour "
                 f"in red (bottom), {train.preprocess.imagesize} px")
    fig.tight_layout()
    return fig


def layer_shape_table(model: PatchCore) -> pd.DataFrame:
    """Per backbone layer: channels, stride, grid, patch dim C*p*p; last row the aggregated patch feature."""
    config = model.config
    extractor = model.extractor
    dummy = torch.zeros(1, 3, config.imagesize, config.imagesize, device=model.device)
    with torch.no_grad():
        maps = extractor.backbone(dummy)
    p = config.patch_size
    rows = []
    for layer, channels, stride in zip(extractor.layers, extractor.backbone.channels, extractor.backbone.strides):
        h, w = maps[layer].shape[-2:]
        rows.append({"layer": layer, "channels": channels, "stride": stride, "grid": f"{h}x{w}",
                     "patch_size": p, "patch_dim (C*p*p)": channels * p * p,
                     "pooled_dim": config.pretrain_embed_dimension})
    features, grid = model.embed(dummy)
    rows.append({"layer": "patch feature (all layers)", "channels": features.shape[-1],
                 "stride": extractor.backbone.strides[0], "grid": f"{grid[0]}x{grid[1]}", "patch_size": p,
                 "patch_dim (C*p*p)": sum(c * p * p for c in extractor.backbone.channels),
                 "pooled_dim": config.target_embed_dimension})
    return pd.DataFrame(rows)


# ============================================================================ receptive fields
def _features_with_grad(extractor: Any, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """PatchFeatureExtractor.forward without its ``no_grad`` decorator (same computation)."""
    forward = inspect.unwrap(type(extractor).forward)
    return forward(extractor, images)


def effective_receptive_field(extractor: Any, images: torch.Tensor, location: tuple[int, int] | None = None
                              ) -> np.ndarray:
    """Empirical receptive field of one patch feature: |d sum(feature) / d input|, summed over RGB,
    averaged over ``images`` [B, 3, S, S], normalised to max 1 -> [S, S].

    ``location`` (row, col) on the feature grid defaults to the centre patch.
    """
    x = images.detach().clone().to(next(iter(extractor.buffers())).device).requires_grad_(True)
    with torch.enable_grad():
        features, grid = _features_with_grad(extractor, x)
        row, col = location if location is not None else (grid[0] // 2, grid[1] // 2)
        if not (0 <= row < grid[0] and 0 <= col < grid[1]):
            raise ConfigError(f"location {(row, col)} is outside the {grid[0]}x{grid[1]} feature grid")
        if not features.requires_grad:
            raise RuntimeError("patch features carry no gradient: cannot compute the receptive field")
        features[:, row * grid[1] + col].sum().backward()
    if x.grad is None:
        raise RuntimeError("no gradient reached the input images: cannot compute the receptive field")
    heat = x.grad.detach().abs().sum(1).mean(0).cpu().numpy()
    return heat / heat.max() if heat.max() > 0 else heat


def receptive_field_extent(heat: np.ndarray, mass: float = 0.9) -> int:
    """Side (px) of the smallest square centred on the heat map's centre of mass holding ``mass`` of its total."""
    total = float(heat.sum())
    if total <= 0:
        return 0
    rows, cols = np.indices(heat.shape)
    cy, cx = int(round(float((rows * heat).sum()) / total)), int(round(float((cols * heat).sum()) / total))
    for half in range(0, max(heat.shape)):
        window = heat[max(0, cy - half):cy + half + 1, max(0, cx - half):cx + half + 1]
        if window.sum() >= mass * total:
            return 2 * half + 1
    return max(heat.shape)


def plot_receptive_fields(heats: dict[str, np.ndarray], image: np.ndarray | None = None) -> Any:
    """Heat maps of empirical receptive fields side by side (shared colour scale)."""
    cols = len(heats) + (image is not None)
    fig, axes = plt.subplots(1, cols, figsize=(3.8 * cols, 3.9), squeeze=False, layout="constrained")
    axes = axes[0]
    offset = 0
    if image is not None:
        axes[0].imshow(image)
        axes[0].set_title("input (example)")
        axes[0].set_xlabel("x (px)")
        axes[0].set_ylabel("y (px)")
        offset = 1
    im = None
    for ax, (label, heat) in zip(axes[offset:], heats.items()):
        im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=1)
        ax.set_title(f"{label}\n90% mass in {receptive_field_extent(heat)} px square", fontsize=10)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    if im is not None:
        fig.colorbar(im, ax=list(axes[offset:]), shrink=0.8, label="|gradient| (normalised)")
    fig.suptitle("Effective receptive field of the centre patch feature")
    return fig


def receptive_field_comparison(model: PatchCore, images: torch.Tensor, patch_sizes: Sequence[int] = (1, 3)
                                ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Empirical receptive fields of the centre patch feature for several neighbourhood sizes p.

    Returns ({"patch size p=..": heat map [S, S]}, table patch_size, extent_90_px, extent_50_px, seconds).
    Other patch sizes use the same backbone and weights (a feature extractor is built per size).
    """
    heats, rows = {}, []
    config = model.config
    for p in patch_sizes:
        start = time.perf_counter()
        if p == config.patch_size:
            extractor = model.extractor
        else:  # same backbone and weights, another neighbourhood size
            extractor = PatchCore(dataclasses.replace(config, patch_size=p)).extractor
        heat = effective_receptive_field(extractor, images)
        label = f"patch size p={p}"
        heats[label] = heat
        rows.append({"patch_size": p, "extent_90_px": receptive_field_extent(heat, 0.9),
                     "extent_50_px": receptive_field_extent(heat, 0.5), "imagesize": images.shape[-1],
                     "images": len(images), "seconds": time.perf_counter() - start})
    return heats, pd.DataFrame(rows)


# ============================================================================ the feature cache
def fill_feature_cache(model: PatchCore, params: dict[str, Any], splits: Sequence[str] = ("train", "test"),
                       show_progress: bool = True
                       ) -> tuple[dict[str, torch.Tensor], tuple[int, int], pd.DataFrame]:
    """Patch features of every split from the cache (extracted and stored on a miss).

    Returns ({split: [N, h*w, D]}, grid, table split/images/grid/patches_per_image/dim/was_cached/seconds/MB).
    """
    rows, features, grid = [], {}, (0, 0)
    for split in splits:
        start = time.perf_counter()
        feats, grid, was_cached = load_features(model, params, split, show_progress=show_progress)
        features[split] = feats
        rows.append({"split": split, "images": feats.shape[0], "grid": f"{grid[0]}x{grid[1]}",
                     "patches_per_image": feats.shape[1], "dim": feats.shape[2], "was_cached": was_cached,
                     "seconds": round(time.perf_counter() - start, 2),
                     "MB": round(feats.numel() * feats.element_size() / 2**20, 1)})
    return features, grid, pd.DataFrame(rows)


# ============================================================================ PCA of patch features
def patch_labels(masks: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Boolean [N, h*w]: a patch is defective when its cell of the area-downsampled mask is > 0.5."""
    m = torch.as_tensor(np.asarray(masks), dtype=torch.float32).unsqueeze(1)
    cells = F.adaptive_avg_pool2d(m, grid)
    return (cells[:, 0] > 0.5).reshape(len(m), -1).numpy()


def pca_projection(train_features: torch.Tensor, test_features: torch.Tensor, defective: np.ndarray,
                   max_points: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """2-D PCA (fitted on nominal training patches) of train, test-normal and test-defective patches.

    ``train_features``/``test_features`` are [N, h*w, D]; ``defective`` [N_test, h*w] boolean.
    Returns (DataFrame pc1, pc2, group; explained variance ratio [2]). At most ``max_points`` per group.
    """
    rng = np.random.default_rng(seed)
    train = train_features.reshape(-1, train_features.shape[-1]).float().numpy()
    test = test_features.reshape(-1, test_features.shape[-1]).float().numpy()
    flags = np.asarray(defective).reshape(-1)
    if len(flags) != len(test):
        raise ConfigError(f"patch labels ({len(flags)}) do not match test patches ({len(test)})")

    def take(array: np.ndarray) -> np.ndarray:
        return array[rng.choice(len(array), max_points, replace=False)] if len(array) > max_points else array

    pca = PCA(n_components=2, random_state=seed).fit(take(train))
    frames = []
    for name, data in (("train (nominal)", train), ("test: normal patch", test[~flags]),
                       ("test: defective patch", test[flags])):
        if len(data):
            points = pca.transform(take(data))
            frames.append(pd.DataFrame({"pc1": points[:, 0], "pc2": points[:, 1], "group": name}))
    return pd.concat(frames, ignore_index=True), pca.explained_variance_ratio_


def plot_pca(points: pd.DataFrame, explained: Sequence[float], title: str = "") -> Any:
    colors = {"train (nominal)": "tab:grey", "test: normal patch": "tab:blue", "test: defective patch": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for group, frame in points.groupby("group", sort=False):
        ax.scatter(frame.pc1, frame.pc2, s=5, alpha=0.35 if group != "test: defective patch" else 0.8,
                   color=colors.get(group), label=f"{group} (n={len(frame)})")
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
    ax.set_title(title or "Patch features, PCA fitted on nominal training patches")
    ax.legend(markerscale=3, loc="best")
    fig.tight_layout()
    return fig


# ============================================================================ memory-bank size
def memory_bank_table(extractor: Any, num_train: int, dim: int, ratios: Iterable[float],
                      imagesizes: Iterable[int]) -> pd.DataFrame:
    """Memory-bank size (features, MB as float32) for every image size x coreset ratio."""
    rows = []
    for size in sorted(set(int(s) for s in imagesizes)):
        h, w = extractor.feature_grid(size)
        total = num_train * h * w
        for ratio in sorted(set(float(r) for r in ratios)):
            m = num_selected(total, ratio)
            rows.append({"imagesize": size, "grid": f"{h}x{w}", "train_images": num_train, "all_features": total,
                         "ratio_%": 100 * ratio, "bank_features": m, "dim": dim,
                         "bank_MB": round(m * dim * 4 / 2**20, 2)})
    return pd.DataFrame(rows)


def plot_memory_bank(table: pd.DataFrame) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for size, frame in table.groupby("imagesize"):
        ax.plot(frame["ratio_%"], frame["bank_MB"], marker="o", label=f"{size} px")
    percent_axis(ax, table["ratio_%"] / 100)
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("coreset ratio (% of training patches, log)")
    ax.set_ylabel("memory bank size (MB, float32, log)")
    ax.set_title(f"Memory bank size, {int(table['train_images'].iloc[0])} training images, "
                 f"{int(table['dim'].iloc[0])}-d features")
    ax.legend(title="image size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
