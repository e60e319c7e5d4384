"""``patchcore export``: the whole pipeline as one standard ONNX model (``--format onnx``), or the feature stage as
a TorchScript / ONNX graph in a bundle beside the memory bank; checked against the eager model first."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from patchcore_lib.cli.help import COMMAND_HELP
from patchcore_lib.cli.common import DefaultsFormatter, add_common_options, exit_codes_text, mark_required, require
from patchcore_lib.data import AUTO, LAYOUTS, expand_inputs, open_split
from patchcore_lib.detectors import PatchCore
from patchcore_lib.detectors.export import export_model
from patchcore_lib.detectors.onnx_pipeline import export_onnx_pipeline
from patchcore_lib.errors import ConfigError


#: --format -> (what it writes, the graph format of a bundle or None for the whole-pipeline ONNX model)
FORMATS = {
    "onnx": ("one standard ONNX model of the whole pipeline (image -> score, anomaly_map; onnxruntime alone runs "
             "it) and its metadata as OUT.json", None),
    "torchscript": ("a bundle (torch.save): the feature stage as TorchScript, the memory bank and configuration; "
                    "needs patchcore_lib to run", "torchscript"),
    "onnx-bundle": ("a bundle (torch.save): the feature stage as ONNX, the memory bank and configuration; needs "
                    "patchcore_lib to run (what --format onnx wrote in version 0.1.0)", "onnx"),
}


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("export", help=COMMAND_HELP["export"],
                                 description="onnx: " + FORMATS["onnx"][0] + "; torchscript: " + FORMATS["torchscript"][0]
                                             + "; onnx-bundle: " + FORMATS["onnx-bundle"][0] + ". Scores the check "
                                             "images with the exported and the eager model first and writes nothing "
                                             "if any score differs by more than --rtol.",
                                 formatter_class=DefaultsFormatter, epilog=exit_codes_text())
    parser.add_argument("--model", help="PatchCore model file (patchcore fit / evaluate --save-model)")
    parser.add_argument("--format", default="onnx", choices=tuple(FORMATS), help="what to write (see above)")
    parser.add_argument("--out", help="file to write, e.g. model.onnx")
    parser.add_argument("--images", nargs="+", metavar="INPUT", help="check images: files, folders or globs")
    parser.add_argument("--data-root", help="check on the test split of --category under this root instead")
    parser.add_argument("--category", help="category whose test images are the check images")
    parser.add_argument("--layout", default=AUTO, choices=(AUTO, *LAYOUTS.names()), help="layout of --data-root")
    parser.add_argument("--rtol", type=float, default=1e-4, help="largest relative score difference accepted")
    add_common_options(parser)
    parser.set_defaults(run=run)
    mark_required(parser, "model", "out")
    return parser


def run(args: argparse.Namespace) -> int:
    require(args, "model", "out")
    if not math.isfinite(args.rtol) or args.rtol < 0:
        raise ConfigError(f"--rtol must be a finite number >= 0, got {args.rtol}")
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise ConfigError(f"--out {args.out} is the --model file: write the bundle to another file")
    model = PatchCore.load(args.model, device="cpu")
    if args.images:
        images = [str(p) for p in expand_inputs(args.images)]
    elif args.data_root and args.category:
        test = open_split(args.data_root, args.category, "test", model.config.resize, model.config.imagesize,
                          layout=args.layout)
        images = [str(sample.path) for sample in test.samples]
    else:
        raise ConfigError("export needs check images: --images INPUT... or --data-root DIR --category NAME")
    graph_format = FORMATS[args.format][1]
    if graph_format is None:
        check = export_onnx_pipeline(model, args.out, images, rtol=args.rtol, show_progress=not args.quiet)
    else:
        check = export_model(model, graph_format, args.out, images, rtol=args.rtol, show_progress=not args.quiet)
    print(f"checked {check['num_images']} images: largest score difference {check['max_relative_difference']:.3g} "
          f"relative ({check['max_absolute_difference']:.3g} absolute; tolerance {args.rtol:g})")
    if graph_format is None:
        print(f"ONNX model written to {args.out} (metadata: {args.out}.json); largest anomaly-map difference "
              f"{check['max_map_difference_relative_to_map_max']:.3g} of the map maximum")
    else:
        print(f"{args.format} bundle written to {args.out}")
    return 0
