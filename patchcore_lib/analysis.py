"""Library logic of the study notebooks 01-03 (feature extraction, coreset ablation, kNN scoring).

The notebooks stay thin: they validate parameters, call the functions below and save what they
return. Everything here works on cached patch features (``feature_cache.cached_split_features``),
so varying the sampler, the coreset ratio, k, the image score, the distance or the blur never
re-runs the backbone.

Scoring variants re-use the library's own path: :func:`variant` makes a shallow copy of a fitted
:class:`~patchcore_lib.model.PatchCore` that shares its feature extractor but has a re-validated
config (``dataclasses.replace``) and a fresh nearest-neighbour index, and :func:`fit_bank` indexes an
already-selected memory bank with the identity sampler. Scores and maps then come from
``PatchCore.score_features`` exactly as in ``predict``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data import MVTecDataset
from .errors import ConfigError
from .feature_cache import cached_split_features
from .knn import DISTANCES, NearestNeighbourSearch
from .metrics import image_auroc, pixel_auroc, pro_score
from .model import PatchCore, PatchCoreConfig
from .sampling import make_sampler

# Paper (Roth et al., CVPR 2022, Tab. 1/2): MVTec AD means of image AUROC / pixel AUROC / PRO, in %.
PAPER_CORESET = pd.DataFrame(
    [(0.25, 99.1, 98.1, 93.4), (0.10, 99.0, 98.1, 93.5), (0.01, 99.0, 98.0, 93.1)],
    columns=["ratio", "image_auroc", "pixel_auroc", "pro"],
)
PAPER_LABEL = "paper (MVTec mean)"
METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO (FPR <= 0.3)"}
SAMPLER_STYLE = {"random": ("tab:blue", "o"), "approx_greedy": ("tab:orange", "s"), "greedy": ("tab:green", "^"),
                 "identity": ("tab:grey", "D")}


# ============================================================================ parameters and configs
def _check_list(params: dict[str, Any], name: str, ok: Callable[[Any], bool], what: str) -> None:
    if name not in params:
        return
    values = params[name]
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"notebook parameter '{name}' must be a non-empty list, got {values!r}")
    for value in values:
        if not ok(value):
            raise ConfigError(f"notebook parameter '{name}' holds {value!r}; {what}")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def check_study_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Element checks of the list parameters of notebooks 01-03 (``validate_parameters`` checks the types).

    Raises one ConfigError naming the parameter; returns ``params`` unchanged.
    """
    _check_list(params, "k_values", lambda v: _is_int(v, 1), "every k must be an integer >= 1")
    _check_list(params, "b_values", lambda v: _is_int(v, 1), "every re-weighting b must be an integer >= 1")
    _check_list(params, "sigmas", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                "every sigma must be a number >= 0")
    _check_list(params, "distances", lambda v: v in DISTANCES, f"valid distances: {', '.join(DISTANCES)}")
    _check_list(params, "bank_imagesizes", lambda v: _is_int(v, 1), "every image size must be an integer >= 1")
    _check_list(params, "spread_seeds", lambda v: _is_int(v, 0), "every seed must be an integer >= 0")
    for name, minimum in (("max_exact_greedy", 0), ("gallery_size", 1), ("pca_points", 10), ("num_samples", 1)):
        if name in params and not _is_int(params[name], minimum):
            raise ConfigError(f"notebook parameter '{name}' must be an integer >= {minimum}, got {params[name]!r}")
    return params


def config_from_params(params: dict[str, Any], **overrides: Any) -> PatchCoreConfig:
    """A validated :class:`PatchCoreConfig` from notebook parameters (+ overrides); ConfigError if invalid."""
    check_study_parameters(params)
    fields = {f.name for f in dataclasses.fields(PatchCoreConfig)}
    values = {k: v for k, v in params.items() if k in fields}
    if values.get("layers") is not None:
        values["layers"] = tuple(values["layers"])
    values.update(overrides)
    return PatchCoreConfig(**values)


