"""``patchcore predict`` as a line PC runs it (issue 30, 4): images/s with heat-map overlays over a folder, and the
start-up to the first score (a fresh process scoring one image), each in a fresh ``patchcore`` process.

    python -m benchmarks.predict_throughput --model model.pt --images DIR [--repeat 3] [--out F.json]

Targets: >= 10 images/s steady state with overlays on 2 CPU cores (bottle's 83 test images); start-up to the
first score < 3 s. "Steady state" is the rate the command prints for the images it scored (model loading
excluded); the wall time of the whole command is reported beside it. Memory: each ``patchcore predict`` process's
own peak resident set (GiB, :func:`benchmarks.memory.run_child`), the median over the repeats for the folder runs
(``peak_rss_gib``) and for the one-image runs (``first_score_peak_rss_gib``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.memory import run_child


def run_predict(model: str, inputs: list[str], extra: list[str]) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS GiB of the predict process) of one ``patchcore predict`` run."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result, peak_gib = run_child([sys.executable, "-m", "patchcore_lib", "predict", "--model", model, *inputs,
                                      "--out", out, "--no-resume", "--quiet", *extra])
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"predict failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds, result.stdout, peak_gib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".bmp"))
    rates, walls, firsts, peaks, first_peaks = [], [], [], [], []
    for _ in range(args.repeat):
        wall, stdout, peak = run_predict(args.model, [args.images], [])
        rate = re.search(r"\(([0-9.]+) images/s\)", stdout)
        rates.append(float(rate.group(1)) if rate else float("nan"))
        walls.append(wall)
        peaks.append(peak)
        first_wall, _, first_peak = run_predict(args.model, [str(images[0])], [])
        firsts.append(first_wall)
        first_peaks.append(first_peak)
    result = {"machine": f"{os.cpu_count()} CPU cores", "images": len(images), "repeat": args.repeat,
              "images_per_second_scoring_with_overlays": statistics.median(rates),
              "whole_command_seconds": statistics.median(walls),
              "whole_command_images_per_second": len(images) / statistics.median(walls),
              "start_to_first_score_seconds": statistics.median(firsts),
              "peak_rss_gib": round(statistics.median(peaks), 4),
              "first_score_peak_rss_gib": round(statistics.median(first_peaks), 4),
              "targets": {"images_per_second": 10.0, "start_to_first_score_seconds": 3.0}}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
