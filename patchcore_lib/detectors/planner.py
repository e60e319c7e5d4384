"""Fit planner: how long a PatchCore fit will take and how much memory it will need, before fitting.

``plan_fit(config, num_images)`` combines quick measurements of this machine (:mod:`.plan_measure`: the feature
extractor on random images at the configured size, decoding of a few real images, the coreset's per-row distance
update, copy bandwidth, matmul rate; about a second) with cost formulas of the fit's stages:

* patches: ``N = images x h x w`` (the feature grid of the first layer at ``imagesize``, e.g. 28 x 28 at 224 px
  for efficientnet_lite0 / WideResNet-50), features ``[N, D]`` float32 (D = ``target_embed_dimension``);
* extraction: ``images x (extractor seconds/image + decode seconds/image) x extract_factor`` (less the share of
  the decoding a reading-ahead loader hides behind the forward pass: ``decode_overlap_*``);
* coreset (approximate greedy): ``M = int(N x ratio)`` selections; projection ``N x D x 128`` multiply-adds,
  start distances, then per selection ``N x row_seconds x work_fraction + seconds_per_selection`` (the pruned
  CPU loop does a fraction of the plain loop's row updates, ``work_fraction = fraction x (N / reference) **
  exponent``; on CUDA the plain loop, at least a fixed step time);
* index: the memory bank ``[M, D]`` copied into the search;
* threshold calibration (``calibration_folds`` > 0, what ``patchcore fit`` does by default): one coreset per
  fold of ``N / k`` patches and one kNN pass of the ``N`` training patches against ``(k - 1) / k`` of the bank;
* peak resident memory: process baseline (torch, the library, the backbone: measured) + activations the
  allocator keeps (measured) + features ``[N, D]`` + the coreset's working set (the projected bank ``[N, 128]``
  and its block-ordered copy, O(N) vectors, per-selection buffers), or the bank stage's / calibration's if larger;
  on CUDA the features, projected bank and activations live in GPU memory (VRAM) instead.

Every calibration constant is in :data:`CONSTANTS` (:class:`PlanConstants`), each with where it was measured;
``python -m benchmarks.plan_accuracy --calibrate`` prints the values that make the predictions match measured
fits. Times in seconds, memory in bytes (the ``*_gib`` keys of :meth:`FitPlan.to_dict`: GiB = 2**30 bytes).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from patchcore_lib.components.backbones import get_spec
from patchcore_lib.components.sampling import num_selected
from patchcore_lib.detectors.base import resolve_device
from patchcore_lib.detectors.patchcore import PatchCoreConfig
from patchcore_lib.detectors.plan_measure import PROJECTION_DIM, MachineSpeeds, measure_machine
from patchcore_lib.errors import ConfigError

GIB = 2**30


@dataclass(frozen=True)
class PlanConstants:
    """The planner's calibration constants, all in one place (paste new values printed by
    ``python -m benchmarks.plan_accuracy --calibrate``).

    Measured on the 2-core development machine (no GPU; efficientnet_lite0, 10% approximate greedy coreset) with
    ``benchmarks/plan_accuracy.py``: MVTec AD bottle (209 images, 256 -> 224 px centre crop: 163,856 patches) and
    the magnetic tiles (761 images, whole image at 224 px: 596,624 patches), on a machine shared with other jobs
    (the plain row update: 74-78 ns per row when idle, up to 260 ns while other jobs ran). The coreset terms are
    those of the pruned torch loop (``components/coreset_kernels.py``, in the tree as these were measured); a
    compiled coreset is being written: recalibrate the coreset terms when it lands.
    """

    #: measured extraction seconds / (images x (extractor s/image + decode s/image)): batching, collation, the copy
    #: into the feature matrix, and decoding of the images not sampled, on top of the timed forward pass (bottle
    #: 1.13; the tiles 1.31 in notebook 04's record, 1.82 in a run beside other jobs: their JPEGs vary in size)
    extract_factor: float = 1.22
    #: share of the decoding hidden behind the forward pass (a loader that reads ahead in a thread): 0 = reading
    #: and the forward pass take turns (the DataLoader without workers; on CPU they also share the same cores)
    decode_overlap_cpu: float = 0.0
    #: the same on CUDA, where reading (CPU) could overlap the forward pass (GPU) entirely (not measured: no GPU)
    decode_overlap_cuda: float = 0.0
    #: decode + preprocess seconds per image when no image files are given (--images N): bottle's 512 px PNGs
    decode_seconds_per_image: float = 0.007
    #: the pruned CPU loop's seconds / (selections x patches x the measured plain row update) at
    #: ``coreset_reference_points`` patches: the share of the plain loop's work it does, at its own speed per row
    #: (bottle 11.1 s and 12.0 s: 0.050; the tiles 154 s (docs/performance.md): 0.054; a tiles run beside other
    #: jobs took 454 s; a compiled loop measured 3.6 s on bottle: 0.0156)
    coreset_work_fraction: float = 0.052
    #: how that share grows with the number of patches: x (patches / reference) ** exponent (bottle to the
    #: tiles: 0.05; 0 keeps the per-selection work proportional to the patches)
    coreset_work_exponent: float = 0.0
    #: the patch count at which ``coreset_work_fraction`` holds (bottle's)
    coreset_reference_points: float = 163_856.0
    #: fixed seconds per selection of the pruned loop (Python bookkeeping per step of the torch loop)
    coreset_seconds_per_selection: float = 3.0e-5
    #: fixed seconds per selection of the torch plain loop (small problems, or forced; Python overhead per step)
    plain_seconds_per_selection: float = 1.0e-5
    #: the CPU coreset prunes from this many patches and selections on (ApproximateGreedyCoresetSampler's rule in
    #: components/sampling.py; below, the plain loop runs); a compiled loop that prunes at every size: set both to 0
    pruned_min_points: float = 32768.0
    pruned_min_selections: float = 256.0
    #: seconds per selection floor of the CUDA loop (graph-replayed steps; not measured here: no GPU was available;
    #: docs/performance.md: the eager loop was bounded at ~10,000 selections/s on an H200, the graphs cut that)
    cuda_seconds_per_selection: float = 2.0e-5
    #: kNN effective GFLOP/s / measured sgemm GFLOP/s (benchmarks/run.py on bottle: 0.95; calibration's banks
    #: are rebuilt per fold: a little lower)
    knn_efficiency: float = 0.85
    #: resident copies of the projected bank ``[N, 128]`` float32 during the pruned loop (the projection and its
    #: block-ordered copy, partly transient): 1.74 with the margin below matches bottle's and the tiles' peaks
    coreset_projected_copies: float = 1.74
    #: other resident bytes per patch during the coreset (norms, running distances, block bookkeeping, int64 maps)
    coreset_bytes_per_point: float = 48.0
    #: resident bytes per selection during the coreset (selected rows in float32 and float64, norms, indices)
    coreset_bytes_per_selection: float = 12.0 * PROJECTION_DIM + 24.0
    #: resident bytes not explained by the terms above (faiss and other libraries loaded during the fit,
    #: allocator slack), added to the predicted peak (solved with the copies above from bottle's 1.35 GiB and the
    #: tiles' 2.39 GiB peaks)
    rss_margin_bytes: float = 0.077 * GIB

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: the constants the planner uses
CONSTANTS = PlanConstants()


def patch_grid(config: PatchCoreConfig) -> tuple[int, int]:
    """Feature grid (h, w) of ``config`` from its backbone's layer strides, without building the model: the first
    (finest) layer's ``ceil(imagesize / stride)`` positions per side, then every ``patch_stride``-th p x p
    neighbourhood position (as :meth:`PatchFeatureExtractor.feature_grid`)."""
    spec = get_spec(config.backbone)
    layers = config.layers or spec.default_layers  # resolved by PatchCoreConfig.__post_init__
    stride = spec.layers[layers[0]][1]
    side = -(-config.imagesize // stride)
    pad = (config.patch_size - 1) // 2
    side = (side + 2 * pad - config.patch_size) // config.patch_stride + 1
    return side, side


@dataclass
class CoresetCost:
    """Predicted coreset selection: ``seconds`` and its parts, resident ``bytes`` of its working set (on the
    device of the features), and how it runs (``method``: plain / pruned / cuda / exact / none)."""

    points: int
    selections: int
    method: str
    setup_seconds: float
    loop_seconds: float
    bytes: float

    @property
    def seconds(self) -> float:
        return self.setup_seconds + self.loop_seconds


def coreset_cost(points: int, dim: int, ratio: float, sampler: str, speeds: MachineSpeeds,
                 constants: PlanConstants = CONSTANTS) -> CoresetCost:
    """Time and working memory of selecting ``num_selected(points, ratio)`` of ``points`` features ``[N, dim]``
    with ``sampler`` on the measured machine."""
    selections = num_selected(points, ratio)
    n, p, cpu = float(points), float(PROJECTION_DIM), speeds.device.startswith("cpu")
    if sampler in ("identity", "random") or ratio >= 1.0:  # no selection loop (identity keeps every patch)
        kept = points if sampler == "identity" or ratio >= 1.0 else selections
        return CoresetCost(points, kept, "none", 0.0, 0.0, 0.0)
    flops = speeds.matmul_gflops * 1e9
    projection = 0.0 if dim == PROJECTION_DIM else 2 * n * dim * p / flops
    projected_bytes = n * p * 4
    if sampler == "greedy":  # the full N x N distance matrix
        setup = projection + 2 * n * n * p / flops
        loop = selections * (n * 8 / (speeds.copy_gbps * 1e9) + constants.plain_seconds_per_selection)
        return CoresetCost(points, selections, "exact", setup, loop, projected_bytes + n * n * 4)
    setup = projection + 12 * n * speeds.row_seconds  # squared norms and the 10 start distances
    if not cpu:
        step = max(constants.cuda_seconds_per_selection, n * speeds.row_seconds)
        return CoresetCost(points, selections, "cuda", setup, selections * step,
                           projected_bytes + n * 16 + selections * 8)
    if points < constants.pruned_min_points or selections < constants.pruned_min_selections:  # plain loop
        loop = selections * (n * speeds.row_seconds + constants.plain_seconds_per_selection)
        return CoresetCost(points, selections, "plain", setup, loop, projected_bytes + n * 12 + selections * 8)
    blocks = max(1.0, round(math.sqrt(n)))
    kmeans = (5 * min(n, max(20000.0, 16 * blocks)) + n) * blocks * p * 2 / (flops / 2)  # float64 products
    regroup = 4 * projected_bytes / (speeds.copy_gbps * 1e9)
    growth = (n / constants.coreset_reference_points) ** constants.coreset_work_exponent
    fraction = constants.coreset_work_fraction * growth
    loop = selections * (n * speeds.row_seconds * fraction + constants.coreset_seconds_per_selection)
    work = (constants.coreset_projected_copies * projected_bytes + n * constants.coreset_bytes_per_point
            + selections * constants.coreset_bytes_per_selection)
    return CoresetCost(points, selections, "pruned", setup + kmeans + regroup, loop, work)


@dataclass
class FitPlan:
    """A predicted fit. Stage times in ``seconds`` (extract, coreset, index, calibration, total), memory parts in
    ``ram`` / ``vram`` (bytes, by what they hold) with their peaks and the stage that reaches it (``peak_stage``),
    the inputs it was computed from, the machine ``speeds`` it measured, and ``terms``: the raw quantities the
    constants multiply (what ``benchmarks/plan_accuracy.py --calibrate`` divides measurements by)."""

    config: dict[str, Any]
    num_images: int
    grid: tuple[int, int]
    patches: int
    dim: int
    selections: int
    coreset_method: str
    calibration_folds: int
    seconds: dict[str, float]
    ram: dict[str, float]
    peak_ram_bytes: float
    vram: dict[str, float] | None
    peak_vram_bytes: float | None
    speeds: MachineSpeeds
    constants: dict[str, float]
    terms: dict[str, float] = field(default_factory=dict)
    peak_stage: str = ""
    decode_assumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, plus ``peak_ram_gib`` / ``peak_vram_gib`` and ``fit_seconds`` (the total)."""
        out = asdict(self)
        out["speeds"] = self.speeds.to_dict()
        out["grid"] = list(self.grid)
        out["fit_seconds"] = self.seconds["total"]
        out["peak_ram_gib"] = self.peak_ram_bytes / GIB
        out["peak_vram_gib"] = None if self.peak_vram_bytes is None else self.peak_vram_bytes / GIB
        return out


