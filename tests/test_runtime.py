"""The allocator tuning: applied once, reported honestly, and can be switched off."""
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_is_applied_once_and_can_be_disabled():
    code = "from patchcore_lib.utils.runtime import tune_allocator as t; print(t(), t())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert on[0] == on[1]  # idempotent
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATCHCORE_MALLOC_TUNING": "0"}).stdout.split()
    assert off == ["False", "False"]
