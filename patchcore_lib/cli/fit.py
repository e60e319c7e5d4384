"""``patchcore fit``: fit a detector on any folder of normal images, calibrate its threshold, save it."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from patchcore_lib.cli.help import COMMAND_HELP
from patchcore_lib.cli.common import (DefaultsFormatter, add_common_options, add_model_options, detector_from_args,
                                      exit_codes_text, mark_required, require)
from patchcore_lib.data import labelled_image_folder, normal_image_folder
from patchcore_lib.detectors import PatchCore, ThresholdOptions, f1_optimal_threshold, threshold_rates
from patchcore_lib.utils.files import check_writable_dir
from patchcore_lib.utils.schema import add_options, options_from_args


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("fit", help=COMMAND_HELP["fit"],
                                 description="Fit on every image under --train (searched recursively), calibrate "
                                             "a threshold for --false-alarm-rate out of fold on the same images, "
                                             "and save the model (config, preprocessing, memory bank, threshold).",
                                 formatter_class=DefaultsFormatter, epilog=exit_codes_text())
    parser.add_argument("--train", help="folder of normal images (searched recursively)")
    parser.add_argument("--out", help="model file to write, e.g. model.pt")
    parser.add_argument("--val", help="labelled images: <label>/ folders with 'good' for normal (or a category in "
                                      "MVTec layout, its test/ is used): reports the F1-optimal threshold")
    calibration = parser.add_argument_group("threshold calibration (normal images only)")
    names = add_options(calibration, ThresholdOptions)
    add_common_options(parser)
    parser.set_defaults(patchcore_names=add_model_options(parser), threshold_names=names, run=run)
    mark_required(parser, "train", "out")
    return parser


#: threshold / median out-of-fold score above which fit advises on the options that usually separate defects better
WIDE_SPREAD = 1.5


def crop_share(images: Sequence[Any], resize: int, imagesize: int, crop: str, sample: int = 200) -> float | None:
    """The smallest share of an image's area that the centre crop keeps (over up to ``sample`` training files;
    read from their headers), or None when the whole image is used (``crop="none"``) or no file can be read."""
    if crop != "center":
        return None
    shares = []
    for item in list(images)[:sample]:
        try:
            with Image.open(item) as image:
                width, height = image.size
        except (OSError, TypeError, ValueError):
            continue
        scale = resize / min(width, height)  # the short side is resized to ``resize``
        shares.append(min(1.0, imagesize * imagesize / (width * scale * height * scale)))
    return min(shares) if shares else None


def spread_advice(record: dict[str, Any]) -> list[str]:
    """Lines on the out-of-fold scores of the normal images against the calibrated threshold; advice when the
    threshold is far above the typical normal score (normal images vary a lot, so subtle defects stay below)."""
    scores = sorted(float(s) for s in record.get("out_of_fold_scores") or [])
    if len(scores) < 2:
        return []
    median = statistics.median(scores)
    low, high = scores[int(0.05 * (len(scores) - 1))], scores[int(round(0.95 * (len(scores) - 1)))]
    ratio = record["threshold"] / median if median > 0 else float("inf")
    lines = [f"out-of-fold scores of the normal images: median {median:.4g}, 5-95% {low:.4g}..{high:.4g}; the "
             f"threshold is {ratio:.2f}x the median"]
    if ratio > WIDE_SPREAD:
        lines.append("advice: normal images vary widely against the threshold, so subtle defects may score below it. "
                     "What usually helps: a larger backbone (e.g. --backbone wide_resnet50_2, the paper's), a larger "
                     "--imagesize (with --resize), --crop none when defects can lie near the border, or more (and more "
                     "uniform) training images")
    return lines


def run(args: argparse.Namespace) -> int:
    require(args, "train", "out")
    options = ThresholdOptions(**options_from_args(args, args.threshold_names))
    detector = detector_from_args(args, args.patchcore_names)
    check_writable_dir(Path(args.out).parent if Path(args.out).parent != Path("") else Path("."))
    config = detector.config
    train = normal_image_folder(args.train, config.resize, config.imagesize, config.crop)
    val = labelled_image_folder(args.val, config.resize, config.imagesize, config.crop) if args.val else None
    show = not args.quiet
    share = crop_share(train.images, config.resize, config.imagesize, config.crop)
    if share is not None and share < 0.999:
        print(f"note: the centre crop keeps {100 * share:.0f}% of each training image (short side resized to "
              f"{config.resize}, {config.imagesize} x {config.imagesize} crop): defects outside it are never seen; "
              "--crop none uses the whole image")
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
        for line in spread_advice(record):
            print(line)
        if "val_rates_at_calibrated" in record:
            print("on --val at the calibrated threshold: " + json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in record["val_rates_at_calibrated"].items()}))
    print(f"model written to {args.out}")
    return 0
