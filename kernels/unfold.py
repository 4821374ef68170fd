"""The im2col algorithm of every op, built once from a backend's unfold pair.

Convolution becomes one GEMM (BLAS, through :mod:`.blas`) on the unfolded columns;
pooling becomes a reduction over them. Only ``im2col``/``col2im`` differ
between backends, so this module is shared by Cython and Numba alike.
Shapes and layouts follow the contract in :mod:`fastconv.kernels`.
"""
from __future__ import annotations

import numpy as np

from . import blas


def im2col_kernels(im2col, col2im) -> dict:
    """``{(op, "im2col"): kernel}`` for every op, using the given unfold pair."""

    def unfold(xp, kh, kw, sh, sw, oh, ow):
        n, c = xp.shape[:2]
        cols = np.empty((c * kh * kw, n * oh * ow), dtype=xp.dtype)
        im2col(xp, kh, kw, sh, sw, cols)
        return cols

    def conv2d(xp, w, b, sh, sw, out):
        n, f, oh, ow = out.shape
        cols = unfold(xp, w.shape[2], w.shape[3], sh, sw, oh, ow)
        out_fnp = blas.matmul(w.reshape(f, -1), cols)  # (F, N*OH*OW): one GEMM for the batch
        out_fnp += b[:, None]
        out[...] = out_fnp.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)

    def conv2d_backward(dy, xp, w, sh, sw, dxp, dw):
        n, f, oh, ow = dy.shape
        kh, kw = w.shape[2:]
        cols = unfold(xp, kh, kw, sh, sw, oh, ow)
        dy_fnp = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(f, -1)
        dw[...] = blas.matmul(dy_fnp, cols.T).reshape(dw.shape)
        if dxp is not None:
            col2im(blas.matmul(w.reshape(f, -1).T, dy_fnp), kh, kw, sh, sw, dxp)

    def channels_as_images(a):
        """(N, C, H, W) -> (N*C, 1, H, W): pooling acts on each channel alone."""
        n, c, h, w = a.shape
        return a.reshape(n * c, 1, h, w)

    def pool_cols(xp, kh, kw, sh, sw, out):
        return unfold(channels_as_images(xp), kh, kw, sh, sw, *out.shape[2:])

    def max_pool2d(xp, kh, kw, sh, sw, out):
        pool_cols(xp, kh, kw, sh, sw, out).max(axis=0, out=out.reshape(-1))

    def max_pool2d_backward(dy, xp, kh, kw, sh, sw, dxp):
        cols = pool_cols(xp, kh, kw, sh, sw, dy)
        first_max = cols.argmax(axis=0)  # argmax returns the first of equal maxima
        dcols = np.zeros_like(cols)
        dcols[first_max, np.arange(cols.shape[1])] = dy.reshape(-1)
        col2im(dcols, kh, kw, sh, sw, channels_as_images(dxp))

    def avg_pool2d(xp, kh, kw, sh, sw, out):
        pool_cols(xp, kh, kw, sh, sw, out).mean(axis=0, out=out.reshape(-1))

    def avg_pool2d_backward(dy, xp, kh, kw, sh, sw, dxp):
        share = np.broadcast_to(dy.reshape(1, -1) / (kh * kw), (kh * kw, dy.size))
        col2im(np.ascontiguousarray(share), kh, kw, sh, sw, channels_as_images(dxp))

    # each function is named for the op it implements (checked by fastconv.op_table)
    ops = (conv2d, conv2d_backward, max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward)
    return {(fn.__name__, "im2col"): fn for fn in ops}
