"""The package logger, ``logging.getLogger("patchcore_lib")``, below every layer.

The library attaches only a :class:`logging.NullHandler`: a library call prints nothing through logging unless
the application configures it (a notebook: ``logging.getLogger("patchcore_lib").setLevel(logging.DEBUG)`` plus
a handler, e.g. ``logging.basicConfig()``). Modules log through ``log = logging.getLogger(__name__)``. The
``patchcore`` command line adds :func:`log_to_stderr` for the duration of a command (INFO by default,
WARNING with ``--quiet``, DEBUG with ``--verbose``). Warnings about the user's data stay ``warnings.warn``.
"""
from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

#: the name of the package logger (every module's logger is a child of it)
LOGGER_NAME = "patchcore_lib"

logger = logging.getLogger(LOGGER_NAME)
if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
    logger.addHandler(logging.NullHandler())


class StderrHandler(logging.Handler):
    """Writes each record as one line to the ``sys.stderr`` of the moment (looked up per record, so a redirected
    or captured stderr receives it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break the computation (the standard handlers do the same)
            self.handleError(record)


@contextmanager
def log_to_stderr(level: int = logging.INFO, prefix: str = "patchcore") -> Iterator[logging.Handler]:
    """While active, records of the package logger at ``level`` or above go to stderr as ``"<prefix>: message"``;
    the logger's previous level and handlers are restored afterwards."""
    handler = StderrHandler(level)
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@contextmanager
def warnings_to_log() -> Iterator[None]:
    """While active, each Python warning shown (the warning filters still decide which) becomes one WARNING
    record of the package logger, ``"warning: <message>"``, instead of the file, line and source text."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        logger.warning("warning: %s", message)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
