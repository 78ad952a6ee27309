"""Keep freed host memory in the process for reuse, so a CPU training step does not page-fault.

A CPU training step allocates and frees tens of megabytes of tensors (node states, gate
products, their gradients, the score matrix). glibc's default policy hands blocks above an
adaptive threshold out as fresh ``mmap`` regions and returns the top of the heap to the
operating system after large frees, so the next step touches those pages again: one page fault
per 4 KiB, every step. On this project's 2-core reference machine that was about a fifth of an
SRGNN step on MovieLens-100k at 2 threads (``python -m bench --suite train``).

:func:`retain_freed_memory` serves blocks up to 32 MiB from the heap and never trims it. The
cost: the process's resident memory stays at its peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""
MMAP_THRESHOLD = 32 * 2**20
"""Blocks below this come from the heap; glibc's ceiling for the threshold on 64-bit."""
TOP_PAD = 256 * 2**20
"""Extra bytes requested from the system whenever the heap grows, so it grows rarely."""
NEVER_TRIM = 2**31 - 1

_applied = False


def retain_freed_memory() -> bool:
    """Apply the policy above to this process (once; later calls do nothing). Returns whether it
    is in effect: False on a C library other than glibc, where allocation is left alone."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, NEVER_TRIM), (M_TOP_PAD, TOP_PAD))
    _applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _applied
