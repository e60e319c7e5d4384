"""How close ``patchcore plan`` comes to real fits: predicted vs measured fit seconds (per stage) and peak RSS.

    python -m benchmarks.plan_accuracy [--mvtec-root ../shared/data/mvtec_ad] [--tiles-root ../shared/data]
        [--cases bottle tiles] [--backbone efficientnet_lite0] [--device cpu] [--calibration-folds 0]
        [--out benchmarks/results/plan_accuracy.json] [--calibrate]

For each case, in fresh processes one after the other: ``patchcore plan ... --json`` (its prediction and how long
planning took), then the fit through the library as ``benchmarks/run.py``'s dataset mode runs it (``PatchCore(config)
.fit(open_split(...train...))``, no progress bars; ``--calibration-folds K`` also calibrates a threshold as
``patchcore fit`` does by default), with its wall time per stage (``model.timings``) and its peak resident memory
(:mod:`benchmarks.memory`: the fit process's own peak, and the peak while ``fit`` ran; on CUDA the peak of
allocated GPU memory). Cases (target: every prediction within 30% of the measurement):

* ``bottle``: MVTec AD bottle, 209 images, resize 256, centre crop 224, 10% coreset (163,856 patches);
* ``tiles``: the magnetic tiles, 761 images, layout auto, ``crop none``, resize 224, imagesize 224, 10% coreset
  (596,624 patches).

``--calibrate`` prints, for each constant of ``patchcore_lib.detectors.planner.PlanConstants``, the value that makes
each case's prediction match its measurement and the value to paste (the mean over the cases; with two cases also
the pairs that scale differently with the problem size, solved together: the coreset's work fraction and how it
grows with the patch count, the resident copies of the projected bank and the additive RSS margin when both come
out positive).
Before the cases a small coreset in a child process loads (or compiles) the compiled coreset, so that no case pays
for its compilation. The machine's other load changes the measurements: calibrate on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.memory import PeakMemory, run_child

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GIB = 2**30

#: case -> (data-root option, category, options shared by the plan and the fit)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bottle": ("mvtec_root", "bottle", {"resize": 256, "imagesize": 224, "crop": "center", "coreset_ratio": 0.1}),
    "tiles": ("tiles_root", "magnetic_tile", {"resize": 224, "imagesize": 224, "crop": "none", "coreset_ratio": 0.1}),
}


# ---------------------------------------------------------------- the fit, in its own process
def fit_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit ``spec``'s configuration on its category's train split; stage seconds and memory (run in a child)."""
    import torch

    from patchcore_lib.data import open_split
    from patchcore_lib.detectors.patchcore import PatchCore, PatchCoreConfig
    from patchcore_lib.detectors.threshold import ThresholdOptions

    config = PatchCoreConfig(**spec["config"])
    model = PatchCore(config)
    train = open_split(spec["data_root"], spec["category"], "train", config.resize, config.imagesize,
                       layout="auto", crop=config.crop)
    folds = spec["calibration_folds"]
    calibration = ThresholdOptions(calibration_folds=folds) if folds else None
    load_before = os.getloadavg()[0]
    with PeakMemory(cuda=model.device.type == "cuda") as memory:
        start = time.perf_counter()
        model.fit(train, show_progress=False, calibration=calibration)
        seconds = time.perf_counter() - start
    timings = dict(model.timings)
    return {"seconds": {"extract": timings["extract_seconds"], "coreset": timings["coreset_seconds"],
                        "index": timings["index_seconds"], "calibration": timings.get("calibration_seconds", 0.0),
                        "total": seconds},
            "images": len(train), "bank": model.memory_bank_size, "memory": memory.as_dict(),
            "device": str(model.device), "threads": torch.get_num_threads(),
            "load_average": {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}}


