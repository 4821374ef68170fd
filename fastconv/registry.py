"""The table of kernel variants: ``(op, backend, algorithm) -> kernel``.

Tests, benchmarks and ``auto`` selection iterate over this table; nothing else
keeps a list of variants. Each compiled backend is three modules in
:mod:`fastconv.kernels`: ``conv_<backend>`` and ``pool_<backend>`` export a
``KERNELS`` dict keyed by ``(op, algorithm)``, and ``im2col_<backend>`` the
unfold pair from which :mod:`fastconv.kernels.unfold` assembles the im2col
variants. Modules load lazily, on first use of an op of their family.
"""
from __future__ import annotations

import functools
import importlib

from fastconv import isa, reference, threads

OPS = (
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d_relu_maxpool2d",
    "conv2d_relu_maxpool2d_backward",
)
COMPILED_BACKENDS = ("cython", "numba")
ALGORITHMS = ("naive", "im2col", "vectorized", "gemm")
REFERENCE = ("numpy", "reference")

_REFERENCE_KERNELS = {
    "conv2d": reference.conv2d_forward,
    "conv2d_backward": reference.conv2d_backward,
    "max_pool2d": reference.max_pool2d_forward,
    "max_pool2d_backward": reference.max_pool2d_backward,
    "avg_pool2d": reference.avg_pool2d_forward,
    "avg_pool2d_backward": reference.avg_pool2d_backward,
    "conv2d_relu_maxpool2d": reference.conv2d_relu_maxpool2d_forward,
    "conv2d_relu_maxpool2d_backward": reference.conv2d_relu_maxpool2d_backward,
}


def _family(op: str) -> str:
    return "conv" if op.startswith("conv") else "pool"


@functools.cache
def family_kernels(backend: str, family: str) -> dict:
    """``{(op, algorithm): kernel}`` for the ``family`` ("conv" or "pool")
    ops of one backend (imports its modules on first call)."""
    if backend == REFERENCE[0]:
        return {
            (op, REFERENCE[1]): fn for op, fn in _REFERENCE_KERNELS.items() if _family(op) == family
        }
    if backend not in COMPILED_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {available_backends()}")
    from fastconv.kernels import unfold

    kernels = importlib.import_module(_module_name(backend, f"{family}_{backend}"))
    unfold_pair = importlib.import_module(_module_name(backend, f"im2col_{backend}"))
    table = dict(kernels.KERNELS)
    for (op, alg), fn in unfold.im2col_kernels(unfold_pair.im2col, unfold_pair.col2im).items():
        if _family(op) == family:
            table[(op, alg)] = fn
    threads.apply()  # the module may have brought in a thread pool (OpenMP)
    return table


def _module_name(backend: str, module: str) -> str:
    """Cython modules come from the build for this CPU (:mod:`fastconv.isa`)."""
    return isa.module_name(isa.chosen(), module) if backend == "cython" else f"fastconv.kernels.{module}"


def available_backends() -> tuple[str, ...]:
    return (REFERENCE[0],) + COMPILED_BACKENDS


def variants(op: str, *, include_reference: bool = True, backend: str = "auto") -> list[tuple[str, str]]:
    """Every ``(backend, algorithm)`` that implements ``op`` (one of :data:`OPS`).

    ``backend`` other than ``"auto"`` keeps only that backend's variants (and
    loads no other). The NumPy reference comes first unless
    ``include_reference`` is false.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {OPS}")
    if backend not in ("auto",) + available_backends():
        raise ValueError(f"unknown backend {backend!r}; choose from {available_backends()}")
    found = [REFERENCE] if include_reference and backend in ("auto", REFERENCE[0]) else []
    for name in COMPILED_BACKENDS:
        if backend in ("auto", name):
            table = family_kernels(name, _family(op))
            found += [(name, alg) for alg in ALGORITHMS if (op, alg) in table]
    return found


def kernel(op: str, backend: str, algorithm: str):
    """The kernel function for one variant; ValueError if there is none."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {OPS}")
    table = family_kernels(backend, _family(op))
    try:
        return table[(op, algorithm)]
    except KeyError:
        algorithms = sorted(alg for (name, alg) in table if name == op)
        raise ValueError(
            f"backend {backend!r} has no algorithm {algorithm!r} for {op}; "
            f"choose from {algorithms}"
        ) from None
