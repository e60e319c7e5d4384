"""Command line: ``patchcore evaluate --data-root DIR --category NAME ... --out DIR`` (also ``python -m patchcore_lib``).

Without ``--data-root`` each category is looked up as :func:`patchcore_lib.data.resolve_data_root` says
(``$PATCHCORE_DATA_ROOT``, the per-user data folder, the MVTec AD download, the synthetic set for synthetic names).

Every model option is generated from the configuration schema (:class:`PatchCoreConfig` and each registered
detector's own options), so defaults, choices and checks live in one place. Errors are printed to stderr as
one line and the exit code is non-zero (``--debug`` shows tracebacks).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from patchcore_lib import __version__
from patchcore_lib.data import resolve_data_root
from patchcore_lib.detectors import DETECTORS, SHARED_SETTINGS, Detector, PatchCoreConfig, make_detector
from patchcore_lib.errors import ConfigError, PatchCoreError
from patchcore_lib.evaluation.runner import evaluate
from patchcore_lib.utils.schema import add_options, flag, options_from_args

PROG = "patchcore"


def _method_dest(cls: type, name: str) -> str:
    return f"{cls.option_prefix}_{name}"


def add_model_options(parser: argparse.ArgumentParser) -> list[str]:
    """``--method`` plus every PatchCore option and every detector's own options (``--<prefix>-<name>``)."""
    parser.add_argument("--method", default="patchcore", choices=DETECTORS.names(),
                        help="detector (default: patchcore)")
    names = add_options(parser.add_argument_group("PatchCore options (ensemble members share them)"),
                        PatchCoreConfig)
    for method, cls in DETECTORS.items():
        if cls.method_options:
            add_options(parser.add_argument_group(f"{method} options"), cls.options_class,
                        include=cls.method_options, prefix=cls.option_prefix)
    return names


def detector_from_args(args: argparse.Namespace, patchcore_names: Sequence[str]) -> Detector:
    """The detector the options describe; options that do not apply to ``--method`` are an error."""
    given = options_from_args(args, patchcore_names)
    cls = DETECTORS.get(args.method)
    method_options: dict[str, Any] = {}
    for method, other in DETECTORS.items():
        for name in other.method_options:
            value = getattr(args, _method_dest(other, name), None)
            if value is None:
                continue
            if other is not cls:
                raise ConfigError(f"option {flag(_method_dest(other, name))} applies to --method {method}, "
                                  f"not {args.method}")
            method_options[name] = value
    if args.method == "patchcore" or args.method == "patchcore_ensemble":
        base = PatchCoreConfig(**given)
    else:
        unused = sorted(set(given) - set(SHARED_SETTINGS) - {"layers"})
        if unused:
            raise ConfigError(f"option(s) {', '.join(flag(n) for n in unused)} do not apply to --method {args.method}")
        if "layers" in given:
            method_options.setdefault("layers", given.pop("layers"))
        base = PatchCoreConfig(**{k: v for k, v in given.items() if k != "layers"})
    return make_detector(args.method, base, **method_options)


def resolve_root(data_root: str, categories: Sequence[str], download: bool = True,
                 show_progress: bool = True) -> str:
    """The one data root of ``categories`` (:func:`~patchcore_lib.data.resolve_data_root` for each); ConfigError
    when they lie in different folders or a category would be replaced by another."""
    roots = {}
    for category in categories:
        root, found = resolve_data_root(data_root, category, download=download, show_progress=show_progress)
        if found != category:
            raise ConfigError(f"category {category!r} resolved to {found!r}")  # never substitute silently
        roots[category] = str(root)
    if len(set(roots.values())) > 1:
        raise ConfigError("the categories lie in different folders (" + ", ".join(f"{c}: {r}" for c, r in
                          roots.items()) + "); pass --data-root, or evaluate them one folder at a time")
    return next(iter(roots.values()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="fit and evaluate a detector on MVTec-layout categories")
    ev.add_argument("--data-root", default="",
                    help="folder holding <category>/train, test, ground_truth (default: $PATCHCORE_DATA_ROOT, then "
                         "the per-user data folder; a missing MVTec AD category is downloaded there)")
    ev.add_argument("--category", action="append", required=True, help="category name (repeat for several)")
    ev.add_argument("--no-download", action="store_true",
                    help="without --data-root: never download a missing MVTec AD category (fail instead)")
    ev.add_argument("--out", required=True, help="output directory")
    ev.add_argument("--save-model", action="store_true", help="write <out>/<category>/model.pt")
    ev.add_argument("--no-resume", action="store_true", help="recompute categories already finished in --out")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    ev.set_defaults(patchcore_names=add_model_options(ev))
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    detector = detector_from_args(args, args.patchcore_names)
    data_root = resolve_root(args.data_root, args.category, download=not args.no_download,
                             show_progress=not args.quiet)
    rows = evaluate(detector, data_root, args.category, args.out, save_model=args.save_model,
                    show_progress=not args.quiet, resume=not args.no_resume)
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