def load_features(model: PatchCore, params: dict[str, Any], split: str,
                  show_progress: bool = False) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """Cached patch features of ``split``: ([N_images, h*w, D] on CPU, grid, was_cached)."""
    return cached_split_features(model, params["data_root"], params["category"], split,
                                 cache_dir=params.get("cache_dir"), show_progress=show_progress)


OUTPUT_LOCATION_PARAMETERS = ("reports_dir", "run_id", "cache_dir")


def output_folder(notebook: str, params: dict[str, Any]) -> Path:
    """``reports/<notebook>/<run-id>/``; the default run id hashes the study parameters, not where outputs go."""
    from .notebook_utils import run_folder

    study = {k: v for k, v in params.items() if k not in OUTPUT_LOCATION_PARAMETERS}
    return run_folder(notebook, study, params.get("reports_dir"), params.get("run_id"))


# ============================================================================ test targets
@dataclass
class SplitTargets:
    """Ground truth of a test split: labels [N], masks [N, S, S] uint8, defect types, paths."""

    labels: np.ndarray
    masks: np.ndarray
    defect_types: list[str]
    paths: list[str]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[-2:])


def split_targets(dataset: MVTecDataset) -> SplitTargets:
    """Labels, preprocessed masks, defect types and paths of a test dataset (no images kept)."""
    masks = np.stack([dataset[i]["mask"][0].numpy().astype(np.uint8) for i in range(len(dataset))])
    return SplitTargets(dataset.labels, masks, dataset.defect_types, [str(s.path) for s in dataset.samples])


# ============================================================================ scoring on cached features
def variant(model: PatchCore, **changes: Any) -> PatchCore:
    """An unfitted copy of ``model`` with some config fields changed; shares the feature extractor.

    The config is re-validated (``dataclasses.replace`` runs ``__post_init__``); the copy gets its own
    nearest-neighbour index, so fitting it leaves ``model`` untouched.
    """
    clone = copy.copy(model)
    clone.config = dataclasses.replace(model.config, **changes)
    clone.search = NearestNeighbourSearch(clone.config.num_nn, clone.config.distance, clone.config.knn_backend)
    clone.memory_bank = None
    clone.timings = {}
    return clone


def fit_bank(model: PatchCore, bank: torch.Tensor, **changes: Any) -> PatchCore:
    """A copy of ``model`` (with ``changes``) whose memory bank is exactly ``bank`` [M, D] (identity sampler)."""
    scorer = variant(model, sampler="identity", coreset_ratio=1.0, **changes)
    return scorer.fit(bank, show_progress=False)


def score_split(model: PatchCore, features: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int],
                batch_images: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Image scores [N] and anomaly maps [N, H, W] (float32 numpy) of cached features [N, h*w, D]."""
    n = len(features)
    scores = np.empty(n, dtype=np.float32)
    maps = np.empty((n, *image_size), dtype=np.float32)
    for start in range(0, n, batch_images):
        chunk = features[start:start + batch_images].to(model.device)
        s, m = model.score_features(chunk, grid, image_size)
        scores[start:start + len(s)] = s.numpy()
        maps[start:start + len(s)] = m.numpy()
    return scores, maps


def evaluate_scores(targets: SplitTargets, scores: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Image AUROC, pixel AUROC and PRO (FPR <= 0.3), in [0, 1]; NaN where undefined."""
    has_defects = bool(targets.masks.any())
    return {
        "image_auroc": image_auroc(targets.labels, scores),
        "pixel_auroc": pixel_auroc(targets.masks, maps) if has_defects else float("nan"),
        "pro": pro_score(targets.masks, maps) if has_defects else float("nan"),
    }


