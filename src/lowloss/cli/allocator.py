"""The C allocator's settings for a lowloss process: large freed blocks stay in the heap.

glibc's malloc gives every block above its mmap threshold (which it raises to 32 MiB at most) back to the system
when it is freed, and the next allocation of that size faults its pages in again, zeroed. An evaluation allocates
and frees blocks of tens to hundreds of MiB for every chunk of points (stacked activations, a stage's shared pass),
so a 1 GiB threshold and no trimming of the heap keep them for reuse: the screened evaluation of `ot+wa` on
Fashion-MNIST fc3 768-384 took 11.5 s instead of 12.7 s (three runs each, one process per run, 2-core CPU).
Written here: the setting is two `mallopt` calls, which no library wraps; elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
"""Blocks up to this size come from the heap, and go back to it when freed."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the heap's top kept before it is given back (the largest value `mallopt` takes: never, in effect)."""


def keep_large_blocks() -> bool:
    """Raise glibc's mmap threshold and stop trimming the heap; whether both took effect (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
