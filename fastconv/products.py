"""The dense layers' matrix products, run on the kernels' own threads.

BLAS runs a large product on threads of its own, which sleep between calls
(:mod:`fastconv.threads`). Right after a conv or batch-norm kernel, whose
OpenMP threads spin briefly before they sleep, a woken BLAS thread waited
for a spinning one to leave its core: cnn-deep's first dense layer (64 x
6272 by 6272 x 128, batch 64) took 1.33-1.39 ms after a batch-norm call
against 0.71-0.76 ms alone (Intel Xeon, 2 threads). :func:`matmul` gives
the product to the compiled backend's ``product`` instead, which splits the
output between those same OpenMP threads, each calling BLAS on one thread:
0.89-0.98 ms after the batch norm, 0.65-0.69 ms alone.

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


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) as a new C-contiguous (M, N) array; otherwise
    :func:`fastconv.kernels.blas.matmul` (other dtypes, layouts or sizes)."""
    if (a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.shape[0] * a.shape[1] * b.shape[1] < PARALLEL_MACS
            or a.dtype not in registry.HELPER_DTYPES or b.dtype != a.dtype or not (blas.contiguous(a) and blas.contiguous(b))):
        return blas.matmul(a, b)
    return product(b, a.shape[0], a.flags.c_contiguous)(a, np.empty((a.shape[0], b.shape[1]), a.dtype))


def product(b, m, a_in_rows=True):
    """``(a, out) -> out``, out (m, N) = a (m, K) @ b (K, N), for arrays
    checked once by the caller as :func:`fastconv.kernels.blas.product`
    takes them (the inference plan's dense steps): the backend's product
    when there are threads to share it and enough work, else BLAS's."""
    through_blas = blas.product(b, m, a_in_rows)
    if m * b.shape[0] * b.shape[1] < PARALLEL_MACS:
        return through_blas

    def shared_product(a, out):
        n_threads = threads.in_this_thread()
        backend = registry.helper_backend()
        if backend is None or n_threads == 1:
            return through_blas(a, out)
        with threads.single_threaded_blas():
            registry.dense_product(backend)(a, b, out, min(n_threads, max(out.shape)))
        return out

    return shared_product
