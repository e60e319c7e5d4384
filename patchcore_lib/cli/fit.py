"""``patchcore fit``: fit a detector on any folder of normal images, calibrate its threshold, save it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, add_model_options, detector_from_args, require
from patchcore_lib.data import labelled_image_folder, normal_image_folder
from patchcore_lib.detectors import PatchCore, ThresholdOptions, f1_optimal_threshold, threshold_rates
from patchcore_lib.utils.files import check_writable_dir
from patchcore_lib.utils.schema import add_options, options_from_args


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("fit", help="fit a model on a folder of normal images",
                                 description="Fit on every image under --train (searched recursively), calibrate "
                                             "a threshold for --false-alarm-rate out of fold on the same images, "
                                             "and save the model (config, preprocessing, memory bank, threshold).",
                                 formatter_class=DefaultsFormatter)
    parser.add_argument("--train", help="folder of normal images (searched recursively)")
    parser.add_argument("--out", help="model file to write, e.g. model.pt")
    parser.add_argument("--val", help="labelled images: <label>/ folders with 'good' for normal (or a category in "
                                      "MVTec layout, its test/ is used): reports the F1-optimal threshold")
    calibration = parser.add_argument_group("threshold calibration (normal images only)")
    names = add_options(calibration, ThresholdOptions)
    add_common_options(parser)
    parser.set_defaults(patchcore_names=add_model_options(parser), threshold_names=names, run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    require(args, "train", "out")
    options = ThresholdOptions(**options_from_args(args, args.threshold_names))
    detector = detector_from_args(args, args.patchcore_names)
    check_writable_dir(Path(args.out).parent if Path(args.out).parent != Path("") else Path("."))
    config = detector.config
    train = normal_image_folder(args.train, config.resize, config.imagesize, config.crop)
    val = labelled_image_folder(args.val, config.resize, config.imagesize, config.crop) if args.val else None
    show = not args.quiet
    if isinstance(detector, PatchCore):
        detector.fit(train, show_progress=show, calibration=options)
    else:
        detector.fit(train, show_progress=show)
        print(f"note: --method {args.method} has no threshold calibration; predict reports scores only",
              file=sys.stderr)
    record = getattr(detector, "threshold", None)
    if val is not None:
        predictions = detector.predict_dataset(val, show_progress=show)
        best = f1_optimal_threshold(predictions.scores, predictions.labels)
        report = {"f1": best, "val": str(args.val), "val_rates_at_f1": threshold_rates(
            predictions.scores, predictions.labels, best["threshold"])}
        if record is not None:
            report["val_rates_at_calibrated"] = threshold_rates(predictions.scores, predictions.labels,
                                                                record["threshold"])
            record.update(report)
        print(f"F1-optimal threshold on {args.val}: {best['threshold']:.6g} (F1 {best['f1']:.3f}, precision "
              f"{best['precision']:.3f}, recall {best['recall']:.3f})")
    detector.save(args.out)
    timings = ", ".join(f"{k} {v:.1f}" for k, v in detector.timings.items())
    print(f"fitted on {len(train)} images from {args.train} ({timings}); memory bank {detector.memory_bank_size}")
    if record is not None:
        note = "" if record["guaranteed"] else (f" (only {record['num_images']} images: the largest out-of-fold score;"
                                                " the target rate needs >= 1/rate - 1 images)")
        print(f"threshold {record['threshold']:.6g} for a {100 * record['false_alarm_rate']:g}% false-alarm rate "
              f"({record['folds']} folds){note}")
        if "val_rates_at_calibrated" in record:
            print("on --val at the calibrated threshold: " + json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in record["val_rates_at_calibrated"].items()}))
    print(f"model written to {args.out}")
    return 0
