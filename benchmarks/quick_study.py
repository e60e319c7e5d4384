"""The quick study users run first (issue 31, 1): ``bash scripts/study.sh`` after set-up, i.e.
``python -m patchcore_lib.study -f params/quick.yaml``, timed from a cold start on this machine.

    python -m benchmarks.quick_study [--preset params/quick.yaml] [--out benchmarks/results/quick_study.json]

Cold: a fresh reports folder and a fresh per-user cache (``PATCHCORE_CACHE``: the synthetic data, the feature
store), both temporary, so nothing of an earlier run is reused: what a new user waits for after
``scripts/setup_env.sh``. Records the wall time of the whole command, each notebook's own seconds (the runner's
records), the peak resident set of the process tree (the runner and its Jupyter kernels) and the machine.
README.md's results block shows the wall time (``python -m patchcore_lib.study.readme``). Target: < 60 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.memory import PeakMemory
from patchcore_lib.study.readme import notebook_records

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "quick_study.json"


def notebook_seconds(reports_dir: Path) -> dict[str, float]:
    """``{run slot: seconds}`` from the study's run records (:func:`patchcore_lib.study.readme.notebook_records`)."""
    return {record["slot"]: float(record["seconds"]) for record in notebook_records(reports_dir)}


def run(preset: Path) -> dict:
    """Runs the study once, cold, and returns its record (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="quick_study_") as scratch:
        reports, cache = Path(scratch) / "reports", Path(scratch) / "cache"
        env = {**os.environ, "PATCHCORE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
        command = [sys.executable, "-m", "patchcore_lib.study", "-f", str(preset), "--reports-dir", str(reports)]
        with PeakMemory(children=True, interval=0.02) as memory:
            start = time.perf_counter()
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(f"the study failed (exit {result.returncode}): {' '.join(command)}")
        per_notebook = notebook_seconds(reports)
    return {"preset": preset.relative_to(ROOT).as_posix() if preset.is_relative_to(ROOT) else str(preset),
            "command": "python -m patchcore_lib.study -f " + preset.name + " (fresh reports folder and cache)",
            "wall_seconds": round(seconds, 1), "target_seconds": TARGET_SECONDS,
            "meets_target": seconds < TARGET_SECONDS,
            "notebook_seconds": {k: round(v, 1) for k, v in per_notebook.items()},
            "notebooks_total_seconds": round(sum(per_notebook.values()), 1),
            "peak_rss_gib": memory.as_dict().get("tree_peak_rss_gib"),
            "machine": f"{os.cpu_count()} CPU cores", "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=str(ROOT / "params" / "quick.yaml"))
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON record ('-': print only)")
    args = parser.parse_args()
    record = run(Path(args.preset).resolve())
    print(json.dumps(record, indent=2))
    if args.out != "-":
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
