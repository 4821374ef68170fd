"""The table of kernel variants: ``(op, backend, algorithm) -> kernel``.

Tests, benchmarks and ``auto`` selection iterate over this table; nothing else
keeps a list of variants. Each compiled backend is three modules in
:mod:`fastconv.kernels`: ``conv_<backend>`` and ``pool_<backend>`` export a
``KERNELS`` dict keyed by ``(op, algorithm)``, and ``im2col_<backend>`` the
unfold pair from which :mod:`fastconv.kernels.unfold` assembles the im2col
variants. Modules load lazily, on first use of an op of their family, and
each table is checked against the declarations in :mod:`fastconv.op_table`
as it loads. Kernels are leaves: what they need from the package (thread
chunks, cache size) is passed in here, when they are called.
"""
from __future__ import annotations

import functools
import importlib

import numpy as np

from fastconv import cpu, isa, op_table, settings, threads, user_variants
from fastconv.waiting import FirstCallNotice
from fastconv.op_table import ALGORITHMS, OPS  # noqa: F401  (re-exported)

COMPILED_BACKENDS = ("cython", "numba")
REFERENCE = ("numpy", "reference")


@functools.cache
def family_kernels(backend: str, family: str) -> dict:
    """``{(op, algorithm): kernel}`` for the ``family`` ("conv" or "pool")
    ops of one backend (imports its modules on first call). ValueError if
    the backend's table does not match :mod:`fastconv.op_table`."""
    if backend == REFERENCE[0]:
        return {(o.name, REFERENCE[1]): o.reference for o in OPS.values() if o.family == family}
    if backend not in COMPILED_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {available_backends()}")
    from fastconv.kernels import unfold

    module = importlib.import_module(_module_name(backend, f"{family}_{backend}"))
    unfold_pair = importlib.import_module(_module_name(backend, f"im2col_{backend}"))
    table = dict(module.KERNELS)
    for (op, alg), fn in unfold.im2col_kernels(unfold_pair.im2col, unfold_pair.col2im).items():
        if op not in OPS or OPS[op].family == family:
            table[(op, alg)] = fn
    op_table.check_kernels(f"{module.__name__}.KERNELS (with {unfold.__name__})", family, table)
    threads.apply()  # the module may have brought in a thread pool (OpenMP)
    return {key: _callable(backend, key, fn) for key, fn in table.items()}


def _callable(backend, key, kernel):
    """``kernel`` as dispatch calls it: scheduled ones get their chunks and
    cache size; Numba's first call with new argument types compiles, which
    is said on stderr when it takes long; those of
    :data:`fastconv.op_table.PADDING_ALGORITHMS` are marked (see
    :func:`takes_padding`)."""
    if key[1] in op_table.SCHEDULED_ALGORITHMS:
        kernel = _scheduled(kernel)
    if backend == "numba":
        kernel = FirstCallNotice(kernel, f"compiling Numba's {key[0]} ({key[1]}) for this CPU, once "
                                         "(Numba caches it on disk for later runs)")
    if key[1] in op_table.PADDING_ALGORITHMS:
        kernel.takes_padding = True
    return kernel


def takes_padding(kernel) -> bool:
    """Whether a kernel from :func:`kernel` takes the unpadded input and
    ``padding=(ph, pw)`` (:data:`fastconv.op_table.PADDING_ALGORITHMS`)."""
    return getattr(kernel, "takes_padding", False)


def _scheduled(kernel):
    """The contract's kernel for a scheduled one (see
    :data:`fastconv.op_table.SCHEDULED_ALGORITHMS`): one chunk of the batch
    per thread (at most one per image), BLAS single-threaded meanwhile so
    that loop threads and BLAS threads never multiply."""
    def run(*args, **padding):
        n_chunks = max(1, min(threads.num_threads(), args[0].shape[0]))
        with threads.single_threaded_blas():
            kernel(*args, n_chunks, cpu.gemm_group_bytes(), **padding)
    run.__wrapped__ = kernel
    return run


