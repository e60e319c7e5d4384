"""Benchmark harness: the pipeline's speed and memory against this machine's measured limits.

Dataset mode (one process, one run)::

    python -m benchmarks.run --data-root DIR --category NAME --backbone NAME [--device cpu|cuda] [--out F.json]
        [--layout auto|mvtec|folder] [--crop center|none] [--resize 256] [--imagesize 224] [--coreset-ratio 0.1]

Synthetic-workload mode (no dataset; scaling of fit/predict with N and image size)::

    python -m benchmarks.run synthetic --n 10000 100000 1000000 --dim 1024 --queries 784 [--out F.json]

MVTec-sized workload (15 categories, 3,629 train + 1,725 test images, WideResNet-50, random weights)::

    python -m benchmarks.run mvtec-workload --device cuda [--scale 1.0] [--out F.json]

Limits measured in the same run: backbone forward-only images/s on the same inputs, dense matmul
GFLOP/s, memory copy GB/s. Ratios: feature throughput / forward-only throughput, kNN effective GFLOP/s /
matmul GFLOP/s, coreset bytes touched per second / copy GB/s.

Memory (GiB): every row and stage carries its own peak, measured by :class:`benchmarks.memory.PeakMemory` around
it: ``peak_rss_gib`` (the process's resident set at its highest while the row ran) and
``peak_rss_above_start_gib`` (what the row added to the RSS it started with); on CUDA also ``peak_gpu_gib``.
Dataset mode: ``memory`` holds them per stage (``fit``, ``predict``, ``features``, ``coreset``, ``knn``) and
``fit_peak_rss_gib`` / ``predict_peak_rss_gib`` repeat the two main ones; mvtec-workload mode: each category row
(``fit_*`` / ``predict_*`` keys); synthetic mode: each row. The top-level ``peak_rss_gib`` of the dataset and
mvtec-workload results stays the whole process's lifetime peak (``ru_maxrss``), also as ``process_peak_rss_gib``.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.memory import PeakMemory


def peak_rss_gib() -> float:
    """The process's lifetime peak RSS in GiB (``ru_maxrss``, KiB on Linux); a row's own peak: PeakMemory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


# ---------------------------------------------------------------- machine limits
def matmul_gflops(device: torch.device, m: int = 2048, k: int = 1024, n: int = 4096) -> float:
    """Dense float32 matrix product rate (GFLOP/s): the better of a kNN-shaped product (queries x dim x bank)
    and a square 4096 product, so that the limit is the machine's, not one shape's (BLAS reaches its peak
    only on some shapes; a kNN that beats a slow shape has not beaten the hardware)."""
    best = 0.0
    for rows, inner, cols in ((m, k, n), (4096, 4096, 4096)):
        a, b = torch.randn(rows, inner, device=device), torch.randn(inner, cols, device=device)
        seconds = best_time(lambda: a @ b, device)
        best = max(best, 2 * rows * inner * cols / seconds / 1e9)
    return best


