"""Process-level tuning of the C allocator for CPU inference.

A CNN forward pass on CPU allocates and frees many activation tensors of a few MB to a few tens of MB.
glibc's malloc serves such sizes with fresh ``mmap`` pages and returns them to the system on ``free``,
and also trims the heap top on every large free; each new batch then pays page faults and page zeroing
for all its activations. On the 2-core development machine this made the WideResNet/EfficientNet
forward pass 2-2.5x slower than the arithmetic needs (efficientnet_lite0 at 224 px: ~26 ms per image
before, ~10-11 ms after). Raising the mmap threshold to 32 MB and the trim threshold to 1 GB keeps
those buffers in the heap for reuse. Allocations above 32 MB (memory banks, feature matrices) are
still mapped and unmapped individually, so peak memory is unchanged.

Set ``PATCHCORE_MALLOC_TUNING=0`` to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024**2  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024**3


@functools.cache  # once per process
def tune_allocator() -> bool:
    """Apply the glibc settings above once per process; True when they are in effect."""
    tuned = False
    if sys.platform.startswith("linux") and os.environ.get("PATCHCORE_MALLOC_TUNING", "1") != "0":
        try:
            libc = ctypes.CDLL("libc.so.6")
            tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_BYTES))) and \
                bool(libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD_BYTES)))
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
            tuned = False
    return tuned
