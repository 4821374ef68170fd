"""Keep the memory a kernel call frees for the next call (glibc's malloc).

Every call of a ``gemm`` or ``winograd`` kernel allocates its scratch
(per-thread buffers of a few hundred KB to a few MB) and frees it on
return. With glibc's defaults, whether the next call gets that memory back
depends on the program's allocation history: blocks above an adaptive
threshold come from ``mmap`` and go back to the system when freed, and the
heap hands its free top back too, so in some programs every call faults its
pages in again, each zeroed by the kernel. In a script that timed
cnn-deep's conv3, Winograd's backward took 14-21 ms per call there against
4.5-5.2 ms in another order of the same calls (perf: page faults, TLB
shootdowns, ``clear_page``); ``auto``, timing in such a program, would save
the slower choice.

:func:`keep_freed_memory`, called by ``import fastconv``, sets glibc's two
thresholds once: blocks up to :data:`MMAP_THRESHOLD` come from the heap,
and the heap keeps up to :data:`TRIM_THRESHOLD` free at its top. A process
keeps at most that much freed memory for reuse instead of returning it.
Nothing is changed when one of glibc's own variables
(:data:`GLIBC_VARIABLES`) is set, which is also how to opt out (e.g.
``MALLOC_TRIM_THRESHOLD_=131072``, glibc's default), nor on another C
library.
"""
from __future__ import annotations

import ctypes
import platform

from fastconv import settings

MMAP_THRESHOLD = 32 << 20
"""Blocks up to this many bytes come from the heap (glibc's adaptive
threshold starts at 128 KiB and reaches this at most)."""
TRIM_THRESHOLD = 64 << 20
"""Free bytes the heap keeps at its top (glibc's default: 128 KiB, then
twice the adaptive mmap threshold)."""
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                   "GLIBC_TUNABLES")
"""The user's own malloc settings: any of them set, fastconv leaves malloc alone."""

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (see the module docstring); True if it did."""
    if platform.libc_ver()[0] != "glibc" or any(settings.raw(name) is not None for name in GLIBC_VARIABLES):
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
