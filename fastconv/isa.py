"""Which build of the Cython kernels this CPU runs: the instruction set
chosen at import, as NumPy picks its SIMD loops.

``pip install .`` compiles the Cython kernels once per instruction set on
x86-64 (see setup.py): ``baseline`` (the compiler's default, SSE2),
``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512 F, CD, BW, DQ, VL). At run
time the best build whose instructions this CPU (and its OS) supports is
used, so a build the CPU cannot run is never loaded. ``FASTCONV_ISA``
names a build to use instead; one this CPU cannot run, or that was not
built, is refused with a ValueError. Numba compiles for the CPU it runs on
and needs none of this.
"""
from __future__ import annotations

import functools
import importlib.util
import os

from fastconv import settings

ENV_VAR = settings.ISA

BUILDS = ("avx512", "avx2", "baseline")
"""Every build, best first."""

REQUIRES = {
    "avx512": ("AVX512F", "AVX512CD", "AVX512_SKX", "AVX2", "FMA3"),  # SKX: BW, DQ, VL
    "avx2": ("AVX2", "FMA3"),
    "baseline": (),
}
"""The CPU features (NumPy's names) each build's code may use."""


def cpu_features() -> dict[str, bool]:
    """NumPy's run-time CPU feature table (OS support of the wider
    registers included); empty where it cannot be read, so only the
    baseline build qualifies."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def module_name(build: str, module: str) -> str:
    """Import name of a Cython kernel module (``conv_cython``) in a build."""
    return f"fastconv.kernels.{module}" if build == "baseline" else f"fastconv.kernels.{build}.{module}"


def installed(build: str) -> bool:
    try:
        return importlib.util.find_spec(module_name(build, "conv_cython")) is not None
    except ModuleNotFoundError:
        return False


def runnable(features=None) -> list[str]:
    """The installed builds this CPU can run, best first."""
    features = cpu_features() if features is None else features
    return [b for b in BUILDS if installed(b) and all(features.get(f, False) for f in REQUIRES[b])]


@functools.cache
def chosen() -> str:
    """The build in use: ``FASTCONV_ISA`` if set (and runnable), else the best runnable one."""
    return choose(settings.isa_build(), runnable())


def choose(requested: str | None, candidates: list[str]) -> str:
    """``requested`` if it is one of ``candidates`` (ValueError if not), else the first."""
    if not candidates:
        raise ModuleNotFoundError(
            "no build of fastconv's Cython kernels is installed beside "
            f"{os.path.dirname(__file__)}: install the package with `pip install .`")
    if requested is None:
        return candidates[0]
    if requested not in BUILDS:
        raise ValueError(f"{ENV_VAR}={requested!r} is not a build; choose from {BUILDS}")
    if requested not in candidates:
        missing = [f for f in REQUIRES[requested] if not cpu_features().get(f, False)]
        why = f"this CPU lacks {', '.join(missing)}" if missing else "it was not built (not x86-64?)"
        raise ValueError(f"{ENV_VAR}={requested}: cannot use that build, {why}; "
                         f"this machine can run {candidates}")
    return requested