def coverage_radius(features: torch.Tensor, bank: torch.Tensor, backend: str = "auto") -> float:
    """max over ``features`` [N, D] of the Euclidean distance to the nearest row of ``bank`` [M, D].

    The quantity the greedy coreset minimises (approximately): every training feature lies within this
    radius of some memory-bank feature.
    """
    if features.ndim != 2 or bank.ndim != 2 or features.shape[1] != bank.shape[1]:
        raise ConfigError(f"coverage_radius needs [N, D] and [M, D] matrices, got {tuple(features.shape)} "
                          f"and {tuple(bank.shape)}")
    search = NearestNeighbourSearch(1, "euclidean", backend).fit(bank)
    worst = 0.0
    for start in range(0, len(features), 65536):
        distances, _ = search.query(features[start:start + 65536])
        worst = max(worst, float(distances.max()))
    return worst


# ============================================================================ notebook 01: inputs and features
def _contour(ax: Any, mask: np.ndarray, color: str = "red") -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2)


def pick_examples(dataset: MVTecDataset, per_type: int = 1) -> list[int]:
    """Indices of the first ``per_type`` images of every defect type (``good`` first)."""
    chosen: dict[str, list[int]] = {}
    for index, defect in enumerate(dataset.defect_types):
        if len(chosen.setdefault(defect, [])) < per_type:
            chosen[defect].append(index)
    order = sorted(chosen, key=lambda d: (d != "good", d))
    return [i for d in order for i in chosen[d]]


def plot_sample_grid(train: MVTecDataset, test: MVTecDataset, num_train: int = 4) -> Any:
    """Row 1: training (nominal) images; row 2: one test image per defect type with its mask contour."""
    import matplotlib.pyplot as plt

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
        _contour(axes[1, col], item["mask"][0].numpy())
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
    """Heat maps of empirical receptive fields side by side (shared colour scale, log-compressed)."""
    import matplotlib.pyplot as plt

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
    from sklearn.decomposition import PCA

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
    import matplotlib.pyplot as plt

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


