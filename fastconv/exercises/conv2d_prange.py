"""Exercise 6: a parallel convolution in Numba that beats the naive loops.

Write the loops of ``_conv2d_loops(xp, w, b, stride, out)`` with Numba:
``@njit(parallel=True)`` and ``prange`` spread its outer loop over the CPU's
cores. ``conv2d`` around it (written for you) pads, allocates and calls it.
To pass, it must be correct and faster, at the MNIST CNN's two conv layers,
than fastconv's own naive Numba kernel (one core, textbook loop order).

Shapes:
    xp (N, C, Hp, Wp)  x already padded
    w (F, C, KH, KW), b (F,), stride an int
    out (N, F, OH, OW) to fill in: out[n, f, i, j] = b[f] + sum over c, p, q of
                                   w[f, c, p, q] * xp[n, c, i*stride + p, j*stride + q]

Hint: make one prange job per (image, filter) pair (N*F of them: enough to
keep every core busy even at batch 1), written as
`for job in prange(N * F): n, f = job // F, job % F`. Inside, start the
plane at b[f], then for each tap (c, p, q) take the weight once and add
weight * xp[...] over all (i, j), with j innermost: consecutive memory,
which the compiler turns into SIMD instructions. Each job writes its own
plane of out, so no two threads write the same place. The first call
compiles (a few seconds); cache=True keeps the result on disk.

Grade it with:
    fastconv-check conv2d_prange.py:conv2d --op conv2d --faster-than numba/naive
"""
import numpy as np
from numba import njit, prange  # noqa: F401  (prange: yours to use)


@njit(parallel=True, cache=True)
def _conv2d_loops(xp, w, b, stride, out):
    """Fill out (N, F, OH, OW) with the convolution of xp and w, plus b."""
    raise NotImplementedError("exercise 6: write the loops of _conv2d_loops")


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) or None -> y (N, F, OH, OW)."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    dtype = np.result_type(x, w)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))).astype(dtype)
    bias = np.zeros(f, dtype) if b is None else np.asarray(b, dtype)
    out = np.empty((n, f, (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1), dtype)
    _conv2d_loops(xp, np.asarray(w, dtype), bias, stride, out)
    return out