def estimate_fit(config: PatchCoreConfig, num_images: int, speeds: MachineSpeeds, calibration_folds: int = 0,
                 constants: PlanConstants = CONSTANTS, decode_assumed: bool = False) -> FitPlan:
    """The :class:`FitPlan` of fitting ``config`` on ``num_images`` images, given measured ``speeds`` (no
    measuring here: the same inputs give the same plan)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ConfigError(f"the number of training images must be a positive integer, got {num_images!r}")
    if calibration_folds == 1 or calibration_folds < 0:
        raise ConfigError(f"calibration_folds must be 0 (no threshold) or at least 2, got {calibration_folds}")
    grid = speeds.grid
    per_image = grid[0] * grid[1]
    n, dim = num_images * per_image, int(config.target_embed_dimension or 0)  # resolved by __post_init__
    feature_bytes = float(n) * dim * 4
    cuda = not speeds.device.startswith("cpu")
    decode = speeds.decode_seconds_per_image
    if decode is None:
        decode, decode_assumed = constants.decode_seconds_per_image, True
    forward = speeds.feature_seconds_per_image
    overlap = constants.decode_overlap_cuda if cuda else constants.decode_overlap_cpu
    image_seconds = forward + decode - overlap * min(forward, decode)  # reading partly hidden behind the forward
    extract = num_images * image_seconds * constants.extract_factor
    coreset = coreset_cost(n, dim, config.coreset_ratio, config.sampler, speeds, constants)
    bank_bytes = float(coreset.selections) * dim * 4
    index = 2 * bank_bytes / (speeds.copy_gbps * 1e9)
    seconds = {"extract": extract, "coreset": coreset.seconds, "index": index, "calibration": 0.0}
    folds = min(calibration_folds, num_images)
    fold_work = 0.0
    if folds:
        fold = coreset_cost(n // folds, dim, config.coreset_ratio, config.sampler, speeds, constants)
        knn = 2.0 * n * bank_bytes / 4 * (folds - 1) / folds / (speeds.matmul_gflops * 1e9 * constants.knn_efficiency)
        seconds["calibration"] = folds * fold.seconds + knn + folds * index
        fold_work = fold.bytes + feature_bytes / folds
    seconds["total"] = sum(seconds.values())
    # memory: what is resident at each stage's peak; the fit's peak is the largest
    keep = feature_bytes if folds else 0.0  # calibration keeps the features until the end
    stage_peaks = {"extract": feature_bytes, "coreset": feature_bytes + coreset.bytes,
                   "bank": feature_bytes + bank_bytes, "index": keep + 2 * bank_bytes,
                   "calibration": (feature_bytes + 2 * bank_bytes
                                   + max(fold_work + bank_bytes, bank_bytes * (1 + 2 * (folds - 1) / folds)))
                   if folds else 0.0}
    on_device = max(stage_peaks.values())
    peak_stage = max(stage_peaks, key=lambda k: stage_peaks[k])
    ram: dict[str, float] = {"baseline": speeds.base_rss_bytes, "activations": speeds.activation_bytes,
                             "margin": constants.rss_margin_bytes}
    vram: dict[str, float] | None = None
    if cuda:  # features, coreset and bank on the GPU; the host keeps the baseline and a copy of the bank
        vram = {"model": speeds.gpu_model_bytes, "activations": speeds.gpu_activation_bytes, "working": on_device}
        ram["bank"] = bank_bytes
    else:
        ram["features"] = feature_bytes
        ram["working"] = on_device - feature_bytes
    terms = {"extract_raw_seconds": num_images * image_seconds,
             "coreset_setup_seconds": coreset.setup_seconds,
             "coreset_row_seconds_total": float(coreset.selections) * n * speeds.row_seconds,
             "coreset_size_growth": (n / constants.coreset_reference_points) ** constants.coreset_work_exponent,
             "projected_bytes": float(n) * PROJECTION_DIM * 4,
             "feature_bytes": feature_bytes, "bank_bytes": bank_bytes, "coreset_bytes": coreset.bytes}
    return FitPlan(config=config.to_dict(), num_images=num_images, grid=grid, patches=n, dim=dim,
                   selections=coreset.selections, coreset_method=coreset.method, calibration_folds=folds,
                   seconds=seconds, ram=ram, peak_ram_bytes=sum(ram.values()), vram=vram,
                   peak_vram_bytes=None if vram is None else sum(vram.values()), speeds=speeds,
                   constants=constants.to_dict(), terms=terms, peak_stage=peak_stage, decode_assumed=decode_assumed)


def plan_fit(config: PatchCoreConfig, num_images: int, calibration_folds: int = 0,
             samples: Sequence[Any] | None = None, constants: PlanConstants = CONSTANTS) -> FitPlan:
    """Measure this machine for ``config`` (:func:`~.plan_measure.measure_machine`; ``samples``: the training
    dataset, whose first, middle and last items time decoding) and :func:`estimate_fit` ``num_images`` images."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ConfigError(f"the number of training images must be a positive integer, got {num_images!r}")
    device = resolve_device(config.device)
    speeds = measure_machine(config, device, samples)
    if speeds.grid != patch_grid(config):  # the formula and the real extractor must agree
        raise ConfigError(f"feature grid {speeds.grid} differs from the formula's {patch_grid(config)}")
    return estimate_fit(config, num_images, speeds, calibration_folds, constants)


__all__ = ["CONSTANTS", "PlanConstants", "FitPlan", "CoresetCost", "MachineSpeeds", "coreset_cost", "estimate_fit",
           "patch_grid", "plan_fit"]
