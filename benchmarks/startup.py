"""Start-up times users wait for (issue 31, 3): ``import patchcore_lib`` and ``patchcore --version`` /
``--help`` / ``fit --help``, each the median wall time of fresh interpreter runs on this machine.

    python -m benchmarks.startup [--repeat 5] [--out benchmarks/results/startup.json]

Targets: import < 1.5 s, ``--version`` / ``--help`` < 1 s (torch is imported only when a command needs it).
Each row also carries the median peak resident set of those processes (``peak_rss_gib``,
:func:`benchmarks.memory.run_child`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.memory import run_child

CASES = {
    "import patchcore_lib": [sys.executable, "-c", "import patchcore_lib"],
    "import torch (for scale)": [sys.executable, "-c", "import torch"],
    "patchcore --version": [sys.executable, "-m", "patchcore_lib", "--version"],
    "patchcore --help": [sys.executable, "-m", "patchcore_lib", "--help"],
    "patchcore fit --help": [sys.executable, "-m", "patchcore_lib", "fit", "--help"],
}
TARGETS = {"import patchcore_lib": 1.5, "patchcore --version": 1.0, "patchcore --help": 1.0}


def measure(command: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds and peak RSS (GiB) of ``repeat`` fresh runs of ``command``."""
    times, peaks = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        result, peak = run_child(command, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        peaks.append(peak)
    return times, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name, command in CASES.items():
        measure(command, 1)  # warm the file cache
        times, peaks = measure(command, args.repeat)
        median = statistics.median(times)
        target = TARGETS.get(name)
        rows.append({"case": name, "median_seconds": round(median, 3), "min_seconds": round(min(times), 3),
                     "target_seconds": target, "meets_target": None if target is None else median < target,
                     "peak_rss_gib": round(statistics.median(peaks), 4)})
        print(f"{name:<28} {median:6.2f} s (min {min(times):.2f}) {statistics.median(peaks):5.2f} GiB"
              + ("" if target is None else f"  target < {target} s: {'yes' if median < target else 'NO'}"))
    result = {"machine": f"{os.cpu_count()} CPU cores", "repeat": args.repeat, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
