"""Convolution kernels in Numba, line for line the twin of ``conv_cython.pyx``.

Layouts and the contract as in :mod:`fastconv.kernels`: xp (N, C, Hp, Wp)
already padded, w (F, C, KH, KW), b (F,), out and dy (N, F, OH, OW) with
OH = (Hp - KH) // sh + 1, OW = (Wp - KW) // sw + 1. Inputs are trusted
(validated by fastconv.ops).

``naive`` is the textbook sliding window, kept as documentation.
``vectorized`` is a direct convolution with no unfold buffer: the channel
being accumulated into (F forward, C for dx) is the innermost, contiguous
loop, so each step is one broadcast scalar times one weight vector (a SIMD
multiply-add), as in Zhang, Franchetti and Low (ICML 2018).
"""
import numba
import numpy as np
from numba import njit, prange

# Multiply-adds may fuse into FMA instructions (one rounding instead of two);
# no reassociation, so results do not depend on the vector width.
_CONTRACT = {"contract"}


# -------------------------------------------------------------------- naive


@njit(cache=True)
def conv2d_naive(xp, w, b, sh, sw, out):
    n_img, n_filt, oh, ow = out.shape
    n_chan, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    for n in range(n_img):
        for f in range(n_filt):
            for y in range(oh):
                for x in range(ow):
                    total = b[f]
                    for c in range(n_chan):
                        for i in range(kh):
                            for j in range(kw):
                                total += w[f, c, i, j] * xp[n, c, y * sh + i, x * sw + j]
                    out[n, f, y, x] = total


@njit(cache=True)
def conv2d_backward_naive(dy, xp, w, sh, sw, dxp, dw):
    n_img, n_filt, oh, ow = dy.shape
    n_chan, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    for n in range(n_img):
        for f in range(n_filt):
            for y in range(oh):
                for x in range(ow):
                    g = dy[n, f, y, x]
                    for c in range(n_chan):
                        for i in range(kh):
                            for j in range(kw):
                                dw[f, c, i, j] += g * xp[n, c, y * sh + i, x * sw + j]
                                dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


# --------------------------------------------------------------- vectorized


@njit(parallel=True, cache=True, fastmath=_CONTRACT)
def conv2d_vectorized(xp, w, b, sh, sw, out):
    n_img, n_filt, oh, ow = out.shape
    n_chan, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    # Filters last, so the F weights of one input tap are one contiguous vector.
    w_cijf = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    # One output row per image, filters last (OW, F): small enough for L1.
    rows = np.empty((n_img, ow, n_filt), out.dtype)
    for n in prange(n_img):
        for y in range(oh):
            for x in range(ow):
                for f in range(n_filt):
                    rows[n, x, f] = b[f]
            for c in range(n_chan):
                for i in range(kh):
                    for j in range(kw):
                        for x in range(ow):
                            pixel = xp[n, c, y * sh + i, x * sw + j]
                            for f in range(n_filt):
                                rows[n, x, f] += pixel * w_cijf[c, i, j, f]
            for f in range(n_filt):
                for x in range(ow):
                    out[n, f, y, x] = rows[n, x, f]


def conv2d_backward_vectorized(dy, xp, w, sh, sw, dxp, dw):
    # The batch is cut into one chunk per thread; each chunk sums its weight
    # gradient privately and the chunks are added once at the end (no races).
    # (The thread count is read here: a jitted function reading it cannot be
    # cached on disk.)
    n_chunks = min(numba.get_num_threads(), dy.shape[0])
    _backward_in_chunks(dy, xp, w, sh, sw, dxp, dw, n_chunks)


@njit(parallel=True, cache=True, fastmath=_CONTRACT)
def _backward_in_chunks(dy, xp, w, sh, sw, dxp, dw, n_chunks):
    n_img, n_filt, oh, ow = dy.shape
    n_chan, kh, kw, hp, wp = w.shape[1], w.shape[2], w.shape[3], xp.shape[2], xp.shape[3]
    # Channels last, so the C weights of one filter tap are one contiguous vector.
    w_fijc = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    # Per chunk: its dw (C, KH, KW, F) and, for the image at hand, dy
    # (OH, OW, F) and dx (Hp, Wp, C) with channels last (dx starts zeroed).
    dw_parts = np.zeros((n_chunks, n_chan, kh, kw, n_filt), dw.dtype)
    dy_yxf = np.empty((n_chunks, oh, ow, n_filt), dy.dtype)
    dx_yxc = np.zeros((n_chunks, hp, wp, n_chan), dxp.dtype)
    for t in prange(n_chunks):
        for n in range(t * n_img // n_chunks, (t + 1) * n_img // n_chunks):
            for f in range(n_filt):
                for y in range(oh):
                    for x in range(ow):
                        dy_yxf[t, y, x, f] = dy[n, f, y, x]
            # dw[f, c, i, j] += dy[n, f, y, x] * xp[n, c, y*sh + i, x*sw + j]
            for c in range(n_chan):
                for i in range(kh):
                    for j in range(kw):
                        for y in range(oh):
                            for x in range(ow):
                                pixel = xp[n, c, y * sh + i, x * sw + j]
                                for f in range(n_filt):
                                    dw_parts[t, c, i, j, f] += pixel * dy_yxf[t, y, x, f]
            # dxp[n, c, y*sh + i, x*sw + j] += dy[n, f, y, x] * w[f, c, i, j]
            for y in range(oh):
                for x in range(ow):
                    for f in range(n_filt):
                        g = dy_yxf[t, y, x, f]
                        for i in range(kh):
                            for j in range(kw):
                                for c in range(n_chan):
                                    dx_yxc[t, y * sh + i, x * sw + j, c] += g * w_fijc[f, i, j, c]
            # Copy out, leaving the scratch zeroed for the next image.
            for c in range(n_chan):
                for yy in range(hp):
                    for xx in range(wp):
                        dxp[n, c, yy, xx] += dx_yxc[t, yy, xx, c]
                        dx_yxc[t, yy, xx, c] = 0
    for t in range(n_chunks):
        for f in range(n_filt):
            for c in range(n_chan):
                for i in range(kh):
                    for j in range(kw):
                        dw[f, c, i, j] += dw_parts[t, c, i, j, f]


KERNELS = {
    ("conv2d", "naive"): conv2d_naive,
    ("conv2d_backward", "naive"): conv2d_backward_naive,
    ("conv2d", "vectorized"): conv2d_vectorized,
    ("conv2d_backward", "vectorized"): conv2d_backward_vectorized,
}
