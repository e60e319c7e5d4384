"""``patchcore predict``: score new images with a saved (or exported) model into a folder."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import math
import os
import sys
from pathlib import Path
from typing import Any

from patchcore_lib.cli.exit_codes import EXIT_PARTIAL
from patchcore_lib.cli.help import COMMAND_HELP
from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, exit_codes_text, mark_required, require
import patchcore_lib.detectors as detectors  # load_detector (torch) is loaded for a saved model only (PEP 562)
from patchcore_lib.data.image_files import expand_inputs
from patchcore_lib.errors import ConfigError, DatasetError, ModelFileError
from patchcore_lib.detectors.onnx_model import OnnxPipelineModel, is_onnx_file
from patchcore_lib.detectors.predict_folder import file_hash, predict_to_folder, watch_folder


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("predict", help=COMMAND_HELP["predict"],
                                 description="Writes OUT/predictions.csv (path, score, threshold, is_anomalous, "
                                             "map, sha256, error), OUT/maps/<name>.png heat-map overlays and, "
                                             "with --save-raw-maps, OUT/maps/<name>.npy. Resumes an interrupted "
                                             "run; an image that cannot be read gets a row with its error.",
                                 formatter_class=DefaultsFormatter, epilog=exit_codes_text())
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("--model", help="model file of patchcore fit / evaluate --save-model, an exported ONNX model "
                                        "or bundle")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--threshold", default="calibrated",
                        help="'calibrated' (the model's, from normal images), 'f1' (from fit --val), or a number; "
                             "an image is anomalous when its score is above it")
    parser.add_argument("--save-raw-maps", action="store_true", help="also write the float maps as .npy")
    parser.add_argument("--no-maps", action="store_true", help="write no heat-map overlays")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the model's setting)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: the model's; 1 for an ONNX model)")
    parser.add_argument("--flush-every", type=int, default=64, help="rewrite predictions.csv every N images")
    parser.add_argument("--no-resume", action="store_true", help="score every image again")
    parser.add_argument("--watch", action="store_true",
                        help="keep the model loaded and score new images as they appear in the inputs (a folder a "
                             "line PC drops images into); stop with Ctrl-C or SIGTERM")
    parser.add_argument("--poll", type=float, default=1.0, help="with --watch: seconds between looks at the inputs")
    add_common_options(parser)
    parser.set_defaults(run=run)
    mark_required(parser, "inputs", "model", "out")
    return parser


def resolve_threshold(model: object, choice: str) -> float | None:
    """The threshold ``--threshold`` names for ``model`` (None: the model has none and none was given);
    a threshold that is not a finite number is refused (NaN would mark every image normal)."""
    record = getattr(model, "threshold", None)
    if choice == "calibrated":
        if record is None:
            print("note: the model has no calibrated threshold (fit it with patchcore fit, or give --threshold "
                  "VALUE): scores only", file=sys.stderr)
            return None
        value = record.get("threshold") if isinstance(record, dict) else record
        return _finite(value, "the model's calibrated threshold")
    if choice == "f1":
        if not isinstance(record, dict) or not isinstance(record.get("f1"), dict):
            raise ConfigError("--threshold f1: the model has no F1-optimal threshold (fit it with --val DIR)")
        return _finite(record["f1"].get("threshold"), "the model's F1-optimal threshold")
    try:
        value = float(choice)
    except ValueError:
        raise ConfigError(f"--threshold must be 'calibrated', 'f1' or a number, got {choice!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--threshold must be a finite number, got {choice!r}")
    return value


def _finite(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ModelFileError(f"{what} is not a number ({value!r}): re-fit the model or give --threshold "
                             "VALUE") from None
    if not math.isfinite(number):
        raise ModelFileError(f"{what} is {number}: re-fit the model or give --threshold VALUE")
    return number


def _matches(pattern: str, path: Path) -> bool:
    """Whether the glob ``pattern`` (absolute, with ``**`` for any depth) matches ``path`` (absolute)."""
    parts, target = Path(pattern).parts, path.parts
    if "**" in parts:
        cut = parts.index("**")
        return len(target) >= len(parts) - 1 and all(fnmatch.fnmatchcase(t, p) for t, p in zip(target, parts[:cut])) \
            and all(fnmatch.fnmatchcase(t, p) for t, p in zip(target[::-1], parts[:cut:-1]))
    return len(parts) == len(target) and all(fnmatch.fnmatchcase(t, p) for t, p in zip(target, parts))


def check_out_outside_inputs(out: str, inputs: list[str]) -> None:
    """Refuse an ``--out`` whose heat maps the inputs would find (inside an input folder, or matched by an input
    pattern): they would be scored as inputs on the next run."""
    target = Path(os.path.abspath(out))
    probe = target / "maps" / "probe.png"
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folder = Path(os.path.abspath(path))
            inside = target == folder or folder in target.parents
        elif glob.has_magic(item):
            inside = _matches(os.path.abspath(item), probe)
        else:
            continue
        if inside:
            raise ConfigError(f"--out {out} is inside the input folder or pattern {item}: its heat maps would be "
                              "scored as inputs on the next run; choose an output folder outside the inputs")


def load_detector(path: str, device: str | None = None) -> Any:
    """:func:`patchcore_lib.detectors.load_detector`, imported on first use (a saved model needs torch)."""
    return detectors.load_detector(path, device=device)


def load_model(path: str, device: str | None) -> Any:
    """A saved detector or bundle (:func:`~patchcore_lib.detectors.load_detector`), or a whole-pipeline ONNX file
    (run by onnxruntime; then torch is never imported)."""
    if is_onnx_file(path):
        if device not in (None, "auto", "cpu"):
            print(f"note: an ONNX model runs on the CPU here (--device {device} ignored)", file=sys.stderr)
        return OnnxPipelineModel(path)
    return load_detector(path, device=device)


def _images_now(inputs: list[str]) -> list[Path]:
    """The images the inputs name now (none yet is fine while watching)."""
    try:
        return expand_inputs(inputs)
    except DatasetError:
        return []


def _print_summary(summary: dict[str, Any], threshold: float | None) -> None:
    rate = summary["images_per_second"]
    print(f"{summary['scored']} images scored, {summary['skipped']} kept from an earlier run"
          + (f" ({rate:.2f} images/s)" if summary["scored"] else "")
          + ("" if threshold is None else f"; {summary['anomalous']} of {summary['images']} above {threshold:.6g}"),
          flush=True)
    print(f"predictions written to {summary['csv']}", flush=True)


def run(args: argparse.Namespace) -> int:
    require(args, "model", "out", "inputs")
    if args.flush_every < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ConfigError("--flush-every and --batch-size must be positive integers")
    if not args.poll > 0:
        raise ConfigError(f"--poll must be a positive number of seconds, got {args.poll}")
    check_out_outside_inputs(args.out, list(args.inputs))
    inputs = _images_now(args.inputs) if args.watch else expand_inputs(args.inputs)
    before = file_hash(args.model) if Path(args.model).is_file() else None
    model = load_model(args.model, args.device)
    model_id = file_hash(args.model)  # the file as loaded: a replacement during loading is refused below
    if before != model_id:
        raise ModelFileError(f"--model {args.model}: the file changed while it was loaded; run again")
    if args.batch_size is not None:
        model.config = dataclasses.replace(model.config, batch_size=args.batch_size)
    threshold = resolve_threshold(model, args.threshold)
    summary = predict_to_folder(model, inputs, args.out, threshold, model_id=model_id,
                                save_maps=not args.no_maps, save_raw_maps=args.save_raw_maps,
                                flush_every=args.flush_every, resume=not args.no_resume,
                                show_progress=not args.quiet)
    _print_summary(summary, threshold)
    if args.watch:
        print(f"watching {', '.join(map(str, args.inputs))} every {args.poll:g} s (Ctrl-C or SIGTERM stops)",
              flush=True)
        watch_folder(model, lambda: _images_now(args.inputs), args.out, threshold, model_id, args.poll,
                     save_maps=not args.no_maps, save_raw_maps=args.save_raw_maps,
                     report=lambda s: _print_summary(s, threshold), already=inputs)
    if summary["failed"]:
        print(f"error: {len(summary['failed'])} image(s) could not be scored (their rows name why in the 'error' "
              "column); the others are scored", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
