"""The dense layers' matrix products, run on the kernels' own threads.

BLAS runs a large product on threads of its own, which sleep between calls
(:mod:`fastconv.threads`). Right after a conv or batch-norm kernel, whose
OpenMP threads spin briefly before they sleep, a woken BLAS thread waited
for a spinning one to leave its core: cnn-deep's first dense layer (64 x
6272 by 6272 x 128, batch 64) took 1.33-1.39 ms after a batch-norm call
against 0.71-0.76 ms alone (Intel Xeon, 2 threads). :func:`matmul` gives
the product to the compiled backend's ``product`` instead, which splits the
work between those same OpenMP threads, each calling BLAS on one thread:
0.89-0.98 ms after the batch norm, 0.65-0.69 ms alone (by columns of the
output; by blocks of K, as a forward pass like this one now runs, 0.64-0.68
ms alone against 0.74-0.78 by columns in the same runs).

A product of one row (batch 1: the inference plan, the web demo) by a
C-contiguous matrix of :data:`ROW_MACS` or more goes to the backend's
``row_product``: each thread sums a block of the matrix's rows, weighted
by the row, and the threads' sums are added. No BLAS runs in it, so
nothing is limited; each thread reads the same block at every call,
which stays in its core's cache. cnn-deep's first dense layer (6272 x
128, 3.2 MB of weights, more than a core's L2) took 17-23 us against
BLAS's 74-105 us matrix-vector product; the MNIST CNN's (1600 x 128)
5.5-6.7 us against 10.

The Cython twin runs unless ``FASTCONV_BACKEND`` asks for Numba's (or for
NumPy: then BLAS's own threads, as for a small product, where limiting
BLAS for the call would cost more than the product: under
:data:`PARALLEL_MACS` multiply-adds, or on one thread).
"""
from __future__ import annotations

import numpy as np

from fastconv import registry, threads
from fastconv.kernels import blas

PARALLEL_MACS = 1 << 20
"""Products of fewer multiply-adds (M*K*N) go to BLAS as they are: the
single-threaded-BLAS context alone costs about 10 us."""


ROW_MACS = 1 << 17
"""One-row products of at least this many multiply-adds (K*N) go to the
backend's ``row_product``: below, its threads' start cost more than they
saved (800 x 128: 4.8 us against BLAS's 4.3; 2 threads, Intel Xeon)."""


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) as a new C-contiguous (M, N) array; otherwise
    :func:`fastconv.kernels.blas.matmul` (other dtypes, layouts or sizes)."""
    if (a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype not in registry.HELPER_DTYPES
            or b.dtype != a.dtype or not (blas.contiguous(a) and blas.contiguous(b))
            or (a.shape[0] * a.shape[1] * b.shape[1] < PARALLEL_MACS and not _by_row(b, a.shape[0]))):
        return blas.matmul(a, b)
    return product(b, a.shape[0], a.flags.c_contiguous)(a, np.empty((a.shape[0], b.shape[1]), a.dtype))


def _by_row(b, m) -> bool:
    """Whether a product of m rows by b goes to the backend's row_product."""
    return m == 1 and b.flags.c_contiguous and b.size >= ROW_MACS


def product(b, m, a_in_rows=True):
    """``(a, out) -> out``, out (m, N) = a (m, K) @ b (K, N), for arrays
    checked once by the caller as :func:`fastconv.kernels.blas.product`
    takes them (the inference plan's dense steps): the backend's product
    (or row product) when there are threads to share it and enough work,
    else BLAS's."""
    through_blas = blas.product(b, m, a_in_rows)
    by_row = _by_row(b, m)
    if not by_row and m * b.shape[0] * b.shape[1] < PARALLEL_MACS:
        return through_blas

    def shared_product(a, out):
        n_threads = threads.in_this_thread()
        backend = registry.helper_backend()
        if backend is None or n_threads == 1:
            return through_blas(a, out)
        if by_row:  # no BLAS runs in it: nothing to limit
            registry.row_product(backend)(a[0], b, np.empty((n_threads, b.shape[1]), b.dtype), out[0], n_threads)
            return out
        with threads.single_threaded_blas():
            registry.dense_product(backend)(a, b, out, min(n_threads, max(out.shape)))
        return out

    return shared_product


class FixedProduct:
    """:func:`product` for a caller that keeps the thread count and the
    forced backend fixed, as the inference plan does (it is rebuilt when
    either changes). For one row by a large matrix (batch 1: the row
    product) both are read once, here, where :func:`product` reads them at
    every call: those look-ups took 3.9 of the 11 us of the MNIST CNN's
    first dense layer at batch 1 (AMD EPYC Zen 4, 2 threads). Any other
    product runs as :func:`product` runs it: BLAS's as it is for a small
    one, and for a large one the look-ups against a product of a tenth of
    a millisecond or more.

    ``scratch()`` makes what one call needs besides its arrays (the row
    product's (n_threads, N) partial sums; None for the others), once per
    concurrent caller; ``self(a, out, scratch)`` computes out (m, N) = a
    (m, K) @ b (K, N) for arrays checked as :func:`product` takes them."""

    def __init__(self, b, m, n_threads, a_in_rows=True):
        self.b, self.n_threads = b, n_threads
        backend = registry.helper_backend()
        by_row = _by_row(b, m) and backend is not None and n_threads > 1
        self.row_product = registry.row_product(backend) if by_row else None
        self.other = None if by_row else product(b, m, a_in_rows)

    def scratch(self):
        if self.row_product is None:
            return None
        return np.empty((self.n_threads, self.b.shape[1]), self.b.dtype)

    def __call__(self, a, out, scratch):
        if self.row_product is None:
            return self.other(a, out)
        self.row_product(a[0], self.b, scratch, out[0], self.n_threads)
        return out
