"""``patchcore predict``: score new images with a saved (or exported) model into a folder."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, require
from patchcore_lib.data import expand_inputs
from patchcore_lib.detectors import load_detector
from patchcore_lib.errors import ConfigError
from patchcore_lib.detectors.predict_folder import file_hash, predict_to_folder


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("predict", help="score images with a saved or exported model",
                                 description="Writes OUT/predictions.csv (path, score, threshold, is_anomalous, "
                                             "map), OUT/maps/<name>.png heat-map overlays and, with "
                                             "--save-raw-maps, OUT/maps/<name>.npy. Resumes an interrupted run.",
                                 formatter_class=DefaultsFormatter)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("--model", help="model file of patchcore fit / evaluate --save-model, or an exported bundle")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--threshold", default="calibrated",
                        help="'calibrated' (the model's, from normal images), 'f1' (from fit --val), or a number; "
                             "an image is anomalous when its score is above it")
    parser.add_argument("--save-raw-maps", action="store_true", help="also write the float maps as .npy")
    parser.add_argument("--no-maps", action="store_true", help="write no heat-map overlays")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the model's setting)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: the model's)")
    parser.add_argument("--flush-every", type=int, default=64, help="rewrite predictions.csv every N images")
    parser.add_argument("--no-resume", action="store_true", help="score every image again")
    add_common_options(parser)
    parser.set_defaults(run=run)
    return parser


def resolve_threshold(model: object, choice: str) -> float | None:
    """The threshold ``--threshold`` names for ``model`` (None: the model has none and none was given)."""
    record = getattr(model, "threshold", None)
    if choice == "calibrated":
        if record is None:
            print("note: the model has no calibrated threshold (fit it with patchcore fit, or give --threshold "
                  "VALUE): scores only", file=sys.stderr)
            return None
        return float(record["threshold"])
    if choice == "f1":
        if not record or "f1" not in record:
            raise ConfigError("--threshold f1: the model has no F1-optimal threshold (fit it with --val DIR)")
        return float(record["f1"]["threshold"])
    try:
        return float(choice)
    except ValueError:
        raise ConfigError(f"--threshold must be 'calibrated', 'f1' or a number, got {choice!r}") from None


def run(args: argparse.Namespace) -> int:
    require(args, "model", "out", "inputs")
    if args.flush_every < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ConfigError("--flush-every and --batch-size must be positive integers")
    inputs = expand_inputs(args.inputs)
    model = load_detector(args.model, device=args.device)
    if args.batch_size is not None:
        model.config = dataclasses.replace(model.config, batch_size=args.batch_size)
    threshold = resolve_threshold(model, args.threshold)
    summary = predict_to_folder(model, inputs, args.out, threshold, model_id=file_hash(args.model),
                                save_maps=not args.no_maps, save_raw_maps=args.save_raw_maps,
                                flush_every=args.flush_every, resume=not args.no_resume,
                                show_progress=not args.quiet)
    rate = summary["images_per_second"]
    print(f"{summary['scored']} images scored, {summary['skipped']} kept from an earlier run"
          + (f" ({rate:.2f} images/s)" if summary["scored"] else "")
          + ("" if threshold is None else f"; {summary['anomalous']} of {summary['images']} above {threshold:.6g}"))
    print(f"predictions written to {summary['csv']}")
    return 0
