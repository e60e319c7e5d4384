"""Quick measurements of this machine for the fit planner (:mod:`patchcore_lib.detectors.planner`), taken in about a
second: the feature extractor on random images at the configured size, image decoding on a few real files, the
coreset's distance update per row, memory copy bandwidth and the float32 matrix-product rate.

Every number is a rate or a size of *this* process on *this* machine at the moment of planning; the planner's cost
formulas turn them into stage times and memory. Nothing here touches the user's data beyond reading up to four of
its images.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence, Sized

import torch

from patchcore_lib.components.features import PatchFeatureExtractor

#: the projection dimension of the greedy coresets (``_ProjectingSampler``'s default, the official 128)
PROJECTION_DIM = 128
#: rows of the projected bank in the distance-update measurement (64 MiB at 128 dims: beyond the caches)
_ROW_BENCH_ROWS = 1 << 17
_ROW_CHUNK = 32768  # the coreset's chunk of rows per distance pass (coreset_kernels._WORK_ROWS)
#: seconds the feature-extractor measurement aims at (a larger model gets a smaller timed batch)
_FORWARD_BUDGET_S = 1.5
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``; 0 where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class MachineSpeeds:
    """What the planner measured (units in the names). ``None``: not measured (e.g. no image files given).

    feature_seconds_per_image: the patch-feature extractor (backbone + aggregation) per image, at the plan's
        image size, in a batch of ``forward_batch`` random images (the best of the timed runs).
    activation_bytes: resident memory the forward pass left in this process (allocator-kept activations and
        runtime buffers), scaled to the plan's batch size; CPU only (0 on CUDA).
    gpu_model_bytes / gpu_activation_bytes: torch-allocated GPU memory of the extractor, and the forward pass's
        peak above it at the plan's batch size (CUDA only).
    decode_seconds_per_image: reading + preprocessing one image of the data (what fit's loader does), or None.
    row_seconds: one coreset distance update of one projected row (``[N, 128]`` matrix-vector product, formula,
        running minimum), per row, on the plan's device.
    copy_gbps: memory copy bandwidth, bytes read + written per second / 1e9, on the plan's device.
    matmul_gflops: float32 matrix product rate (1e9 multiply-adds x 2 per second) on the plan's device.
    base_rss_bytes: this process's resident set with torch, the library and the backbone loaded, before any
        forward pass: what a ``patchcore fit`` process holds before it reads an image.
    load_average / cpus: the machine's 1-minute load average when measuring started (None where unknown) and its
        CPU count: other work running then slows every measurement (and a fit running beside it).
    """

    device: str
    threads: int
    feature_seconds_per_image: float
    forward_batch: int
    grid: tuple[int, int]
    activation_bytes: float
    gpu_model_bytes: float
    gpu_activation_bytes: float
    decode_seconds_per_image: float | None
    row_seconds: float
    copy_gbps: float
    matmul_gflops: float
    base_rss_bytes: float
    measure_seconds: float = 0.0
    load_average: float | None = None
    cpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Smallest wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def measure_extractor(extractor: PatchFeatureExtractor, imagesize: int, batch_size: int, device: torch.device
                      ) -> tuple[float, int, tuple[int, int], float, float]:
    """(seconds per image, timed batch, grid (h, w), CPU bytes kept per batch of ``batch_size``, GPU activation
    bytes per batch of ``batch_size``) of ``extractor`` on random images ``[B, 3, imagesize, imagesize]``."""
    generator = torch.Generator().manual_seed(0)
    before = resident_bytes()
    gpu_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    one = torch.randn(1, 3, imagesize, imagesize, generator=generator).to(device)
    _, grid = extractor(one)  # warm-up: caches, allocator, thread pools
    single = _best(lambda: extractor(one), device, 1)  # (a second warm-up inside) one image, steady state
    # the timed batch: the fit's batch size unless that exceeds the budget; the best of up to 3 runs (the fastest
    # run is the one least disturbed by other work on the machine)
    batch = max(1, min(batch_size, int(_FORWARD_BUDGET_S / 2 / max(single, 1e-4))))
    images = torch.randn(batch, 3, imagesize, imagesize, generator=generator).to(device)
    repeats = max(1, min(3, int(_FORWARD_BUDGET_S / 2 / max(single * batch, 1e-4))))
    seconds = min(single * batch, _best(lambda: extractor(images), device, repeats)) / batch
    scale = batch_size / batch
    kept = max(0, resident_bytes() - before) * scale if device.type == "cpu" else 0.0
    gpu = (torch.cuda.max_memory_allocated(device) - gpu_before) * scale if device.type == "cuda" else 0.0
    return seconds, batch, (int(grid[0]), int(grid[1])), float(kept), float(gpu)


def measure_decode(samples: Any, count: int = 3) -> float | None:
    """Seconds to read and preprocess one item of ``samples`` (a dataset of images: ``samples[i]``), the median of
    ``count`` items spread over it after one warm-up item; None when there are none."""
    if samples is None or not isinstance(samples, Sized) or len(samples) == 0:
        return None
    n = len(samples)
    samples[0]  # type: ignore[index]  # warm-up: codec libraries, caches
    picks = sorted({min(n - 1, round(i * (n - 1) / max(1, count - 1))) for i in range(count)})
    times = []
    for index in picks:
        start = time.perf_counter()
        samples[index]  # type: ignore[index]
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def measure_row_seconds(device: torch.device, rows: int = _ROW_BENCH_ROWS, iterations: int = 12) -> float:
    """Seconds per row of the greedy coreset's plain distance update on ``device``: for a selected point ``s``,
    ``sqrt(clamp(|x|^2 + |s|^2 - 2 x.s, 0))`` of every row of a ``[rows, 128]`` bank (chunked like the coreset),
    then the running minimum and its argmax."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(rows, PROJECTION_DIM, generator=generator).to(device)
    x_sq = (x * x).sum(1)
    running = torch.full((rows,), float("inf"), device=device)
    out = torch.empty(rows, device=device)
    chunk = _ROW_CHUNK if device.type == "cpu" else rows

    def step() -> None:
        idx = int(torch.argmax(running))
        s, s_sq = x[idx], x_sq[idx]
        for start in range(0, rows, chunk):
            end = start + chunk
            out[start:end] = (-2 * torch.matmul(x[start:end], s) + x_sq[start:end] + s_sq).clamp_min(0).sqrt()
        torch.minimum(running, out, out=running)

    def loop() -> None:
        for _ in range(iterations):
            step()

    return _best(loop, device, 2) / (iterations * rows)


def measure_copy_gbps(device: torch.device, mib: int = 128) -> float:
    """Memory copy bandwidth on ``device`` in GB/s (bytes read + written)."""
    source = torch.ones(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    seconds = _best(lambda: target.copy_(source), device, 3)
    return 2 * source.numel() * 4 / seconds / 1e9


def measure_matmul_gflops(device: torch.device, size: int = 1024) -> float:
    """float32 ``size x size`` matrix product rate on ``device`` in GFLOP/s."""
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    seconds = _best(lambda: a @ b, device, 3)
    return 2 * size**3 / seconds / 1e9


def measure_machine(config: Any, device: torch.device, samples: Sequence[Any] | None = None) -> MachineSpeeds:
    """Every measurement of :class:`MachineSpeeds` for a PatchCore ``config`` on ``device`` (about a second on a
    2-core CPU with efficientnet_lite0 at 224 px; the backbone is built with random weights: the same shapes and
    arithmetic as the real ones, and no weights file is read)."""
    start = time.perf_counter()
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        load = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        extractor = PatchFeatureExtractor(config.backbone, config.layers, config.patch_size,
                                          config.pretrain_embed_dimension, config.target_embed_dimension,
                                          weights="random", patch_stride=config.patch_stride,
                                          precision=config.precision).to(device)
    _sync(device)
    base = resident_bytes()
    gpu_model = float(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0.0
    seconds, batch, grid, kept, gpu_activations = measure_extractor(extractor, config.imagesize, config.batch_size,
                                                                    device)
    decode = measure_decode(samples)
    del extractor
    return MachineSpeeds(device=str(device), threads=torch.get_num_threads(), feature_seconds_per_image=seconds,
                         forward_batch=batch, grid=grid, activation_bytes=kept, gpu_model_bytes=gpu_model,
                         gpu_activation_bytes=gpu_activations, decode_seconds_per_image=decode,
                         row_seconds=measure_row_seconds(device), copy_gbps=measure_copy_gbps(device),
                         matmul_gflops=measure_matmul_gflops(device), base_rss_bytes=float(base),
                         measure_seconds=time.perf_counter() - start, load_average=load, cpus=os.cpu_count() or 1)
