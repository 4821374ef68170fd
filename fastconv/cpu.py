"""What the CPU is: its model name and its per-core L2 cache, read from the
OS at run time, so nothing is tuned to the machine fastconv was built or
first measured on."""
from __future__ import annotations

import functools
import os
import platform

FALLBACK_L2_BYTES = 512 * 1024  # the smallest L2 per core of the x86 parts fastconv meets


def model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what Python reports."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def l2_cache_bytes() -> int:
    """One core's L2 cache, read from the OS (Linux sysfs), else 512 KiB."""
    folder = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(folder)):
            with open(os.path.join(folder, index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(folder, index, "size")) as f:
                size = f.read().strip().upper()
            scale = {"K": 1024, "M": 1024 * 1024}.get(size[-1:], 1)
            return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return FALLBACK_L2_BYTES


def gemm_group_bytes() -> int:
    """The cache a ``gemm`` kernel's group of images may fill on one core:
    half the L2, the other half left for the weights and BLAS's packed
    panels."""
    return l2_cache_bytes() // 2
