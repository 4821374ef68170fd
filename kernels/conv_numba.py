"""Convolution kernels in Numba, line for line the twin of ``conv_cython.pyx``.

Layouts and the contract as in :mod:`fastconv.kernels`: xp (N, C, Hp, Wp)
already padded, w (F, C, KH, KW), b (F,), out and dy (N, F, OH, OW) with
OH = (Hp - KH) // sh + 1, OW = (Wp - KW) // sw + 1. Inputs are trusted
(validated by fastconv.ops).

``naive`` is the textbook sliding window, kept as documentation.
``vectorized`` is a direct convolution with no unfold buffer. The innermost,
contiguous loop runs over the vector being accumulated into (forward: the F
filters of an output pixel; dw: the F filters of one tap (c, i, j); dx: the
C*KH*KW taps of one window), so each step is a broadcast scalar times a
vector: a SIMD multiply-add, as in Zhang, Franchetti and Low (ICML 2018).

A backward call with ``dxp`` None computes dw only: Numba compiles a separate
specialization for None in which the ``dxp is not None`` branches are pruned;
Cython tests a flag set before the loops release the GIL.
"""
import numba
import numpy as np
from numba import njit, prange

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
                                if dxp is not None:
                                    dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


# --------------------------------------------------------------- vectorized
#
# Weights are repacked once per call where needed (forward) so that the
# vector being accumulated into meets contiguous operands. Each load and store of an accumulator vector serves four
# multiply-adds (four taps forward, four pixels for dw, four filters for dx):
# with one per pass, the loops were bound by the stores, not the arithmetic.
# Leftovers (counts not divisible by four) take the same loop one at a time.
# No fastmath: nothing here is a reduction across the vector lanes, and
# letting multiply-adds fuse into FMA was measured to gain under 2%.


@njit(cache=True)
def _tap_offsets(n_chan, kh, kw, hp, wp):
    """Offset of tap (c, i, j), numbered (c*KH + i)*KW + j, from a window's
    corner in one image flattened to (C*Hp*Wp,)."""
    tap_at = np.empty(n_chan * kh * kw, np.intp)
    for c in range(n_chan):
        for i in range(kh):
            for j in range(kw):
                tap_at[(c * kh + i) * kw + j] = (c * hp + i) * wp + j
    return tap_at


@njit(cache=True)
def _pixel_offsets(oh, ow, sh, sw, wp):
    """Offset of output pixel (y, x)'s window corner, numbered y*OW + x, in
    a flattened (Hp*Wp,) image plane."""
    pix_at = np.empty(oh * ow, np.intp)
    for y in range(oh):
        for x in range(ow):
            pix_at[y * ow + x] = y * sh * wp + x * sw
    return pix_at


@njit(parallel=True, cache=True)
def conv2d_vectorized(xp, w, b, sh, sw, out):
    n_img, n_filt, oh, ow = out.shape
    n_chan, kh, kw, hp, wp = w.shape[1], w.shape[2], w.shape[3], xp.shape[2], xp.shape[3]
    n_taps = n_chan * kh * kw
    n_quad_taps = n_taps - n_taps % 4
    tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    pix_at = _pixel_offsets(oh, ow, sh, sw, wp)
    images = xp.reshape(n_img, n_chan * hp * wp)
    # Taps first (C*KH*KW, F): the F weights of one tap are one contiguous vector.
    w_tf = np.ascontiguousarray(w.reshape(n_filt, n_taps).T)
    # One output row per image, filters last (OW, F): small enough for L1.
    rows = np.empty((n_img, ow, n_filt), out.dtype)
    for n in prange(n_img):
        for y in range(oh):
            for x in range(ow):
                for f in range(n_filt):
                    rows[n, x, f] = b[f]
            for r in range(0, n_quad_taps, 4):
                for x in range(ow):
                    at = pix_at[y * ow + x]
                    p0 = images[n, at + tap_at[r]]
                    p1 = images[n, at + tap_at[r + 1]]
                    p2 = images[n, at + tap_at[r + 2]]
                    p3 = images[n, at + tap_at[r + 3]]
                    for f in range(n_filt):
                        rows[n, x, f] += (p0 * w_tf[r, f] + p1 * w_tf[r + 1, f]
                                          + p2 * w_tf[r + 2, f] + p3 * w_tf[r + 3, f])
            for r in range(n_quad_taps, n_taps):
                for x in range(ow):
                    p0 = images[n, pix_at[y * ow + x] + tap_at[r]]
                    for f in range(n_filt):
                        rows[n, x, f] += p0 * w_tf[r, f]
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


