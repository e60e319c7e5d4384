"""Issue 31, 4: the per-row peak-memory meter of the benchmarks (benchmarks/memory.py) on real allocations."""
from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import pytest

from helpers import ROOT

if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.memory import GIB, PeakMemory, current_rss_bytes, run_child  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
MIB = 2**20


def _trim() -> None:
    """Hand free heap memory back to the system. With the library's allocator tuning (utils/runtime.py, active once a
    backbone was built in this process) freed buffers stay resident in the heap, and a new array may reuse them
    without adding to the resident set: real, but not what these tests measure. Called before each measured block."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _touch(megabytes: int) -> np.ndarray:
    """A freshly allocated array of ``megabytes`` MiB whose every page is written (resident)."""
    array = np.empty(megabytes * MIB // 8)
    array.fill(1.0)
    return array


def test_a_300_mb_array_raises_the_peak_by_300_mb_even_after_it_is_freed():
    for _ in range(2):  # the second time the lifetime peak (ru_maxrss) is not raised: the samples alone count
        _trim()
        with PeakMemory() as memory:
            array = _touch(300)
            time.sleep(0.02)
            del array
        added = memory.peak_above_start_bytes / MIB
        assert 290 <= added <= 340, added
        assert memory.end_bytes < memory.peak_bytes - 250 * MIB  # freed before the block ended
        row = memory.as_dict("fit_")
        assert row["fit_peak_rss_gib"] == pytest.approx(memory.peak_bytes / GIB, abs=1e-3)
        assert row["fit_peak_rss_above_start_gib"] == pytest.approx(300 / 1024, abs=0.04)


def test_each_row_gets_its_own_peak_not_the_process_lifetime_peak():
    _trim()
    with PeakMemory() as big:
        array = _touch(400)
        del array
    _trim()
    with PeakMemory() as small:
        kept = _touch(50)
    assert big.peak_above_start_bytes / MIB > 380
    assert 40 <= small.peak_above_start_bytes / MIB <= 80
    assert small.peak_bytes < big.peak_bytes  # ru_maxrss would report the first row's peak again
    assert abs(small.start_bytes - current_rss_bytes()) < 80 * MIB + kept.nbytes


def test_an_idle_block_adds_nothing_and_samples_often():
    with PeakMemory(interval=0.002) as memory:
        time.sleep(0.1)
    assert memory.peak_above_start_bytes < 5 * MIB
    assert memory.samples >= 10


@pytest.mark.subprocess
def test_a_child_process_peak_is_its_own_and_the_tree_sees_it():
    code = "import numpy as np, time; a = np.empty(200 * 2**20 // 8); a.fill(1); time.sleep(0.2); print('done')"
    with PeakMemory(children=True) as memory:
        result, child_peak = run_child([sys.executable, "-c", code])
    assert result.returncode == 0 and result.stdout.strip() == "done"
    assert 0.2 <= child_peak <= 0.2 + 0.15  # the array plus an interpreter with numpy
    assert memory.peak_above_start_bytes < 30 * MIB  # this process did not grow
    assert memory.as_dict()["tree_peak_rss_gib"] >= memory.peak_gib + 0.18
