"""Time and peak memory of the approximate greedy coreset sampler.

    python -m benchmarks.coreset_memory --n 1000000 --dim 1024 --ratio 0.001
    python -m benchmarks.coreset_memory --n 163856 --dim 384 --ratio 0.1 --clusters 200 --reference-iters 500

Memory (GiB, :class:`benchmarks.memory.PeakMemory`): the features' own peak, and the selection's peak with what it
added above the RSS it started with (the projected bank, its block-ordered copy, the per-selection buffers).
``--out F.json`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.memory import PeakMemory
from patchcore_lib.components.sampling import ApproximateGreedyCoresetSampler


def make_features(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """``[n, dim]`` float32: uniform noise, or a mixture of ``clusters`` Gaussians (built in place)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.empty(n, dim, dtype=torch.float32)
    chunk = 65536
    centres = torch.randn(max(clusters, 1), dim, generator=g) * 2 if clusters > 0 else None
    for s in range(0, n, chunk):
        block = features[s : s + chunk]
        block.normal_(generator=g) if clusters > 0 else block.uniform_(generator=g)
        if centres is not None:
            labels = torch.randint(0, clusters, (block.shape[0],), generator=g)
            block.mul_(0.5).add_(centres[labels])
    return features


def reference_seconds_per_iter(sampler: ApproximateGreedyCoresetSampler, features: torch.Tensor, iters: int) -> list:
    """Seconds per iteration of the plain loop (full pass over the projected bank per selection),
    with dot products as ``(X * s).sum(1)`` and as ``X @ s``."""
    reduced = sampler.project(features)
    sq = (reduced * reduced).sum(1)
    starts = sampler.start_points(len(reduced)).tolist()

    def dist(j: int) -> torch.Tensor:
        return (-2 * (reduced * reduced[j]).sum(1) + sq + sq[j]).clamp_min(0).sqrt()

    def dist_mv(j: int) -> torch.Tensor:  # BLAS matrix-vector product variant
        return (-2 * (reduced @ reduced[j]) + sq + sq[j]).clamp_min(0).sqrt()

    result = []
    for fn in (dist, dist_mv):
        running = torch.stack([fn(j) for j in starts], dim=-1).mean(-1)
        t0 = time.perf_counter()
        for _ in range(iters):
            idx = int(torch.argmax(running))
            running = torch.minimum(running, fn(idx))
        result.append((time.perf_counter() - t0) / iters)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--ratio", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=0, help="mixture of Gaussians (0: uniform noise)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--reference-iters", type=int, default=0, help="also time this many plain-loop iterations")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with PeakMemory() as features_memory:
        features = make_features(args.n, args.dim, args.clusters, args.seed)
    sampler = ApproximateGreedyCoresetSampler(args.ratio, seed=args.seed, show_progress=args.progress)
    with PeakMemory() as select_memory:
        t0 = time.perf_counter()
        indices = sampler.select(features)
        seconds = time.perf_counter() - t0
    stats = getattr(sampler, "last_stats", {})
    print(f"features {args.n} x {args.dim} float32 ({features.numel() * 4 / 1024**3:.2f} GiB), "
          f"selected {indices.numel()} (ratio {args.ratio}), threads {torch.get_num_threads()}")
    print(f"approx_greedy seconds: {seconds:.2f}  {stats}")
    print(f"peak RSS while selecting: {select_memory.peak_gib:.2f} GiB, of which the selection added "
          f"{select_memory.peak_above_start_gib:.2f} GiB (creating the features: peak {features_memory.peak_gib:.2f} "
          f"GiB, +{features_memory.peak_above_start_gib:.2f})")
    record = {"n": args.n, "dim": args.dim, "ratio": args.ratio, "selected": int(indices.numel()),
              "seconds": seconds, "stats": stats, "features": features_memory.as_dict(),
              "select": select_memory.as_dict()}
    if args.reference_iters:
        timings = reference_seconds_per_iter(sampler, features, args.reference_iters)
        for name, per_iter in zip(("(X*s).sum", "X @ s"), timings):
            print(f"plain reference loop [{name}]: {per_iter * 1e3:.2f} ms/iteration -> "
                  f"{per_iter * indices.numel():.1f} s extrapolated for {indices.numel()} iterations")
        record["reference_seconds_per_iteration"] = dict(zip(("(X*s).sum", "X @ s"), timings))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
