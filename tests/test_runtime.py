"""The allocator tuning: applied once, reported honestly, and can be switched off."""
import os
import platform
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_is_applied_once_and_can_be_disabled():
    code = "from patchcore_lib.utils.runtime import tune_allocator as t; print(t(), t())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert on[0] == on[1]  # idempotent
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATCHCORE_MALLOC_TUNING": "0"}).stdout.split()
    assert off == ["False", "False"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tuning_applies_in_this_process_and_the_switch_turns_it_off(monkeypatch):
    """The fast loop's check of the same switch, without starting processes (the test above does)."""
    from patchcore_lib.utils.runtime import tune_allocator

    monkeypatch.delenv("PATCHCORE_MALLOC_TUNING", raising=False)
    assert tune_allocator.__wrapped__() is True  # the settings the backbones apply (again: a no-op)
    monkeypatch.setenv("PATCHCORE_MALLOC_TUNING", "0")
    assert tune_allocator.__wrapped__() is False
