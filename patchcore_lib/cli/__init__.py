"""Command line ``patchcore`` (also ``python -m patchcore_lib``): fit, predict, export, evaluate, plan.

Every model option is generated from the configuration schema (:class:`PatchCoreConfig`, each registered
detector's own options, :class:`ThresholdOptions`), so defaults, choices and checks live in one place.
``--config FILE.yaml`` gives options from a file (a preset's ``parameters``); the command line overrides it.
Errors are printed to stderr as one line and the exit code says which kind (:data:`EXIT_CODES`, also in
``patchcore --help``; ``--debug`` shows tracebacks). Messages of the library's logger and Python warnings go to
stderr as ``patchcore: ...`` lines while a command runs: INFO and above by default, warnings only with
``--quiet``, debug messages too with ``--verbose``; results go to stdout.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any, Sequence

from patchcore_lib.version import __version__
from patchcore_lib.cli.help import COMMAND_HELP, PROG, DefaultsFormatter
from patchcore_lib.cli.exit_codes import EXIT_CODES, EXIT_ERROR, EXIT_PARTIAL, error_status, exit_codes_text
from patchcore_lib.errors import PatchCoreError
from patchcore_lib.utils.faiss_install import faiss_conflict, installed_faiss
from patchcore_lib.utils.log import log_to_stderr, warnings_to_log
from patchcore_lib.utils.signals import exit_status, interrupts_raise

#: the sub-commands, each a module ``patchcore_lib.cli.<name>`` with ``add_parser(commands)`` and ``run(args)``
COMMANDS = tuple(COMMAND_HELP)


def command_module(name: str) -> Any:
    """The module of sub-command ``name`` (imported when that command is used: it imports torch)."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``patchcore`` parser and its sub-command parsers by name: every one with all its options, or with
    ``only`` (a command name, or "" for none) just that one; the others are listed by name and help only."""
    parser = argparse.ArgumentParser(prog=PROG, description="PatchCore anomaly detection: fit on normal images, "
                                     "predict new ones, export, evaluate on datasets.", epilog=exit_codes_text(),
                                     formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, text in COMMAND_HELP.items():
        if only is None or only == name:
            subparsers[name] = command_module(name).add_parser(commands)
        else:
            commands.add_parser(name, help=text)
    return parser, subparsers


def _command_in(argv: Sequence[str]) -> str:
    """The sub-command ``argv`` names ("" when none: ``--help``, ``--version`` or a usage error)."""
    for item in argv:
        if item in COMMAND_HELP:
            return item
        if not item.startswith("-"):
            return ""
    return ""


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; with ``--config FILE`` the file's values become the sub-command's defaults."""
    parser, subparsers = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = subparsers[args.command]
        defaults = {action.dest: action.default for action in sub._actions}
        common = importlib.import_module(f"{__name__}.common")
        sub.set_defaults(**common.config_file_defaults(args.config, sub, args.command))
        given = {k: v for k, v in vars(args).items() if k in defaults and v != defaults[k]}
        args = parser.parse_args(argv)
        for key, value in given.items():  # given on the command line: wins (also over appended lists)
            setattr(args, key, value)
    return args


def log_level(args: argparse.Namespace) -> int:
    """The level of the messages a command shows on stderr: DEBUG with ``--verbose``, WARNING with ``--quiet``,
    else INFO."""
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    conflict = faiss_conflict(installed_faiss())
    if conflict:
        print(f"warning: {conflict}", file=sys.stderr)
    try:
        with interrupts_raise():  # SIGTERM as Ctrl-C: temporary files removed on the way out, one line
            args = parse(argv)
            with log_to_stderr(log_level(args)), warnings_to_log():
                return args.run(args)
    except PatchCoreError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return error_status(exc)
    except KeyboardInterrupt as exc:
        print("error: interrupted; finished work is kept (evaluate: categories, predict: rows) and a re-run "
              "resumes", file=sys.stderr)
        return exit_status(exc)
    except OSError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def ignore_interrupts_after_work() -> None:
    """Once a command has finished (its outputs written), SIGINT and SIGTERM no longer interrupt the process:
    a signal during interpreter teardown would otherwise print a wrong "nothing was written" or a traceback, or
    kill it with -15, although everything was done. Only for the program entry points, never for ``main()``
    called in another program (e.g. a test session)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def entry() -> None:
    """The ``patchcore`` program: :func:`main`, then exit with its status (interrupts ignored from then on)."""
    status = main()
    ignore_interrupts_after_work()
    sys.exit(status)


def __getattr__(name: str) -> Any:  # the model-option helpers, from .common on first use (they import torch)
    if name in ("add_model_options", "detector_from_args"):
        return getattr(importlib.import_module(f"{__name__}.common"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main", "entry", "EXIT_CODES", "EXIT_PARTIAL", "error_status", "build_parser", "parse", "add_model_options",
           "detector_from_args", "PROG"]
