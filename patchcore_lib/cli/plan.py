"""``patchcore plan``: predict a fit's time and peak memory before fitting (:mod:`patchcore_lib.detectors.planner`),
from the image count, the model options of ``patchcore fit`` and a second of measurements on this machine."""
from __future__ import annotations

import argparse
import json
from typing import Any

from patchcore_lib.cli.help import COMMAND_HELP
from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, add_model_options, exit_codes_text
from patchcore_lib.data import AUTO, LAYOUTS, normal_image_folder, open_split
from patchcore_lib.detectors import DETECTORS, PatchCoreConfig, ThresholdOptions
from patchcore_lib.detectors.plan_measure import MachineSpeeds
from patchcore_lib.detectors.planner import GIB, FitPlan, plan_fit
from patchcore_lib.errors import ConfigError
from patchcore_lib.utils.schema import add_options, flag, options_from_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of images, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("plan", help=COMMAND_HELP["plan"],
                                 description="Predict, before fitting, the time of each fit stage (feature "
                                             "extraction, coreset, index, threshold calibration) and the peak memory "
                                             "(RAM; VRAM on cuda) of `patchcore fit` with the same options, from the "
                                             "number of training images and about a second of measurements on this "
                                             "machine (the backbone on random images at --imagesize, a few images "
                                             "decoded, memory bandwidth, matrix-product rate). Images are counted "
                                             "without being read.",
                                 formatter_class=DefaultsFormatter, epilog=exit_codes_text())
    images = parser.add_argument_group("training images (one of: --images, --train, --data-root + --category)")
    images.add_argument("--images", type=_positive_int, metavar="N",
                        help="number of training images (with --train or --data-root: overrides their count, "
                             "their files still time the decoding)")
    images.add_argument("--train", help="folder of normal images (searched recursively), as patchcore fit --train")
    images.add_argument("--data-root", help="dataset root holding --category (its train split is counted)")
    images.add_argument("--category", help="category under --data-root")
    images.add_argument("--layout", default=AUTO, choices=(AUTO, *LAYOUTS.names()), help="layout of --data-root")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    calibration = parser.add_argument_group("threshold calibration (as patchcore fit; 0 folds: the fit alone)")
    names = add_options(calibration, ThresholdOptions)
    add_common_options(parser)
    parser.set_defaults(patchcore_names=add_model_options(parser), threshold_names=names, run=run)
    return parser


