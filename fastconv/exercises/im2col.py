"""Exercise 5: im2col, and the convolution as one matrix product.

Write ``im2col(x, kh, kw, stride=1, padding=0)``, which copies every
window of the padded x into a column of a matrix, and then
``conv2d(x, w, b=None, stride=1, padding=0)`` as w.reshape(F, -1) @ cols:
the trick that hands a convolution to the fast GEMM of a BLAS library.

Shapes:
    x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW) with
    cols[(c*KH + p)*KW + q, (n*OH + i)*OW + j] = xp[n, c, i*stride + p, j*stride + q]
    (one row per filter tap (c, p, q), in the order of w[f].ravel();
    one column per output pixel (n, i, j))
    conv2d: w (F, C, KH, KW) @ cols gives (F, N*OH*OW); reshape it to
    (F, N, OH, OW), move F after N (transpose) and add b[f].

Hint: for im2col, loop over the taps (c, p, q), not over the pixels: each
tap's row is the strided slice xp[:, c, p : p + stride*OH : stride,
q : q + stride*OW : stride], raveled (it is already in (n, i, j) order).
KH*KW*C slices instead of N*OH*OW windows.

Grade it with:
    fastconv-check im2col.py:im2col --op im2col
    fastconv-check im2col.py:conv2d --op conv2d
"""
import numpy as np


def im2col(x, kh, kw, stride=1, padding=0):
    """x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW)."""
    raise NotImplementedError("exercise 5: write im2col (see the instructions at the top of this file)")


def conv2d(x, w, b=None, stride=1, padding=0):
    """conv2d through im2col and one matrix product: -> y (N, F, OH, OW)."""
    raise NotImplementedError("exercise 5: write conv2d with im2col (see the instructions at the top of this file)")
