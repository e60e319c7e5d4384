"""Command line: ``python -m patchcore_lib evaluate --data-root DIR --category NAME ... --out DIR``.

Errors are printed to stderr as one line and the exit code is non-zero (``--debug`` shows tracebacks).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import PatchCoreError


def build_parser() -> argparse.ArgumentParser:
    from .backbones import BACKBONES
    from .knn import DISTANCES
    from .sampling import SAMPLER_NAMES
    from .scoring import SCORE_MODES

    parser = argparse.ArgumentParser(prog="python -m patchcore_lib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="fit and evaluate PatchCore on MVTec-layout categories")
    ev.add_argument("--data-root", required=True, help="folder holding <category>/train, test, ground_truth")
    ev.add_argument("--category", action="append", required=True, help="category name (repeat for several)")
    ev.add_argument("--method", default="patchcore", choices=("patchcore", "padim", "orthoad", "patchcore_ensemble"),
                    help="detector: patchcore (default), padim (random channel subset + per-position Gaussian), "
                         "orthoad (semi-orthogonal projection + per-position Gaussian) or patchcore_ensemble "
                         "(one PatchCore per --ensemble-backbones entry, standardised and averaged)")
    ev.add_argument("--ensemble-backbones", nargs="+", default=None, metavar="NAME",
                    help="members of patchcore_ensemble, each with its default layers (default: the paper's "
                         "wide_resnet101_2 resnext101_32x8d densenet201)")
    ev.add_argument("--orthoad-k", type=int, default=100, help="OrthoAD projection rank k (default 100)")
    ev.add_argument("--padim-d", type=int, default=None,
                    help="PaDiM number of random channels d (default: 100 for resnet18, 550 for wide_resnet50_2, "
                         "else min(100, D))")
    ev.add_argument("--backbone", default="efficientnet_lite0", metavar="NAME",  # checked by the library
                    help=f"one of: {', '.join(sorted(BACKBONES))} (default efficientnet_lite0, offline)")
    ev.add_argument("--layers", nargs="+", default=None, metavar="L", help="feature layers (default: the backbone's)")
    ev.add_argument("--weights", default=None, help="backbone weights file, or 'random'")
    ev.add_argument("--resize", type=int, default=256)
    ev.add_argument("--imagesize", type=int, default=224)
    ev.add_argument("--patch-size", type=int, default=3)
    ev.add_argument("--pretrain-embed-dimension", type=int, default=None)
    ev.add_argument("--target-embed-dimension", type=int, default=None)
    ev.add_argument("--coreset-ratio", type=float, default=0.1)
    ev.add_argument("--sampler", default="approx_greedy", choices=SAMPLER_NAMES)
    ev.add_argument("--num-nn", type=int, default=1)
    ev.add_argument("--score", default="max", choices=SCORE_MODES)
    ev.add_argument("--reweight-neighbourhood", type=int, default=3, help="b of the paper's Eq. 7")
    ev.add_argument("--distance", default="sqeuclidean", choices=DISTANCES)
    ev.add_argument("--sigma", type=float, default=4.0)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--save-model", action="store_true", help="write <out>/<category>/model.pt")
    ev.add_argument("--no-resume", action="store_true", help="recompute categories already finished in --out")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--out", required=True, help="output directory")
    ev.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import config_from_options, evaluate

    config = config_from_options(
        backbone=args.backbone, layers=tuple(args.layers) if args.layers else None, weights=args.weights,
        resize=args.resize, imagesize=args.imagesize, patch_size=args.patch_size,
        pretrain_embed_dimension=args.pretrain_embed_dimension, target_embed_dimension=args.target_embed_dimension,
        sampler=args.sampler, coreset_ratio=args.coreset_ratio, num_nn=args.num_nn, score=args.score,
        reweight_neighbourhood=args.reweight_neighbourhood, distance=args.distance, sigma=args.sigma,
        batch_size=args.batch_size, seed=args.seed, device=args.device)
    method_options: dict = {}
    if args.method == "patchcore_ensemble":
        method_options = {"backbones": tuple(args.ensemble_backbones)} if args.ensemble_backbones else {}
    elif args.method != "patchcore":
        method_options = {"layers": tuple(args.layers) if args.layers else None,
                          "d": args.padim_d if args.method == "padim" else None,
                          "k": args.orthoad_k if args.method == "orthoad" else None}
        method_options = {k: v for k, v in method_options.items() if v is not None}
    rows = evaluate(args.data_root, args.category, config, args.out, save_model=args.save_model,
                    show_progress=not args.quiet, resume=not args.no_resume, method=args.method,
                    method_options=method_options)
    print(f"{'category':<16} {'image_auroc':>11} {'pixel_auroc':>11} {'pro':>7} {'fit_s':>7} {'s/img':>7}")
    for row in rows:
        print(f"{row['category']:<16} {row['image_auroc']:>11.4f} {row['pixel_auroc']:>11.4f} {row['pro']:>7.4f} "
              f"{row['fit_seconds']:>7.1f} {row['predict_seconds_per_image']:>7.3f}")
    print(f"results written to {args.out}/results.csv")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "evaluate":
            return _evaluate(args)
    except PatchCoreError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished categories are kept and a re-run resumes", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1
