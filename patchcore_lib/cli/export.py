"""``patchcore export``: the feature stage as ONNX or TorchScript beside the memory bank, checked first."""
from __future__ import annotations

import argparse

from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, require
from patchcore_lib.data import AUTO, LAYOUTS, expand_inputs, open_split
from patchcore_lib.detectors import PatchCore
from patchcore_lib.detectors.export import FORMATS, export_model
from patchcore_lib.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("export", help="export a PatchCore model (ONNX or TorchScript + memory bank)",
                                 description="Exports the backbone and patch-feature stage; the memory bank and "
                                             "kNN stay beside it in one bundle file. Scores the check images with "
                                             "both models first and writes nothing if any score differs by more "
                                             "than --rtol.",
                                 formatter_class=DefaultsFormatter)
    parser.add_argument("--model", help="PatchCore model file (patchcore fit / evaluate --save-model)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="graph format")
    parser.add_argument("--out", help="bundle file to write")
    parser.add_argument("--images", nargs="+", metavar="INPUT", help="check images: files, folders or globs")
    parser.add_argument("--data-root", help="check on the test split of --category under this root instead")
    parser.add_argument("--category", help="category whose test images are the check images")
    parser.add_argument("--layout", default=AUTO, choices=(AUTO, *LAYOUTS.names()), help="layout of --data-root")
    parser.add_argument("--rtol", type=float, default=1e-4, help="largest relative score difference accepted")
    add_common_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    require(args, "model", "out")
    model = PatchCore.load(args.model, device="cpu")
    if args.images:
        images = [str(p) for p in expand_inputs(args.images)]
    elif args.data_root and args.category:
        test = open_split(args.data_root, args.category, "test", model.config.resize, model.config.imagesize,
                          layout=args.layout)
        images = [str(sample.path) for sample in test.samples]
    else:
        raise ConfigError("export needs check images: --images INPUT... or --data-root DIR --category NAME")
    check = export_model(model, args.format, args.out, images, rtol=args.rtol, show_progress=not args.quiet)
    print(f"checked {check['num_images']} images: largest score difference {check['max_relative_difference']:.3g} "
          f"relative ({check['max_absolute_difference']:.3g} absolute; tolerance {args.rtol:g})")
    print(f"{args.format} bundle written to {args.out}")
    return 0
