"""Help of ``patchcore`` that imports nothing heavy: the program name, each sub-command's one-line help (listed by
``patchcore --help`` without importing torch), the formatter that shows every default once, required options in
the usage line."""
from __future__ import annotations

import argparse

from patchcore_lib.cli.exit_codes import EPILOG_START

PROG = "patchcore"
#: sub-command -> its line in ``patchcore --help`` (the module ``patchcore_lib.cli.<name>`` builds its options)
COMMAND_HELP = {
    "fit": "fit a model on a folder of normal images",
    "predict": "score images with a saved or exported model",
    "export": "export a PatchCore model (ONNX, or a TorchScript bundle)",
    "evaluate": "fit and evaluate a detector on dataset categories",
    "plan": "predict a fit's time and peak memory before fitting",
}


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``[default: X]`` to every option whose help does not already show its default; keeps the
    exit-code table of the epilog as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EPILOG_START):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or "[default" in text or action.required or action.default in (None, argparse.SUPPRESS) \
                or not action.option_strings or isinstance(action, argparse._HelpAction):
            return text
        return text + " [default: %(default)s]"


def mark_required(parser: argparse.ArgumentParser, *dests: str) -> None:
    """Show the options ``dests`` as required in the usage line and in their help (they are checked by
    :func:`require` after ``--config`` is read, so argparse itself must not demand them)."""
    actions = [a for a in parser._actions if a.dest in dests]
    saved = [(a.required, a.nargs) for a in actions]
    for action in actions:
        action.required = True
        if not action.option_strings and action.nargs == "*":
            action.nargs = "+"  # a positional list shown as at least one
        action.help = (action.help or "") + " (required; on the command line or in --config)"
    usage = parser.format_usage().strip()
    for action, (required, nargs) in zip(actions, saved):
        action.required, action.nargs = required, nargs
    parser.usage = usage.removeprefix("usage: ").replace("%", "%%")
