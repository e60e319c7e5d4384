"""SIGTERM handled like Ctrl-C (SIGINT): the command-line entry points turn both into one exception, so
temporary files are removed by the ``finally`` blocks on the way out, finished work is kept, and the user sees
one line instead of a traceback."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT or SIGTERM; ``signum`` says which (exit status 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc: BaseException) -> int:
    """128 + the signal number of an interruption (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """While active (main thread only), SIGINT and SIGTERM raise :class:`Interrupted`; restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _quiet_exit(signum: int, frame: Any) -> None:
    print(f"error: interrupted ({signal.Signals(signum).name}) while starting; nothing was written",
          file=sys.stderr)
    raise SystemExit(128 + signum)


def quiet_interrupts_at_startup() -> None:
    """SIGINT/SIGTERM before a command's own handling starts (while torch is imported): one line, exit
    128 + signum. Installed by the package only when run as ``python -m patchcore_lib...``. With
    ``PATCHCORE_READY_FILE`` set, that file is created once they are installed (a readiness signal for tests)."""
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, _quiet_exit)
        if os.environ.get("PATCHCORE_READY_FILE"):
            open(os.environ["PATCHCORE_READY_FILE"], "w").close()
