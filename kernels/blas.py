"""Matrix products for the dense layers and the im2col algorithm, through
SciPy's BLAS.

Not NumPy's ``@``, because of when the two BLAS libraries load. OpenBLAS
reads ``OPENBLAS_THREAD_TIMEOUT`` once, when it loads: with the default its
idle threads spin for about 0.1 s after every product. fastconv sets the
variable when it is imported (``fastconv.threads``), so that they sleep
instead of taking the cores the kernels' OpenMP threads need next. NumPy's
OpenBLAS loads with NumPy, and most programs import NumPy first, so it
never sees the variable; SciPy's OpenBLAS (the one the Cython kernels and
Numba's ``np.dot`` call) loads after fastconv, with this module. Through
NumPy's, a program that imported NumPy first trained 1.5-1.6x slower and
ran inference 1.7-2.0x slower (``python bench/import_order.py``; the
README's Threads section).

A program that imports SciPy's linear algebra before fastconv has the same
problem with both libraries; setting ``OPENBLAS_THREAD_TIMEOUT=4`` in the
environment before starting Python avoids it whatever the order.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import blas as scipy_blas

_GEMM = {np.dtype(np.float32): scipy_blas.sgemm, np.dtype(np.float64): scipy_blas.dgemm}
_GEMV = {np.dtype(np.float32): scipy_blas.sgemv, np.dtype(np.float64): scipy_blas.dgemv}


def matmul(a, b, out=None) -> np.ndarray:
    """a (M, K) @ b (K, N) -> (M, N), C-contiguous, written into ``out`` if
    given. Through SciPy's BLAS when a and b are float32 or float64 of one
    dtype, each C- or F-contiguous (a transposed view of a C array is), and
    ``out`` is None or C-contiguous of that dtype; otherwise ``np.matmul``."""
    gemm = _GEMM.get(a.dtype)
    if (gemm is None or b.dtype != a.dtype or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]
            or 0 in a.shape or 0 in b.shape or not (contiguous(a) and contiguous(b))
            or (out is not None and (out.dtype != a.dtype or not out.flags.c_contiguous
                                     or out.shape != (a.shape[0], b.shape[1])))):
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    return product(b, a.shape[0], a.flags.c_contiguous)(a, out)


def product(b, m, a_in_rows=True):
    """``(a, out) -> out``, out (m, N) = a (m, K) @ b (K, N): the BLAS call
    of :func:`matmul` for a C-contiguous a (``a_in_rows``; else
    F-contiguous) and a C-contiguous out of b's dtype, with b (float32 or
    float64, C- or F-contiguous, no zero size) and m > 0 checked by the
    caller. Called many times on arrays its caller made (the inference
    plan's dense steps), it skips matmul's checks: 1.8 us of a 9.5 us
    product at batch 1."""
    # BLAS is column-major: out.T (N, M) = b.T (N, K) @ a.T (K, M), each
    # operand passed as its column-major self, or transposed by BLAS.
    b_op, trans_b = (b.T, 0) if b.flags.c_contiguous else (b, 1)
    if m == 1:
        # One row (a batch of one image): the matrix-vector product, 7.3 us
        # where GEMM took 12.3 at the MNIST CNN's first dense layer (1600 x
        # 128, Intel Xeon).
        gemv = _GEMV[b.dtype]

        def row_product(a, out):
            gemv(1.0, b_op, a[0], trans=trans_b, y=out[0], overwrite_y=True)
            return out

        return row_product
    gemm, trans_a = _GEMM[b.dtype], 0 if a_in_rows else 1

    def matrix_product(a, out):
        gemm(1.0, b_op, a.T if a_in_rows else a, trans_a=trans_b, trans_b=trans_a, c=out.T, overwrite_c=True)
        return out

    return matrix_product


def contiguous(a) -> bool:
    """C- or F-contiguous (a transposed C array is): what BLAS takes as it is."""
    return a.flags.c_contiguous or a.flags.f_contiguous
