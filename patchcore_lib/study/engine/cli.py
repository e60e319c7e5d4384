"""``python -m patchcore_lib.study [run] ...``: the notebook study; ``... sweep -f SWEEP.yaml``: a sweep."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from patchcore_lib.errors import PatchCoreError
from patchcore_lib.study.engine import sweep
from patchcore_lib.study.engine.cluster import add_cluster_options, resolve_cluster
from patchcore_lib.study.engine.presets import load_preset, parse_overrides
from patchcore_lib.study.engine.runner import run_study
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
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' python3)")
    add_cluster_options(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``[run] [options]`` runs the notebook study; ``sweep -f SWEEP.yaml`` a grid of settings (.sweep)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:
        return sweep.main(argv[1:])
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        with interrupts_raise():  # SIGTERM as Ctrl-C
            preset = load_preset(args.preset or repository_root() / "params" / "quick.yaml")
            preset["parameters"].update(parse_overrides(args.overrides))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
