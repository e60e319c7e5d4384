"""Issue 32, 2: the package logger ``patchcore_lib``. A library call writes nothing to stderr (the library attaches
only a NullHandler) while its records reach the application's handlers (here pytest's caplog); the command line
shows INFO messages by default, warnings only with --quiet and debug messages with --verbose."""
from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from patchcore_lib.data import open_split
from patchcore_lib.detectors import PatchCore
from patchcore_lib.evaluation import evaluate
from patchcore_lib.utils.log import LOGGER_NAME, log_to_stderr, warnings_to_log
from helpers import FAST, FAST_KWARGS

#: FAST without --quiet (the CLI tests below choose the loudness themselves)
FAST_OPTIONS = [option for option in FAST if option != "--quiet"]


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith(f"{LOGGER_NAME}.")]


def test_a_library_run_writes_nothing_to_stderr_although_it_logs(synthetic_root, tmp_path, caplog, capfd):
    logger = logging.getLogger(LOGGER_NAME)
    assert [type(handler) for handler in logger.handlers] == [logging.NullHandler]
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)  # every record is made; only handlers decide what shows
    model = PatchCore(**FAST_KWARGS)
    evaluate(model, synthetic_root, ["tiny"], tmp_path / "out", show_progress=False)
    evaluate(model, synthetic_root, ["tiny"], tmp_path / "out", show_progress=False)  # finished: reused
    assert any("tiny: already done with the same settings" in m for m in _messages(caplog, logging.INFO))
    assert _messages(caplog, logging.DEBUG)
    assert capfd.readouterr().err == ""


def test_caplog_receives_the_debug_records_of_a_fit(synthetic_root, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    model = PatchCore(**FAST_KWARGS).fit(open_split(synthetic_root, "tiny", "train", 64, 64), show_progress=False)
    debug = _messages(caplog, logging.DEBUG)
    assert f"PatchCore on {model.device}: backbone resnet18, layers ('layer2', 'layer3')" in debug
    assert "backbone resnet18: random weights (weights='random')" in debug
    bank = [m for m in debug if m.startswith("memory bank of")]
    assert len(bank) == 1 and bank[0].startswith(f"memory bank of {model.memory_bank_size} features; coreset "
                                                 "selected in ")
    assert any(m.startswith("exact kNN index") and f"{model.memory_bank_size} x " in m for m in debug)


def test_the_command_line_handler_writes_one_line_per_record_and_per_warning(capsys):
    log = logging.getLogger(f"{LOGGER_NAME}.tests")
    with log_to_stderr(logging.WARNING), warnings_to_log():
        log.info("not shown at WARNING")
        warnings.warn("mask.png: mask is not binary", stacklevel=1)
    log.warning("not shown after the command")  # the handler is gone again
    assert capsys.readouterr().err == "patchcore: warning: mask.png: mask is not binary\n"
    assert [type(handler) for handler in logging.getLogger(LOGGER_NAME).handlers] == [logging.NullHandler]


@pytest.mark.slow
@pytest.mark.subprocess
def test_quiet_and_verbose_choose_what_reaches_stderr(synthetic_root, tmp_path):
    def evaluate_cli(*loudness: str) -> str:
        result = subprocess.run([sys.executable, "-m", "patchcore_lib", "evaluate", "--data-root", str(synthetic_root),
                                 "--category", "tiny", *FAST_OPTIONS, "--out", str(tmp_path / "out"), *loudness],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stderr

    verbose = evaluate_cli("--verbose")  # fits: debug lines of the model
    assert "patchcore: PatchCore on " in verbose and ": backbone resnet18, layers" in verbose
    assert "patchcore: memory bank of " in verbose and "patchcore: backbone resnet18: random weights" in verbose
    quiet = evaluate_cli("--quiet")  # the category is done: its INFO line is left out, as are debug lines
    assert "already done" not in quiet and "PatchCore on" not in quiet
    default = evaluate_cli()
    assert "patchcore: tiny: already done with the same settings" in default and "PatchCore on" not in default