@njit(parallel=True, cache=True)
def _backward_in_chunks(dy, xp, w, sh, sw, dxp, dw, n_chunks):
    n_img, n_filt, oh, ow = dy.shape
    n_chan, kh, kw, hp, wp = w.shape[1], w.shape[2], w.shape[3], xp.shape[2], xp.shape[3]
    n_taps, n_pix = n_chan * kh * kw, oh * ow
    n_quad_pix, n_quad_filt = n_pix - n_pix % 4, n_filt - n_filt % 4
    tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    pix_at = _pixel_offsets(oh, ow, sh, sw, wp)
    images = xp.reshape(n_img, n_chan * hp * wp)
    if dxp is not None:
        dx_images = dxp.reshape(n_img, n_chan * hp * wp)
    dy_planes = dy.reshape(n_img, n_filt, n_pix)
    w_ft = w.reshape(n_filt, n_taps)  # the taps of one filter: a contiguous vector
    # Per chunk: its dw (taps, F), dy of the image at hand with filters last
    # (OH*OW, F), and one window's gradient (taps,).
    dw_parts = np.zeros((n_chunks, n_taps, n_filt), dw.dtype)
    dy_pf = np.empty((n_chunks, n_pix, n_filt), dy.dtype)
    windows = np.empty((n_chunks, n_taps), dw.dtype)
    dw_ft = dw.reshape(n_filt, n_taps)
    for t in prange(n_chunks):
        for n in range(t * n_img // n_chunks, (t + 1) * n_img // n_chunks):
            for f in range(n_filt):
                for y in range(oh):
                    for x in range(ow):
                        dy_pf[t, y * ow + x, f] = dy[n, f, y, x]
            # dw[f, c, i, j] += dy[n, f, y, x] * xp[n, c, y*sh + i, x*sw + j]
            for r in range(n_taps):
                for q in range(0, n_quad_pix, 4):
                    p0 = images[n, pix_at[q] + tap_at[r]]
                    p1 = images[n, pix_at[q + 1] + tap_at[r]]
                    p2 = images[n, pix_at[q + 2] + tap_at[r]]
                    p3 = images[n, pix_at[q + 3] + tap_at[r]]
                    for f in range(n_filt):
                        dw_parts[t, r, f] += (p0 * dy_pf[t, q, f] + p1 * dy_pf[t, q + 1, f]
                                              + p2 * dy_pf[t, q + 2, f] + p3 * dy_pf[t, q + 3, f])
                for q in range(n_quad_pix, n_pix):
                    p0 = images[n, pix_at[q] + tap_at[r]]
                    for f in range(n_filt):
                        dw_parts[t, r, f] += p0 * dy_pf[t, q, f]
            # dxp[n, c, y*sh + i, x*sw + j] += dy[n, f, y, x] * w[f, c, i, j]:
            # the gradient of one output pixel's whole window (a vector over
            # the taps, long even for one channel), then scattered into dxp.
            if dxp is not None:
                for q in range(n_pix):
                    for r in range(n_taps):
                        windows[t, r] = 0
                    for f in range(0, n_quad_filt, 4):
                        g0 = dy_planes[n, f, q]
                        g1 = dy_planes[n, f + 1, q]
                        g2 = dy_planes[n, f + 2, q]
                        g3 = dy_planes[n, f + 3, q]
                        for r in range(n_taps):
                            windows[t, r] += (g0 * w_ft[f, r] + g1 * w_ft[f + 1, r]
                                              + g2 * w_ft[f + 2, r] + g3 * w_ft[f + 3, r])
                    for f in range(n_quad_filt, n_filt):
                        g0 = dy_planes[n, f, q]
                        for r in range(n_taps):
                            windows[t, r] += g0 * w_ft[f, r]
                    for r in range(n_taps):
                        dx_images[n, pix_at[q] + tap_at[r]] += windows[t, r]
    for t in range(n_chunks):
        for f in range(n_filt):
            for r in range(n_taps):
                dw_ft[f, r] += dw_parts[t, r, f]


KERNELS = {
    ("conv2d", "naive"): conv2d_naive,
    ("conv2d_backward", "naive"): conv2d_backward_naive,
    ("conv2d", "vectorized"): conv2d_vectorized,
    ("conv2d_backward", "vectorized"): conv2d_backward_vectorized,
}
