"""``python -m patchcore_lib.study [run] ...``: the notebook study; ``... sweep -f SWEEP.yaml``: a sweep."""
from __future__ import annotations

import argparse
import sys

import yaml
from typing import Sequence

from patchcore_lib.errors import PatchCoreError
from patchcore_lib.study.engine import sweep
from patchcore_lib.study.engine.cluster import add_cluster_options, resolve_cluster
from patchcore_lib.study.engine.presets import load_preset, model_settings, parse_overrides
from patchcore_lib.study.engine.check import summary_line
from patchcore_lib.study.engine.runner import check_study, run_study
from patchcore_lib.study.outputs import repository_root
from patchcore_lib.utils.signals import exit_status, interrupts_raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study [run]",
                                     description="Run the notebook study (papermill) and render HTML reports; "
                                                 "'python -m patchcore_lib.study sweep --help': a grid of settings.")
    parser.add_argument("-f", "--preset", default=None,
                        help="study preset YAML (default: params/quick.yaml of the checkout)")
    parser.add_argument("--data-root", nargs="+", default=None,
                        help="dataset root(s) (MVTec layout); with several, each category is taken from the first "
                             "that holds it; omitted: the preset's, else $PATCHCORE_DATA_ROOT / the per-user data "
                             "folder / the MVTec AD download / the synthetic set for synthetic categories")
    parser.add_argument("--categories", nargs="+", default=None, help="categories (default: preset's, else all)")
    parser.add_argument("--reports-dir", default=None,
                        help="output folder (default: the preset's reports_dir, else reports/<preset name>)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: notebooks/)")
    parser.add_argument("--only", nargs="+", default=None, help="run only notebooks starting with these prefixes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter of the preset (VALUE is read as YAML), e.g. "
                             "--set weights=/models/wide_resnet50_2-95faca4d.pth --set imagesize=128")
    parser.add_argument("--no-download", action="store_true",
                        help="without --data-root: never download a missing MVTec AD category (fail instead)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks even when complete")
    parser.add_argument("--check", action="store_true",
                        help="execute nothing: list every run as current or stale, and for a stale one the inputs "
                             "that changed (code module, parameter, data file); exit 1 when any run is stale")
    parser.add_argument("--recorded-data", action="store_true",
                        help="with --check: do not read the data, take its fingerprints from the runs' records "
                             "(checks code and parameters only)")
    parser.add_argument("--kernel", default=None,
                        help="Jupyter kernel name (default: python3, the Python running the study, whatever kernel a "
                             "notebook was last saved with)")
    add_cluster_options(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _model_settings(argv: list[str]) -> int:
    """``model-settings -f PRESET CATEGORY``: the category's PatchCore options as YAML for ``patchcore fit --config``."""
    parser = argparse.ArgumentParser(prog="python -m patchcore_lib.study model-settings",
                                     description="Print a preset's PatchCore options for one category (YAML for "
                                                 "'patchcore fit --config').")
    parser.add_argument("-f", "--preset", required=True)
    parser.add_argument("category")
    args = parser.parse_args(argv)
    try:
        print(yaml.safe_dump(model_settings(load_preset(args.preset), args.category), sort_keys=False), end="")
    except PatchCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(preset: dict, args: argparse.Namespace) -> int:
    """Print every run's state and a summary; 0 when all are current, 1 otherwise."""
    checks = check_study(preset, recorded_data=args.recorded_data, categories=args.categories,
                         data_root=args.data_root, reports_dir=args.reports_dir, notebooks_dir=args.notebooks_dir,
                         only=args.only, download=False)
    for check in checks:
        print(check.line())
    print(summary_line(checks) + (" (data not read: fingerprints as recorded)" if args.recorded_data else ""))
    return 0 if all(c.current for c in checks) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``[run] [options]`` runs the notebook study; ``sweep -f SWEEP.yaml`` a grid of settings (.sweep)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:
        return sweep.main(argv[1:])
    if argv[:1] == ["model-settings"]:
        return _model_settings(argv[1:])
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        with interrupts_raise():  # SIGTERM as Ctrl-C
            preset = load_preset(args.preset or repository_root() / "params" / "quick.yaml")
            preset["parameters"].update(parse_overrides(args.overrides))
            if args.check:
                return _check(preset, args)
            run_study(preset, categories=args.categories, data_root=args.data_root, reports_dir=args.reports_dir,
                      notebooks_dir=args.notebooks_dir, only=args.only, force=args.force, kernel=args.kernel,
                      cluster=resolve_cluster(args.cluster), workers=args.workers, threads=args.threads,
                      dashboard=args.dashboard, download=not args.no_download)
    except PatchCoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted; finished notebooks are kept and a re-run skips them", file=sys.stderr)
        return exit_status(exc)
    except OSError as exc:  # e.g. a reports or data folder that cannot be read or written: one line
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
