"""Exit codes of ``patchcore`` (shown in ``patchcore --help`` and README.md): a script on an inspection line can
tell a bad command line from bad data, an unusable model, an interruption and a run in which some inputs failed."""
from __future__ import annotations

from patchcore_lib.errors import (ConfigError, DatasetError, ModelFileError, OutputError, PatchCoreError,
                                  WeightsNotFoundError)

#: the first line of the exit-code table in help texts (kept as written: one line per code)
EPILOG_START = "exit codes:"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DATA, EXIT_MODEL, EXIT_OUTPUT, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5, 6
#: exit status -> meaning (an interruption exits 128 + the signal number: 130 Ctrl-C, 143 SIGTERM)
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "an unexpected error (e.g. an operating-system error reading or writing a file)",
    EXIT_USAGE: "bad command line, option value or --config file",
    EXIT_DATA: "bad input data: an image, mask or dataset folder that cannot be used, or a missing weights file",
    EXIT_MODEL: "an unusable model file (missing, damaged, another format, non-finite values)",
    EXIT_OUTPUT: "the outputs cannot be written (folder not writable, disk full, locked by another run)",
    EXIT_PARTIAL: "finished, but some inputs failed (predict: the rows with a non-empty error column)",
    130: "interrupted by Ctrl-C (SIGINT); finished work is kept",
    143: "terminated (SIGTERM); finished work is kept",
}
#: the exit status of each kind of error (a subclass before its base)
_ERROR_STATUS = ((ConfigError, EXIT_USAGE), (DatasetError, EXIT_DATA), (WeightsNotFoundError, EXIT_DATA),
                 (ModelFileError, EXIT_MODEL), (OutputError, EXIT_OUTPUT), (PatchCoreError, EXIT_ERROR))


def error_status(exc: PatchCoreError) -> int:
    """The exit status of an error (:data:`EXIT_CODES`)."""
    return next(status for kind, status in _ERROR_STATUS if isinstance(exc, kind))


def exit_codes_text() -> str:
    """The exit codes as the help's epilog shows them."""
    return EPILOG_START + "\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