def warm_up() -> None:
    """Load (or compile, when its on-disk cache is cold) the compiled coreset once before the measured fits: a
    coreset of 20,000 random 384-d features in a child process."""
    code = ("import torch; from patchcore_lib.components.sampling import make_sampler; "
            "make_sampler('approx_greedy', 0.05, show_progress=False).select(torch.randn(20000, 384))")
    start = time.perf_counter()
    result, _ = run_child([sys.executable, "-c", code], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the coreset warm-up failed: {result.stderr.strip()[-800:]}")
    print(f"coreset warm-up: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _json_tail(text: str) -> Any:
    """The JSON document that ends ``text`` (what a child printed last)."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.index("{"):])


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    root_option, category, options = CASES[name]
    data_root = str(getattr(args, root_option))
    config = dict(options, backbone=args.backbone, device=args.device)
    plan_command = [sys.executable, "-m", "patchcore_lib", "plan", "--data-root", data_root, "--category", category,
                    "--json", "--quiet", "--calibration-folds", str(args.calibration_folds)]
    for key, value in config.items():
        plan_command += [f"--{key.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    result, plan_peak = run_child(plan_command, cwd=REPO)
    plan_seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"patchcore plan failed for {name}: {result.stderr.strip()[-800:]}")
    plan = _json_tail(result.stdout)
    print(f"{name}: planned in {plan_seconds:.1f} s; fitting ...", file=sys.stderr, flush=True)
    spec = {"config": config, "data_root": data_root, "category": category,
            "calibration_folds": args.calibration_folds}
    fit_command = [sys.executable, "-m", "benchmarks.plan_accuracy", "--fit-child", json.dumps(spec)]
    result, fit_peak = run_child(fit_command, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the fit failed for {name}: {result.stderr.strip()[-800:]}")
    fit = _json_tail(result.stdout)
    fit["process_peak_rss_gib"] = fit_peak
    return {"case": name, "category": category, "data_root": data_root, "config": config,
            "plan_wall_seconds": plan_seconds, "plan_process_peak_rss_gib": plan_peak, "plan": plan, "fit": fit,
            "rows": compare(plan, fit)}


def compare(plan: dict[str, Any], fit: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (quantity, predicted, measured, relative error = predicted / measured - 1)."""
    rows = []
    for stage in ("total", "extract", "coreset", "index", "calibration"):
        if stage == "calibration" and not plan["calibration_folds"]:
            continue
        rows.append(("fit seconds" if stage == "total" else f"  {stage} seconds", plan["seconds"][stage],
                     fit["seconds"][stage]))
    rows.append(("peak RSS GiB", plan["peak_ram_gib"], fit["process_peak_rss_gib"]))
    if plan.get("peak_vram_gib") is not None and "peak_gpu_gib" in fit["memory"]:
        rows.append(("peak GPU GiB", plan["peak_vram_gib"], fit["memory"]["peak_gpu_gib"]))
    return [{"quantity": q, "predicted": p, "measured": m, "relative_error": (p / m - 1) if m > 0 else None}
            for q, p, m in rows]


def print_table(cases: list[dict[str, Any]]) -> None:
    print(f"{'case':<8} {'quantity':<22} {'predicted':>10} {'measured':>10} {'error':>8}")
    for case in cases:
        for row in case["rows"]:
            error = row["relative_error"]
            flag = "" if error is None or abs(error) <= 0.3 or row["measured"] < 1.0 else "  > 30%"
            text = "-" if error is None else f"{100 * error:+.0f}%"
            print(f"{case['case']:<8} {row['quantity']:<22} {row['predicted']:>10.2f} {row['measured']:>10.2f} "
                  f"{text:>8}{flag}")
        load, plan_load = case["fit"].get("load_average", {}), case["plan"]["speeds"].get("load_average")
        print(f"{case['case']:<8} {'(plan took, s)':<22} {case['plan_wall_seconds']:>10.1f}   1-minute load average: "
              f"plan {plan_load if plan_load is None else round(plan_load, 1)}, fit {load.get('before', 0):.1f} -> "
              f"{load.get('after', 0):.1f} on {load.get('cpus')} CPUs (above half the CPUs: other jobs ran)")


# ---------------------------------------------------------------- calibration
def _geomean(values: list[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _two_point(equations: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Least-squares (a, b) of ``y = a * u + b * v`` over ``equations`` (u, v, y); None when singular or when a or
    b comes out negative (the model does not fit: keep the one-constant answers)."""
    a11 = sum(u * u for u, _, _ in equations)
    a12 = sum(u * v for u, v, _ in equations)
    a22 = sum(v * v for _, v, _ in equations)
    b1 = sum(u * y for u, _, y in equations)
    b2 = sum(v * y for _, v, y in equations)
    det = a11 * a22 - a12 * a12
    if len(equations) < 2 or det <= 1e-12 * a11 * a22:
        return None
    first, second = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
    return (first, second) if first > 0 and second > 0 else None


def calibrate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The PlanConstants values that make each case's prediction match its measurement, and the ones to paste.

    One constant at a time per case (the others as they are); over two or more cases also the pairs that scale
    differently with the size of the problem: the coreset's work fraction at the reference size with its growth
    exponent (from the cases' shares of the plain loop's work), and the resident copies of the projected bank
    (x patches) with the additive margin."""
    per_case: dict[str, dict[str, float]] = {}
    coreset_eqs, memory_eqs = [], []
    for case in cases:
        plan, fit, name = case["plan"], case["fit"], case["case"]
        constants, terms = plan["constants"], plan["terms"]
        values = per_case.setdefault(name, {})
        values["extract_factor"] = fit["seconds"]["extract"] / terms["extract_raw_seconds"]
        loop = fit["seconds"]["coreset"] - terms["coreset_setup_seconds"]
        m, rows = plan["selections"], terms["coreset_row_seconds_total"]
        if plan["coreset_method"] == "pruned":
            # the share at this size, and referred to the reference size with the current exponent
            share = (loop - m * constants["coreset_seconds_per_selection"]) / rows
            values["coreset_work_fraction"] = share / terms["coreset_size_growth"]
            coreset_eqs.append((plan["patches"] / constants["coreset_reference_points"], share))
        elif plan["coreset_method"] == "plain":
            values["plain_seconds_per_selection"] = (loop - rows) / m
        elif plan["coreset_method"] == "cuda":
            values["cuda_seconds_per_selection"] = loop / m
        if not plan["vram"]:  # CPU: the resident peak
            missing = fit["process_peak_rss_gib"] * GIB - plan["peak_ram_bytes"]
            values["rss_margin_bytes"] = constants["rss_margin_bytes"] + missing
            if plan["peak_stage"] == "coreset":
                projected = terms["projected_bytes"]
                values["coreset_projected_copies"] = constants["coreset_projected_copies"] + missing / projected
                rest = missing + constants["rss_margin_bytes"] + constants["coreset_projected_copies"] * projected
                memory_eqs.append((projected, 1.0, rest))
    suggested: dict[str, float] = {}
    for key in sorted({k for v in per_case.values() for k in v}):
        found = [v[key] for v in per_case.values() if key in v]
        suggested[key] = _geomean(found) if key in ("extract_factor", "coreset_work_fraction") else \
            sum(found) / len(found)
    sizes = {round(math.log(size), 6) for size, _ in coreset_eqs}
    if len(sizes) >= 2 and all(share > 0 for _, share in coreset_eqs):
        # log share = log fraction + exponent * log(patches / reference): least squares over the cases
        xs = [math.log(size) for size, _ in coreset_eqs]
        ys = [math.log(share) for _, share in coreset_eqs]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        exponent = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        suggested["coreset_work_exponent"] = exponent
        suggested["coreset_work_fraction"] = math.exp(mean_y - exponent * mean_x)
    pair = _two_point(memory_eqs)
    if pair is not None:
        suggested["coreset_projected_copies"], suggested["rss_margin_bytes"] = pair
    else:  # one memory constant: the additive margin (the copies' per-case values are shown for information)
        suggested.pop("coreset_projected_copies", None)
    return {"per_case": per_case, "suggested": suggested}


def print_calibration(calibration: dict[str, Any], current: dict[str, float]) -> None:
    print("\nconstants that make the predictions match (per case), and the values to paste into PlanConstants "
          "(patchcore_lib/detectors/planner.py):")
    for key, value in calibration["suggested"].items():
        cases = ", ".join(f"{name} {v[key]:.4g}" for name, v in calibration["per_case"].items() if key in v)
        print(f"    {key}: float = {value:.4g}  # now {current.get(key, float('nan')):.4g}; per case: {cases or '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--mvtec-root", default=str(DATA / "mvtec_ad"), help="MVTec AD root holding bottle/")
    parser.add_argument("--tiles-root", default=str(DATA), help="root holding magnetic_tile/ (MVTec layout)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration-folds", type=int, default=0,
                        help="also calibrate a threshold in the fit (patchcore fit's default is 10)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "plan_accuracy.json"))
    parser.add_argument("--calibrate", action="store_true", help="print the constants that would match")
    parser.add_argument("--fit-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit_child:
        print(json.dumps(fit_child(json.loads(args.fit_child))))
        return 0
    warm_up()
    cases = [run_case(name, args) for name in args.cases]
    print_table(cases)
    record: dict[str, Any] = {"cases": cases}
    if args.calibrate:
        record["calibration"] = calibrate(cases)
        print_calibration(record["calibration"], cases[0]["plan"]["constants"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
