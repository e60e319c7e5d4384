"""``patchcore evaluate``: fit and evaluate a detector on categories of a dataset (any registered layout)."""
from __future__ import annotations

import argparse
import math

from patchcore_lib.cli.help import COMMAND_HELP
from patchcore_lib.cli.common import (DefaultsFormatter, add_common_options, add_model_options, detector_from_args,
                                      exit_codes_text, mark_required, require)
from patchcore_lib.data import AUTO, LAYOUTS, resolve_common_root
from patchcore_lib.evaluation.options import EvaluationOptions
from patchcore_lib.evaluation.runner import evaluate
from patchcore_lib.utils.schema import add_options, options_from_args


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("evaluate", help=COMMAND_HELP["evaluate"],
                                 description="Fit on each category's train split, score its test split, write "
                                             "results.csv, metrics.json and scores.csv.",
                                 formatter_class=DefaultsFormatter, epilog=exit_codes_text())
    parser.add_argument("--data-root", help="folder holding <category>/train and test (and ground_truth); default: "
                                            "$PATCHCORE_DATA_ROOT, then the per-user data folder, where a missing "
                                            "MVTec AD category is downloaded")
    parser.add_argument("--category", action="append", help="category name (repeat for several)")
    parser.add_argument("--layout", default=AUTO, choices=(AUTO, *LAYOUTS.names()),
                        help="dataset layout; auto: detected per category when unambiguous")
    parser.add_argument("--no-download", action="store_true",
                        help="without --data-root: never download a missing MVTec AD category (fail instead)")
    parser.add_argument("--out", help="output directory")
    parser.add_argument("--save-model", action="store_true", help="write <out>/<category>/model.pt")
    parser.add_argument("--no-resume", action="store_true", help="recompute categories already finished in --out")
    add_common_options(parser)
    parser.set_defaults(patchcore_names=add_model_options(parser), run=run,
                        evaluation_names=add_options(parser.add_argument_group("evaluation options"),
                                                     EvaluationOptions))
    mark_required(parser, "category", "out")
    return parser


def _metric(value: float) -> str:
    return f"{value:>11.4f}" if not math.isnan(float(value)) else f"{'n/a':>11}"


def run(args: argparse.Namespace) -> int:
    require(args, "category", "out")
    given = [args.category] if isinstance(args.category, str) else list(args.category)
    categories = list(dict.fromkeys(given))  # a category named twice is evaluated (and averaged) once
    if len(categories) < len(given):
        repeated = sorted({c for c in given if given.count(c) > 1})
        print(f"note: --category given more than once for {', '.join(repeated)}: evaluated once", flush=True)
    detector = detector_from_args(args, args.patchcore_names)
    options = EvaluationOptions(**options_from_args(args, args.evaluation_names))
    data_root = args.data_root or resolve_common_root(categories, download=not args.no_download,
                                                      show_progress=not args.quiet)
    rows = evaluate(detector, data_root, categories, args.out, save_model=args.save_model,
                    show_progress=not args.quiet, resume=not args.no_resume, layout=args.layout, options=options)
    print(f"{'category':<16} {'image_auroc':>11} {'pixel_auroc':>11} {'pro':>7} {'fit_s':>7} {'s/img':>7}")
    for row in rows:
        print(f"{row['category']:<16} {_metric(row['image_auroc'])} {_metric(row['pixel_auroc'])} "
              f"{_metric(row['pro'])[4:]} {row['fit_seconds']:>7.1f} {row['predict_seconds_per_image']:>7.3f}")
    for row in rows:
        if row.get("note"):
            print(f"note ({row['category']}): {row['note']}")
    print(f"masks: {options.mask_convention} convention; anomaly-only pixel AUROC / PRO and all columns in "
          f"{args.out}/results.csv")
    return 0