HELPER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""The dtypes the helpers (:func:`dense_product`, :func:`row_product`,
:func:`layout_kernels`, :func:`relu_kernels`) are compiled for."""


def helper_backend() -> str | None:
    """The compiled backend whose helpers run (the dense layers' product,
    padding and cropping, the ReLU): Cython, or Numba when FASTCONV_BACKEND asks for
    it; None when it asks for another (NumPy's own ways then)."""
    forced = settings.forced_backend()
    if forced in (None, "auto"):
        return COMPILED_BACKENDS[0]
    return forced if forced in COMPILED_BACKENDS else None


@functools.cache
def dense_product(backend: str):
    """The compiled backend's matrix product for the dense layers
    (``product`` of its conv module: :mod:`fastconv.products`)."""
    return _helper(backend, "conv", "product", "dense product")


@functools.cache
def row_product(backend: str):
    """The compiled backend's product of one row by a matrix for the dense
    layers at batch 1 (``row_product`` of its conv module:
    :mod:`fastconv.products`)."""
    return _helper(backend, "conv", "row_product", "one-row product")


@functools.cache
def layout_kernels(backend: str):
    """The compiled backend's ``(pad, crop)``: a batch of images into the
    interior of a padded copy, and back (its layout module)."""
    return (_helper(backend, "layout", "pad", "padding"), _helper(backend, "layout", "crop", "cropping"))


@functools.cache
def relu_kernels(backend: str):
    """The compiled backend's ``(relu, relu_backward)`` on flat arrays (its
    activation module)."""
    return (_helper(backend, "activation", "relu", "ReLU"),
            _helper(backend, "activation", "relu_backward", "ReLU backward"))


def _helper(backend, module_kind, name, what):
    if backend not in COMPILED_BACKENDS:
        raise ValueError(f"no compiled {what} for backend {backend!r}; choose from {COMPILED_BACKENDS}")
    module = importlib.import_module(_module_name(backend, f"{module_kind}_{backend}"))
    threads.apply()  # the module may have brought in a thread pool (OpenMP)
    if backend == "numba":
        return FirstCallNotice(getattr(module, name), f"compiling Numba's {what} for this CPU, once "
                                                      "(Numba caches it on disk for later runs)")
    return getattr(module, name)


def _module_name(backend: str, module: str) -> str:
    """Cython modules come from the build for this CPU (:mod:`fastconv.isa`)."""
    return isa.module_name(isa.chosen(), module) if backend == "cython" else f"fastconv.kernels.{module}"


def available_backends() -> tuple[str, ...]:
    return (REFERENCE[0],) + COMPILED_BACKENDS


def variants(op: str, *, include_reference: bool = True, backend: str = "auto") -> list[tuple[str, str]]:
    """Every ``(backend, algorithm)`` that implements ``op`` (one of :data:`OPS`).

    ``backend`` other than ``"auto"`` keeps only that backend's variants (and
    loads no other). The NumPy reference comes first unless
    ``include_reference`` is false; a learner's variants
    (:mod:`fastconv.user_variants`, backend ``"user"``) come last.
    """
    declared = op_table.op(op)
    if backend not in ("auto", user_variants.BACKEND) + available_backends():
        raise ValueError(f"unknown backend {backend!r}; choose from {available_backends()}")
    found = [REFERENCE] if include_reference and backend in ("auto", REFERENCE[0]) else []
    for name in COMPILED_BACKENDS:
        if backend in ("auto", name):
            table = family_kernels(name, declared.family)
            found += [(name, alg) for alg in ALGORITHMS if (op, alg) in table]
    if backend in ("auto", user_variants.BACKEND):
        found += user_variants.variants(op)
    return found


def kernel(op: str, backend: str, algorithm: str):
    """The kernel function for one variant; ValueError if there is none."""
    if backend == user_variants.BACKEND:
        return user_variants.kernel(op, algorithm)
    table = family_kernels(backend, op_table.op(op).family)
    try:
        return table[(op, algorithm)]
    except KeyError:
        algorithms = sorted(alg for (name, alg) in table if name == op)
        raise ValueError(
            f"backend {backend!r} has no algorithm {algorithm!r} for {op}; "
            f"choose from {algorithms}"
        ) from None