def training_images(args: argparse.Namespace, config: PatchCoreConfig) -> tuple[int, Any]:
    """(image count, a dataset of them for timing the decoding, or None) from --images / --train / --data-root."""
    if args.train and args.data_root:
        raise ConfigError("give the training images once: --train FOLDER or --data-root DIR --category NAME")
    if bool(args.data_root) != bool(args.category):
        raise ConfigError("--data-root and --category go together (the category's train split is counted)")
    dataset: Any = None
    if args.train:
        dataset = normal_image_folder(args.train, config.resize, config.imagesize, config.crop)
    elif args.data_root:
        dataset = open_split(args.data_root, args.category, "train", config.resize, config.imagesize,
                             layout=args.layout, crop=config.crop)
    elif args.images is None:
        raise ConfigError("plan needs the training images: --images N, --train FOLDER or --data-root DIR "
                          "--category NAME")
    return (args.images if args.images is not None else len(dataset)), dataset


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def plan_table(plan: FitPlan) -> str:
    """The plan as a readable table (what ``patchcore plan`` prints)."""
    c, s, speeds = plan.config, plan.seconds, plan.speeds
    h, w = plan.grid
    decode = speeds.decode_seconds_per_image
    if decode is None or plan.decode_assumed:
        decode = plan.constants["decode_seconds_per_image"]
    ratio = c["coreset_ratio"]
    lines = [f"plan: fit {c['backbone']} ({', '.join(c['layers'])}) at {c['imagesize']} px (resize {c['resize']}, "
             f"crop {c['crop']}) on {plan.num_images:,} images, {speeds.device} ({speeds.threads} threads)",
             f"  patches {plan.num_images:,} x {h} x {w} = {plan.patches:,} of {plan.dim} dims; {c['sampler']} "
             f"{100 * ratio:g}%: {plan.selections:,} selections ({plan.coreset_method})", "",
             f"{'stage':<28} {'seconds':>9}   how"]
    rows = [("feature extraction", s["extract"],
             f"{plan.num_images:,} x ({1e3 * speeds.feature_seconds_per_image:.1f} ms features + {1e3 * decode:.1f} ms "
             f"decode{' (assumed)' if plan.decode_assumed else ''})"),
            ("coreset selection", s["coreset"],
             f"{plan.selections:,} selections over {plan.patches:,} patches "
             f"({1e9 * speeds.row_seconds:.0f} ns/row plain)"),
            ("nearest-neighbour index", s["index"], f"memory bank [{plan.selections:,}, {plan.dim}]")]
    if plan.calibration_folds:
        rows.append(("threshold calibration", s["calibration"], f"{plan.calibration_folds} fold coresets + kNN pass"))
    rows.append(("total", s["total"], ""))
    lines += [f"{name:<28} {value:>9.1f}   {how}" for name, value, how in rows]
    lines += ["", f"{'memory':<28} {'GiB':>9}   what"]
    what = {"baseline": "python, torch, library, backbone (measured)",
            "activations": f"kept by the allocator after a batch of {c['batch_size']} (measured)",
            "features": f"patch features [{plan.patches:,}, {plan.dim}] float32",
            "working": f"largest stage on top ({plan.peak_stage})",
            "bank": f"memory bank [{plan.selections:,}, {plan.dim}] float32", "margin": "libraries, allocator slack"}
    lines += [f"{'  ' + name:<28} {_gib(value):>9}   {what.get(name, '')}" for name, value in plan.ram.items()]
    lines.append(f"{'peak RAM (resident)':<28} {_gib(plan.peak_ram_bytes):>9}")
    if plan.vram is not None:
        gpu_what = {"model": "backbone weights", "activations": "forward pass at the batch size (measured)",
                    "working": f"features, coreset and bank ({plan.peak_stage})"}
        lines += [f"{'  gpu ' + name:<28} {_gib(value):>9}   {gpu_what.get(name, '')}"
                  for name, value in plan.vram.items()]
        lines.append(f"{'peak VRAM (allocated)':<28} {_gib(plan.peak_vram_bytes):>9}")
    lines += ["", f"measured in {speeds.measure_seconds:.1f} s: features {1 / speeds.feature_seconds_per_image:.0f} "
              f"images/s (batch {speeds.forward_batch}), copy {speeds.copy_gbps:.0f} GB/s, matmul "
              f"{speeds.matmul_gflops:.0f} GFLOP/s. Estimates: other load on the machine slows the fit."]
    if machine_busy(speeds):
        lines.append(f"note: the machine was busy while measuring (load {speeds.load_average:.1f} on {speeds.cpus} "
                     "CPUs): other work slowed the measurements (and would slow a fit beside it); plan again on an "
                     "idle machine for the fit's own times")
    return "\n".join(lines)


def machine_busy(speeds: MachineSpeeds) -> bool:
    """Whether other work loaded the machine when the plan measured it (1-minute load above half its CPUs)."""
    return speeds.load_average is not None and speeds.load_average > 0.5 * speeds.cpus


def run(args: argparse.Namespace) -> int:
    if args.method != "patchcore":
        raise ConfigError(f"patchcore plan covers --method patchcore, not {args.method}")
    for method, cls in DETECTORS.items():  # another detector's options (--padim-d, ...) do not apply
        for name in cls.method_options:
            if getattr(args, f"{cls.option_prefix}_{name}", None) is not None:
                raise ConfigError(f"option {flag(f'{cls.option_prefix}_{name}')} applies to --method {method}; "
                                  "patchcore plan covers --method patchcore")
    config = PatchCoreConfig(**options_from_args(args, args.patchcore_names))
    threshold = ThresholdOptions(**options_from_args(args, args.threshold_names))
    count, dataset = training_images(args, config)
    plan = plan_fit(config, count, threshold.calibration_folds, dataset)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan_table(plan))
    return 0