def memory_bank_table(extractor: Any, num_train: int, dim: int, ratios: Iterable[float],
                      imagesizes: Iterable[int]) -> pd.DataFrame:
    """Memory-bank size (features, MB as float32) for every image size x coreset ratio."""
    from .sampling import num_selected

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
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for size, frame in table.groupby("imagesize"):
        ax.plot(frame["ratio_%"], frame["bank_MB"], marker="o", label=f"{size} px")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("coreset ratio (% of training patches, log)")
    ax.set_ylabel("memory bank size (MB, float32, log)")
    ax.set_title(f"Memory bank size, {int(table['train_images'].iloc[0])} training images, "
                 f"{int(table['dim'].iloc[0])}-d features")
    ax.legend(title="image size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


# ============================================================================ notebook 02: coreset ablation
def _bank_key(indices: torch.Tensor) -> str:
    return hashlib.sha256(np.sort(indices.cpu().numpy()).tobytes()).hexdigest()


def coreset_ablation(model: PatchCore, train_features: torch.Tensor, test_features: torch.Tensor,
                     grid: tuple[int, int], targets: SplitTargets, samplers: Sequence[str], ratios: Sequence[float],
                     max_exact_greedy: int = 20000, show_progress: bool = False,
                     log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Every sampler x ratio: bank size, selection seconds, coverage radius, image/pixel AUROC, PRO.

    ``train_features``/``test_features`` are cached [N, h*w, D]. Exact greedy is skipped (status
    ``n/a``) when N > ``max_exact_greedy`` or when the sampler refuses (matrix too big). Selections that
    give the same bank (e.g. every sampler at ratio 1) are scored once.
    """
    flat = train_features.reshape(-1, train_features.shape[-1])
    n = len(flat)
    seen: dict[str, dict[str, Any]] = {}
    rows = []
    for sampler_name in samplers:
        for ratio in ratios:
            row: dict[str, Any] = {"sampler": sampler_name, "ratio": float(ratio), "train_features": n}
            if sampler_name == "greedy" and ratio < 1 and n > max_exact_greedy:
                row.update(status=f"n/a (N={n} > max_exact_greedy={max_exact_greedy})")
                rows.append(row)
                continue
            sampler = make_sampler(sampler_name, ratio, seed=model.config.seed, device=model.device,
                                   show_progress=show_progress)
            start = time.perf_counter()
            try:
                indices = sampler.select(flat)
            except ConfigError as exc:
                row.update(status=f"n/a ({exc})")
                rows.append(row)
                continue
            row["selection_seconds"] = time.perf_counter() - start
            row["bank_features"] = len(indices)
            key = _bank_key(indices)
            if key in seen:
                row.update({k: v for k, v in seen[key].items() if k not in row}, status="ok (same bank as above)")
                rows.append(row)
                continue
            bank = flat[indices]
            radius = 0.0 if len(indices) == n else coverage_radius(flat, bank, model.config.knn_backend)
            scorer = fit_bank(model, bank)
            start = time.perf_counter()
            scores, maps = score_split(scorer, test_features, grid, targets.image_size)
            scoring_seconds = time.perf_counter() - start
            result = {"coverage_radius": radius, "scoring_seconds": scoring_seconds,
                      **evaluate_scores(targets, scores, maps)}
            del maps
            seen[key] = result
            row.update(result, status="ok")
            rows.append(row)
            if log is not None:
                log(f"{sampler_name:>13} {100 * ratio:6.2f}%: bank {len(indices):7d}, select "
                    f"{row['selection_seconds']:.2f}s, image AUROC {result['image_auroc']:.4f}, "
                    f"pixel AUROC {result['pixel_auroc']:.4f}, PRO {result['pro']:.4f}")
    columns = ["sampler", "ratio", "train_features", "bank_features", "selection_seconds", "coverage_radius",
               "image_auroc", "pixel_auroc", "pro", "scoring_seconds", "status"]
    return pd.DataFrame(rows).reindex(columns=columns)


def seed_spread(model: PatchCore, train_features: torch.Tensor, test_features: torch.Tensor,
                grid: tuple[int, int], targets: SplitTargets, seeds: Sequence[int], sampler: str = "approx_greedy",
                ratio: float = 0.1) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The same run with different seeds (only the random parts change: projection, start points,
    random subsets). Returns (one row per seed, ``{metric: {mean, std, min, max, range}}``)."""
    flat = train_features.reshape(-1, train_features.shape[-1])
    rows = []
    for seed in seeds:
        sampler_obj = make_sampler(sampler, ratio, seed=int(seed), device=model.device, show_progress=False)
        start = time.perf_counter()
        indices = sampler_obj.select(flat)
        selection_seconds = time.perf_counter() - start
        scores, maps = score_split(fit_bank(model, flat[indices]), test_features, grid, targets.image_size)
        rows.append({"seed": int(seed), "sampler": sampler, "ratio": float(ratio), "bank_features": len(indices),
                     "selection_seconds": selection_seconds, **evaluate_scores(targets, scores, maps)})
        del maps
    table = pd.DataFrame(rows)
    summary = {}
    for metric in METRIC_NAMES:
        values = table[metric].to_numpy(dtype=float)
        summary[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                           "min": float(values.min()), "max": float(values.max()),
                           "range": float(values.max() - values.min())}
    return table, summary


def plot_seed_spread(table: pd.DataFrame, title: str = "") -> Any:
    """One panel per metric: the value of each seed (dots) and their mean (line)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(4 * len(METRIC_NAMES), 3.2))
    for ax, (metric, label) in zip(axes, METRIC_NAMES.items()):
        values = 100 * table[metric].to_numpy(dtype=float)
        ax.plot(table["seed"].astype(str), values, "o", color="tab:orange", label="one seed")
        ax.axhline(values.mean(), color="black", lw=1, label=f"mean {values.mean():.2f}")
        spread = values.max() - values.min()
        ax.set_title(f"{label}\nrange {spread:.2f} points")
        ax.set_xlabel("seed")
        ax.set_ylabel(f"{label} (%)")
        pad = max(0.05, spread)
        ax.set_ylim(values.min() - pad, values.max() + pad)
        ax.ticklabel_format(axis="y", useOffset=False)  # plain percentages, no "+1e2" offset
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ablation_display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Percentages for the metrics and 'n/a' for skipped cells (for display/CSV next to the raw table)."""
    shown = table.copy()
    shown["ratio"] = (100 * shown["ratio"]).map(lambda r: f"{r:g}%")
    for name in METRIC_NAMES:
        shown[name] = shown[name].map(lambda v: "n/a" if pd.isna(v) else f"{100 * v:.2f}")
    for name in ("selection_seconds", "coverage_radius", "scoring_seconds"):
        shown[name] = shown[name].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    shown["bank_features"] = shown["bank_features"].map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    return shown


def plot_coreset_metrics(table: pd.DataFrame, paper: pd.DataFrame = PAPER_CORESET, title: str = "") -> Any:
    """Image AUROC / pixel AUROC / PRO (%) vs coreset ratio (log x), one line per sampler, paper markers."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for ax, (metric, label) in zip(axes, METRIC_NAMES.items()):
        for sampler_name, frame in table.groupby("sampler", sort=False):
            frame = frame.dropna(subset=[metric]).sort_values("ratio")
            if frame.empty:
                ax.plot([], [], color=SAMPLER_STYLE.get(sampler_name, (None, "o"))[0], label=f"{sampler_name} (n/a)")
                continue
            color, marker = SAMPLER_STYLE.get(sampler_name, (None, "o"))
            ax.plot(100 * frame.ratio, 100 * frame[metric], marker=marker, color=color, label=sampler_name)
        if paper is not None and metric in paper:
            ax.scatter(100 * paper.ratio, paper[metric], marker="_", s=400, linewidths=2.5, color="black",
                       label=PAPER_LABEL, zorder=5)
        ax.set_xscale("log")
        ax.set_xlabel("coreset ratio (% of training patches, log)")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend below the panels: it hides no marker
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(title or "Coreset subsampling: detection and localisation vs memory-bank size")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_coverage(table: pd.DataFrame, title: str = "") -> Any:
    """Coverage radius and selection time vs coreset ratio (log x), one line per sampler."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for ax, metric, label in ((axes[0], "coverage_radius", "coverage radius (max NN distance, L2)"),
                              (axes[1], "selection_seconds", "selection time (s, log)")):
        for sampler_name, frame in table.groupby("sampler", sort=False):
            frame = frame.dropna(subset=[metric]).sort_values("ratio")
            color, marker = SAMPLER_STYLE.get(sampler_name, (None, "o"))
            if metric == "selection_seconds":
                frame = frame[frame[metric] > 0]
            ax.plot(100 * frame.ratio, frame[metric], marker=marker, color=color,
                    label=sampler_name if not frame.empty else f"{sampler_name} (n/a)")
        ax.set_xscale("log")
        ax.set_xlabel("coreset ratio (% of training patches, log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[0].set_title("How far is the worst-covered training patch from the bank?")
    axes[1].set_title("Selection time")
    fig.suptitle(title or "Coreset coverage and cost")
    fig.tight_layout()
    return fig


# ============================================================================ notebook 03: kNN and scoring
DEFAULT_SCORING = {"num_nn": 1, "score": "max", "reweight_neighbourhood": 3, "distance": "sqeuclidean", "sigma": 4.0}


def scoring_defaults(config: PatchCoreConfig) -> dict[str, Any]:
    """The scoring fields of ``config`` (the centre of the one-factor-at-a-time study)."""
    return {name: getattr(config, name) for name in DEFAULT_SCORING}


def scoring_variants(k_values: Sequence[int], b_values: Sequence[int], distances: Sequence[str],
                     sigmas: Sequence[float], default: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One-factor-at-a-time variants around ``default``: dicts with factor, value, changes (config fields)."""
    base = dict(DEFAULT_SCORING if default is None else default)
    out = []
    for k in k_values:
        out.append({"factor": "k (neighbours)", "value": f"k={k}", "changes": {**base, "num_nn": int(k)}})
    out.append({"factor": "image score", "value": "max", "changes": {**base, "score": "max"}})
    for b in b_values:
        out.append({"factor": "image score", "value": f"reweighted b={b}",
                    "changes": {**base, "score": "reweighted", "reweight_neighbourhood": int(b)}})
    for distance in distances:
        out.append({"factor": "distance", "value": distance, "changes": {**base, "distance": distance}})
    for sigma in sigmas:
        out.append({"factor": "Gaussian sigma", "value": f"sigma={sigma:g}", "changes": {**base, "sigma": float(sigma)}})
    for item in out:
        item["is_default"] = item["changes"] == base
    return out


def _changes_key(changes: dict[str, Any]) -> tuple:
    c = dict(changes)
    if c.get("score") == "max":
        c.pop("reweight_neighbourhood", None)  # b is unused by the max score
    return tuple(sorted(c.items()))


def knn_scoring_ablation(model: PatchCore, bank: torch.Tensor, test_features: torch.Tensor, grid: tuple[int, int],
                         targets: SplitTargets, variants: list[dict[str, Any]], keep_maps: Sequence[str] = (),
                         log: Callable[[str], None] | None = print
                         ) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score the test features with every variant on the same memory bank.

    Returns (table, scores by variant label, maps for the labels in ``keep_maps``). Identical configs
    (e.g. the default repeated in each factor) are computed once.
    """
    done: dict[tuple, tuple[dict[str, float], np.ndarray, np.ndarray | None]] = {}
    rows, scores_by, maps_by = [], {}, {}
    for item in variants:
        label = f"{item['factor']}: {item['value']}"
        key = _changes_key(item["changes"])
        want_maps = label in keep_maps or (item["is_default"] and "default" in keep_maps)
        if key not in done or (want_maps and done[key][2] is None):
            scorer = fit_bank(model, bank, **item["changes"])
            start = time.perf_counter()
            scores, maps = score_split(scorer, test_features, grid, targets.image_size)
            seconds = time.perf_counter() - start
            metrics = {**evaluate_scores(targets, scores, maps), "scoring_seconds": seconds}
            done[key] = (metrics, scores, maps if want_maps else None)
            if log is not None:
                log(f"{label:>32}: image AUROC {metrics['image_auroc']:.4f}, pixel AUROC "
                    f"{metrics['pixel_auroc']:.4f}, PRO {metrics['pro']:.4f} ({seconds:.1f}s)")
        metrics, scores, maps = done[key]
        scores_by[label] = scores
        if want_maps:
            maps_by["default" if item["is_default"] and "default" in keep_maps else label] = maps
        c = item["changes"]
        rows.append({"factor": item["factor"], "value": item["value"], "default": item["is_default"],
                     "k": c["num_nn"], "score": c["score"],
                     "b": c["reweight_neighbourhood"] if c["score"] == "reweighted" else pd.NA,
                     "distance": c["distance"], "sigma": c["sigma"], **metrics})
    table = pd.DataFrame(rows)
    table["b"] = table["b"].astype("Int64")
    return table, scores_by, maps_by


def plot_variant_metrics(table: pd.DataFrame, title: str = "") -> Any:
    """Grid of panels: rows = image AUROC / pixel AUROC / PRO (%), columns = factors; default filled black."""
    import matplotlib.pyplot as plt

    factors = list(dict.fromkeys(table.factor))
    metrics = list(METRIC_NAMES.items())
    fig, axes = plt.subplots(len(metrics), len(factors), figsize=(3.6 * len(factors), 2.6 * len(metrics)),
                             squeeze=False, layout="constrained")
    colors = ("tab:blue", "tab:orange", "tab:green")
    for col, factor in enumerate(factors):
        frame = table[table.factor == factor]
        x = np.arange(len(frame))
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            y = 100 * frame[metric].astype(float).to_numpy()
            ax.plot(x, y, marker="o", color=colors[row], label=label)
            is_default = frame.default.to_numpy(bool)
            ax.scatter(x[is_default], y[is_default], s=90, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=5, label="default" if row == 0 and col == 0 else None)
            ax.set_xticks(x)
            ax.set_xticklabels(frame.value if row == len(metrics) - 1 else [""] * len(x), rotation=30,
                               ha="right", fontsize=8)
            ax.margins(x=0.15, y=0.25)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"{label} (%)", fontsize=9)
            if row == 0:
                ax.set_title(factor)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "Scoring variants, one factor at a time around the default (circled)")
    return fig


def plot_score_histograms(scores_by: dict[str, np.ndarray], labels: np.ndarray, bins: int = 20) -> Any:
    """Histograms of image scores, good vs defective images, one panel per variant."""
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(scores_by), figsize=(4.8 * len(scores_by), 3.8), squeeze=False)
    for ax, (name, scores) in zip(axes[0], scores_by.items()):
        edges = np.histogram_bin_edges(scores, bins=bins)
        ax.hist(scores[labels == 0], bins=edges, alpha=0.6, color="tab:blue", label=f"good (n={(labels == 0).sum()})")
        ax.hist(scores[labels == 1], bins=edges, alpha=0.6, color="tab:red", label=f"defect (n={(labels == 1).sum()})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("image anomaly score")
        ax.set_ylabel("number of test images")
        ax.legend(fontsize=8)
    fig.suptitle("Image score distributions, good vs defective test images")
    fig.tight_layout()
    return fig


def gallery_indices(targets: SplitTargets, scores: np.ndarray, size: int = 8) -> list[int]:
    """Defective images with the highest and lowest scores per type, plus the highest-scored good images."""
    scores = np.asarray(scores)
    defect_types = sorted(set(t for t in targets.defect_types if t != "good"))
    chosen: list[int] = []
    for defect in defect_types:
        idx = [i for i, t in enumerate(targets.defect_types) if t == defect]
        chosen.append(max(idx, key=lambda i: scores[i]))
    good = sorted((i for i, t in enumerate(targets.defect_types) if t == "good"), key=lambda i: -scores[i])
    chosen += good[:max(1, size - len(chosen))]
    remaining = sorted((i for i in range(len(scores)) if i not in chosen and targets.labels[i] == 1),
                       key=lambda i: scores[i])
    while len(chosen) < size and remaining:
        chosen.append(remaining.pop(0))  # hardest defects (lowest score)
    return chosen[:size]


def plot_anomaly_gallery(dataset: MVTecDataset, maps: np.ndarray, scores: np.ndarray, indices: Sequence[int],
                         threshold: float | None = None, columns: int = 4) -> Any:
    """Images with their anomaly map overlaid (shared colour scale) and ground-truth mask contours."""
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(indices) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.4 * rows), squeeze=False, layout="constrained")
    vmin, vmax = float(np.min(maps)), float(np.percentile(maps, 99.9))
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices):
        item = dataset[index]
        ax.imshow(dataset.preprocess.denormalise(item["image"]))
        im = ax.imshow(maps[index], cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
        _contour(ax, item["mask"][0].numpy(), color="white")
        ax.set_title(f"{item['defect_type']}  score {scores[index]:.3g}", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="anomaly map (patch score)")
    fig.suptitle("Anomaly maps (overlay) with ground-truth contours (white)")
    return fig