def copy_gbps(device: torch.device, mib: int = 512) -> float:
    """Memory copy bandwidth (GB/s), counting bytes read plus bytes written."""
    src = torch.empty(mib * 1024 * 1024 // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / seconds / 1e9


# ---------------------------------------------------------------- dataset mode
def bench_dataset(args: argparse.Namespace) -> dict[str, Any]:
    from patchcore_lib.data import open_split
    from patchcore_lib.components.knn import NearestNeighbourSearch
    from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
    from patchcore_lib.components.sampling import make_sampler

    config = PatchCoreConfig(backbone=args.backbone, weights=args.weights, resize=args.resize, imagesize=args.imagesize,
                             crop=args.crop, coreset_ratio=args.coreset_ratio, device=args.device,
                             batch_size=args.batch_size, precision=args.precision)
    model = PatchCore(config)
    device = model.device
    result: dict[str, Any] = {"mode": "dataset", "config": config.to_dict(), "device": str(device),
                              "torch_threads": torch.get_num_threads(), "category": args.category}
    memory: dict[str, dict[str, float]] = {}
    result["memory"] = memory

    # End-to-end fit and predict, exactly as users run them (data loading included).
    train = open_split(args.data_root, args.category, "train", config.resize, config.imagesize, layout=args.layout,
                       crop=config.crop)
    test = open_split(args.data_root, args.category, "test", config.resize, config.imagesize, layout=args.layout,
                      crop=config.crop)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakMemory() as meter:
        start = time.perf_counter()
        model.fit(train, show_progress=False)
        result["fit_seconds"] = time.perf_counter() - start
    memory["fit"] = meter.as_dict()
    result["fit_stages"] = dict(model.timings)
    with PeakMemory() as meter:
        predictions = model.predict_dataset(test, show_progress=False)
    memory["predict"] = meter.as_dict()
    result["fit_peak_rss_gib"] = memory["fit"]["peak_rss_gib"]
    result["predict_peak_rss_gib"] = memory["predict"]["peak_rss_gib"]
    result["predict_seconds_per_image"] = predictions.seconds / len(test)
    result["num_train"], result["num_test"] = len(train), len(test)
    result["memory_bank_bytes"] = model.memory_bank.numel() * model.memory_bank.element_size()
    result["memory_bank_shape"] = list(model.memory_bank.shape)

    # Stage throughputs on preloaded inputs (decoding excluded from both sides of each ratio).
    with PeakMemory() as meter:
        batch = torch.stack([train[i]["image"] for i in range(min(len(train), 4 * config.batch_size))])
        batch = batch.to(device)
        chunks = batch.split(config.batch_size)
        with torch.no_grad():  # interleaved, best of several: both sides see the same machine state
            forward = features = float("inf")
            for _ in range(3):
                forward = min(forward, best_time(lambda: [model.extractor.backbone(c) for c in chunks], device))
                features = min(features, best_time(lambda: [model.extractor(c) for c in chunks], device))
    memory["throughput"] = meter.as_dict()
    result["forward_only_images_per_s"] = len(batch) / forward
    result["feature_images_per_s"] = len(batch) / features
    start = time.perf_counter()
    for i in range(min(len(train), 32)):
        train[i]
    result["decode_images_per_s"] = min(len(train), 32) / (time.perf_counter() - start)

    with PeakMemory() as meter:
        all_features = model.extract_features(train, show_progress=False)
    memory["features"] = meter.as_dict()
    sampler = make_sampler("approx_greedy", config.coreset_ratio, seed=config.seed, device=device, show_progress=False)
    with PeakMemory() as meter:
        start = time.perf_counter()
        indices = sampler.select(all_features)
        coreset_seconds = time.perf_counter() - start
    memory["coreset"] = meter.as_dict()
    stats = getattr(sampler, "last_stats", {}) or {}
    result["coreset_seconds"] = coreset_seconds
    result["coreset_iterations_per_s"] = len(indices) / coreset_seconds
    rows = stats.get("rows_processed", len(all_features) * len(indices))
    projection_dim = getattr(sampler, "projection_dim", 128)
    # each processed row: its projected vector (P floats), its squared norm and running distance read + written
    bytes_touched = rows * (projection_dim + 3) * 4
    result["coreset_bytes_touched_per_s"] = bytes_touched / coreset_seconds
    # what the plain loop (every row, every iteration) would have to stream per second to be as fast
    plain_bytes = len(all_features) * len(indices) * (projection_dim + 3) * 4
    result["coreset_plain_equivalent_bytes_per_s"] = plain_bytes / coreset_seconds
    result["coreset_stats"] = stats
    del all_features

    with PeakMemory() as meter:
        queries, _ = model.embed(torch.stack([test[i]["image"] for i in range(min(len(test), 8))]))
        queries = queries.reshape(-1, queries.shape[-1])
        search = NearestNeighbourSearch(config.num_nn, config.distance, config.knn_backend).fit(model.memory_bank)
        knn_seconds = best_time(lambda: search.query(queries), device)
    memory["knn"] = meter.as_dict()
    bank, dim = model.memory_bank.shape
    result["knn_backend"] = search.backend
    result["knn_queries_per_s"] = len(queries) / knn_seconds
    result["knn_effective_gflops"] = 2 * len(queries) * bank * dim / knn_seconds / 1e9

    limits = {"forward_only_images_per_s": result["forward_only_images_per_s"],
              "matmul_gflops": matmul_gflops(device, m=min(len(queries), 4096), k=dim, n=bank),
              "copy_gbps": copy_gbps(device)}
    result["limits"] = limits
    result["ratios"] = {
        "feature_vs_forward": result["feature_images_per_s"] / limits["forward_only_images_per_s"],
        "knn_vs_matmul": result["knn_effective_gflops"] / limits["matmul_gflops"],
        "coreset_vs_copy": result["coreset_bytes_touched_per_s"] / 1e9 / limits["copy_gbps"],
        "coreset_plain_equivalent_vs_copy": result["coreset_plain_equivalent_bytes_per_s"] / 1e9 / limits["copy_gbps"],
    }
    result["peak_rss_gib"] = result["process_peak_rss_gib"] = peak_rss_gib()
    if device.type == "cuda":  # each PeakMemory resets torch's peak: the run's peak is the largest of them
        result["peak_gpu_gib"] = max([torch.cuda.max_memory_allocated(device) / 1024**3]
                                     + [m.get("peak_gpu_gib", 0.0) for m in memory.values()])
    return result


# ---------------------------------------------------------------- synthetic mode
def clustered_features(n: int, dim: int, clusters: int, seed: int, device: torch.device) -> torch.Tensor:
    """[n, dim] float32 mixture of Gaussians, generated in place in chunks (no copies)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    centres = torch.randn(clusters, dim, generator=g) * 2
    for start in range(0, n, 65536):
        block = out[start:start + 65536]
        block.normal_(generator=g).mul_(0.5).add_(centres[torch.randint(0, clusters, (len(block),), generator=g)])
    return out.to(device)


def bench_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    from patchcore_lib.components.knn import NearestNeighbourSearch
    from patchcore_lib.components.sampling import make_sampler

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for n in args.n:
        with PeakMemory() as meter:  # the row: its features, coreset, bank, index and queries
            features = clustered_features(n, args.dim, args.clusters, 0, device)
            sampler = make_sampler("approx_greedy", args.coreset_ratio, device=device, show_progress=False)
            start = time.perf_counter()
            indices = sampler.select(features)
            _sync(device)
            coreset = time.perf_counter() - start
            bank = features[indices.to(device)]
            del features
            search = NearestNeighbourSearch(1, "sqeuclidean").fit(bank)
            queries = clustered_features(args.queries, args.dim, args.clusters, 1, device)
            knn = best_time(functools.partial(search.query, queries), device, repeats=1)
        # peak_rss_gib: this row's own peak (before: the process's lifetime peak, now process_peak_rss_gib)
        rows.append({"n": n, "dim": args.dim, "coreset_ratio": args.coreset_ratio, "bank": len(bank),
                     "fit_seconds": coreset, "predict_seconds_per_image": knn * args.patches_per_image / args.queries,
                     **meter.as_dict(), "process_peak_rss_gib": peak_rss_gib()})
        del bank, search, queries, indices  # the next row starts from the same baseline
        print(json.dumps(rows[-1]), flush=True)
    return {"mode": "synthetic", "device": str(device), "rows": rows, "copy_gbps": copy_gbps(device),
            "matmul_gflops": matmul_gflops(device, k=args.dim)}


# ---------------------------------------------------------------- MVTec-sized workload (GPU target)
MVTEC_TRAIN = {"bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264, "hazelnut": 391,
               "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320, "tile": 230, "toothbrush": 60,
               "transistor": 213, "wood": 247, "zipper": 240}  # 3,629 train images
MVTEC_TEST = {"bottle": 83, "cable": 150, "capsule": 132, "carpet": 117, "grid": 78, "hazelnut": 110,
              "leather": 124, "metal_nut": 115, "pill": 167, "screw": 160, "tile": 117, "toothbrush": 42,
              "transistor": 100, "wood": 79, "zipper": 151}  # 1,725 test images


def bench_mvtec_workload(args: argparse.Namespace) -> dict[str, Any]:
    """Fit + predict 15 categories with MVTec AD's image counts on in-memory images (random weights allowed).

    ``--scale`` shrinks the counts (e.g. 0.02 for a CPU smoke test); 1.0 is the full 3,629 + 1,725 images.
    """
    from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig

    config = PatchCoreConfig(backbone=args.backbone, weights=args.weights, resize=args.imagesize,
                             imagesize=args.imagesize, coreset_ratio=args.coreset_ratio, device=args.device,
                             batch_size=args.batch_size, precision=args.precision)
    model = PatchCore(config)
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    generator = torch.Generator().manual_seed(0)
    stages = {"extract_seconds": 0.0, "coreset_seconds": 0.0, "index_seconds": 0.0, "predict_seconds": 0.0}
    per_category = []
    total_start = time.perf_counter()
    for category in MVTEC_TRAIN:
        n_train = max(2, round(MVTEC_TRAIN[category] * args.scale))
        n_test = max(2, round(MVTEC_TEST[category] * args.scale))
        train = torch.randn(n_train, 3, args.imagesize, args.imagesize, generator=generator)
        test = torch.randn(n_test, 3, args.imagesize, args.imagesize, generator=generator)
        with PeakMemory() as fit_memory:
            model.fit(list({"image": b} for b in train.split(config.batch_size)), show_progress=False)
        for key in ("extract_seconds", "coreset_seconds", "index_seconds"):
            stages[key] += model.timings[key]
        with PeakMemory() as predict_memory:
            start = time.perf_counter()
            for batch in test.split(config.batch_size):
                model.predict(batch)
            _sync(device)
            seconds = time.perf_counter() - start
        stages["predict_seconds"] += seconds
        per_category.append({"category": category, "train": n_train, "test": n_test,
                             "fit_seconds": model.timings["fit_seconds"], "predict_seconds": seconds,
                             **fit_memory.as_dict("fit_"), **predict_memory.as_dict("predict_")})
        del train, test
        print(json.dumps(per_category[-1]), flush=True)
    total = time.perf_counter() - total_start
    n_train = sum(r["train"] for r in per_category)
    n_test = sum(r["test"] for r in per_category)
    result = {"mode": "mvtec-workload", "device": str(device), "config": config.to_dict(), "scale": args.scale,
              "train_images": n_train, "test_images": n_test, "total_seconds": total, "stages": stages,
              "train_images_per_s": n_train / stages["extract_seconds"],
              "test_images_per_s": n_test / stages["predict_seconds"], "per_category": per_category,
              "limits": {"matmul_gflops": matmul_gflops(device), "copy_gbps": copy_gbps(device)},
              "peak_rss_gib": peak_rss_gib(), "process_peak_rss_gib": peak_rss_gib(),
              "fit_peak_rss_gib": max(r["fit_peak_rss_gib"] for r in per_category),
              "predict_peak_rss_gib": max(r["predict_peak_rss_gib"] for r in per_category)}
    images = torch.randn(config.batch_size, 3, args.imagesize, args.imagesize, device=device)
    with torch.no_grad():
        forward = best_time(lambda: model.extractor.backbone(images), device)
        features = best_time(lambda: model.extractor(images), device)
    result["limits"]["forward_only_images_per_s"] = config.batch_size / forward
    result["feature_images_per_s"] = config.batch_size / features
    if device.type == "cuda":  # each PeakMemory resets torch's peak: the run's peak is the largest of them
        result["peak_gpu_gib"] = max([torch.cuda.max_memory_allocated(device) / 1024**3]
                                     + [r.get(f"{stage}_peak_gpu_gib", 0.0) for r in per_category
                                        for stage in ("fit", "predict")])
    return result


def print_table(result: dict[str, Any]) -> None:
    if result["mode"] == "mvtec-workload":
        print(f"{result['train_images']} train + {result['test_images']} test images on {result['device']}: "
              f"{result['total_seconds']:.1f} s total")
        for key, value in result["stages"].items():
            print(f"  {key:<18} {value:>8.1f}")
        print(f"  feature images/s {result['feature_images_per_s']:.1f} vs forward-only "
              f"{result['limits']['forward_only_images_per_s']:.1f}; matmul {result['limits']['matmul_gflops']:.0f} GFLOP/s; "
              f"copy {result['limits']['copy_gbps']:.1f} GB/s")
        gpu = "peak_gpu_gib" in result
        print(f"  {'category':<12} {'fit s':>7} {'fit RSS':>8} {'(+added)':>9} {'predict RSS':>12}"
              + (f" {'fit GPU':>8}" if gpu else "") + "   (GiB)")
        for row in result["per_category"]:
            print(f"  {row['category']:<12} {row['fit_seconds']:>7.1f} {row['fit_peak_rss_gib']:>8.2f} "
                  f"{row['fit_peak_rss_above_start_gib']:>+9.2f} {row['predict_peak_rss_gib']:>12.2f}"
                  + (f" {row.get('fit_peak_gpu_gib', float('nan')):>8.2f}" if gpu else ""))
        return
    if result["mode"] == "synthetic":
        print(f"{'N':>9} {'bank':>7} {'fit s':>8} {'s/img':>7} {'RSS GiB':>8} {'(+added)':>9}")
        for row in result["rows"]:
            print(f"{row['n']:>9} {row['bank']:>7} {row['fit_seconds']:>8.1f} {row['predict_seconds_per_image']:>7.3f} "
                  f"{row['peak_rss_gib']:>8.2f} {row.get('peak_rss_above_start_gib', float('nan')):>+9.2f}")
        return
    lines = [
        ("fit seconds", result["fit_seconds"]), ("predict s / image", result["predict_seconds_per_image"]),
        ("feature images/s", result["feature_images_per_s"]), ("forward-only images/s", result["forward_only_images_per_s"]),
        ("coreset seconds", result["coreset_seconds"]), ("coreset iterations/s", result["coreset_iterations_per_s"]),
        ("kNN queries/s", result["knn_queries_per_s"]), ("kNN GFLOP/s", result["knn_effective_gflops"]),
        ("matmul GFLOP/s", result["limits"]["matmul_gflops"]), ("copy GB/s", result["limits"]["copy_gbps"]),
        ("ratio feature/forward", result["ratios"]["feature_vs_forward"]),
        ("ratio kNN/matmul", result["ratios"]["knn_vs_matmul"]),
        ("ratio coreset/copy", result["ratios"]["coreset_vs_copy"]),
        ("ratio coreset plain-equivalent/copy", result["ratios"]["coreset_plain_equivalent_vs_copy"]),
        ("peak RSS GiB (whole process)", result["peak_rss_gib"]),
        ("memory bank MiB", result["memory_bank_bytes"] / 2**20),
    ]
    for stage, values in result.get("memory", {}).items():
        lines.append((f"peak RSS GiB: {stage}", values["peak_rss_gib"]))
        lines.append((f"  added by {stage}", values["peak_rss_above_start_gib"]))
        if "peak_gpu_gib" in values:
            lines.append((f"peak GPU GiB: {stage}", values["peak_gpu_gib"]))
    for name, value in lines:
        print(f"{name:<36} {value:>10.3f}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv[0] if argv and argv[0] in ("synthetic", "mvtec-workload") else "dataset"
    synthetic = mode == "synthetic"
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--precision", default="float32", help="backbone precision: float32, tf32, bfloat16, float16")
    if synthetic:
        argv = argv[1:]
        parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
        parser.add_argument("--dim", type=int, default=1024)
        parser.add_argument("--queries", type=int, default=784, help="query features scored per timing")
        parser.add_argument("--patches-per-image", type=int, default=784, help="784 at 224 px, 1600 at 320 px")
        parser.add_argument("--clusters", type=int, default=500)
    elif mode == "mvtec-workload":
        argv = argv[1:]
        parser.add_argument("--backbone", default="wide_resnet50_2")
        parser.add_argument("--weights", default="random")
        parser.add_argument("--imagesize", type=int, default=224)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--scale", type=float, default=1.0)
    else:
        parser.add_argument("--data-root", required=True)
        parser.add_argument("--category", required=True)
        parser.add_argument("--backbone", default="efficientnet_lite0")
        parser.add_argument("--weights", default=None)
        parser.add_argument("--resize", type=int, default=256)
        parser.add_argument("--imagesize", type=int, default=224)
        parser.add_argument("--crop", default="center", help="center (official) or none (whole image)")
        parser.add_argument("--layout", default="auto", help="dataset layout of --data-root (auto, mvtec, folder)")
        parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    runner = {"synthetic": bench_synthetic, "mvtec-workload": bench_mvtec_workload, "dataset": bench_dataset}[mode]
    result = runner(args)
    if args.device == "auto":
        args.device = result["device"]
    print_table(result)
    if args.out:
        from patchcore_lib.utils.files import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
