# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels in Cython, line for line the twin of ``conv_numba.py``.

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
cimport openmp
from cython cimport floating
from cython.parallel cimport prange

import numpy as np


# -------------------------------------------------------------------- naive


def conv2d_naive(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                 const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                 floating[:, :, :, ::1] out):
    cdef Py_ssize_t n_img = out.shape[0], n_filt = out.shape[1], oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t n, f, y, x, c, i, j
    cdef floating total
    with nogil:
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


def conv2d_backward_naive(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                          const floating[:, :, :, ::1] w, Py_ssize_t sh, Py_ssize_t sw,
                          floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] dw):
    cdef Py_ssize_t n_img = dy.shape[0], n_filt = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t n, f, y, x, c, i, j
    cdef floating g
    cdef bint compute_dx = dxp is not None
    with nogil:
        for n in range(n_img):
            for f in range(n_filt):
                for y in range(oh):
                    for x in range(ow):
                        g = dy[n, f, y, x]
                        for c in range(n_chan):
                            for i in range(kh):
                                for j in range(kw):
                                    dw[f, c, i, j] += g * xp[n, c, y * sh + i, x * sw + j]
                                    if compute_dx:
                                        dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


# --------------------------------------------------------------- vectorized
#
# Weights are repacked once per call where needed (forward) so that the
# vector being accumulated into meets contiguous operands. Each load and store of an accumulator vector serves four
# multiply-adds (four taps forward, four pixels for dw, four filters for dx):
# with one per pass, the loops were bound by the stores, not the arithmetic.
# Leftovers (counts not divisible by four) take the same loop one at a time.


def _tap_offsets(Py_ssize_t n_chan, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t hp, Py_ssize_t wp):
    """Offset of tap (c, i, j), numbered (c*KH + i)*KW + j, from a window's
    corner in one image flattened to (C*Hp*Wp,)."""
    tap_at = np.empty(n_chan * kh * kw, np.intp)
    cdef Py_ssize_t[::1] tap_at_view = tap_at
    cdef Py_ssize_t c, i, j
    for c in range(n_chan):
        for i in range(kh):
            for j in range(kw):
                tap_at_view[(c * kh + i) * kw + j] = (c * hp + i) * wp + j
    return tap_at


def _pixel_offsets(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t wp):
    """Offset of output pixel (y, x)'s window corner, numbered y*OW + x, in
    a flattened (Hp*Wp,) image plane."""
    pix_at = np.empty(oh * ow, np.intp)
    cdef Py_ssize_t[::1] pix_at_view = pix_at
    cdef Py_ssize_t y, x
    for y in range(oh):
        for x in range(ow):
            pix_at_view[y * ow + x] = y * sh * wp + x * sw
    return pix_at


def conv2d_vectorized(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                      const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                      floating[:, :, :, ::1] out):
    cdef Py_ssize_t n_img = out.shape[0], n_filt = out.shape[1], oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t n_taps = n_chan * kh * kw
    cdef Py_ssize_t n_quad_taps = n_taps - n_taps % 4
    cdef Py_ssize_t n, f, y, x, r, at
    cdef floating p0, p1, p2, p3
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    cdef const Py_ssize_t[::1] pix_at = _pixel_offsets(oh, ow, sh, sw, wp)
    cdef const floating[:, ::1] images = np.asarray(xp).reshape(n_img, n_chan * hp * wp)
    # Taps first (C*KH*KW, F): the F weights of one tap are one contiguous vector.
    cdef const floating[:, ::1] w_tf = np.ascontiguousarray(np.asarray(w).reshape(n_filt, n_taps).T)
    # One output row per image, filters last (OW, F): small enough for L1.
    cdef floating[:, :, ::1] rows = np.empty((n_img, ow, n_filt), np.asarray(out).dtype)
    with nogil:
        for n in prange(n_img, schedule="static"):
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


def conv2d_backward_vectorized(dy, xp, w, Py_ssize_t sh, Py_ssize_t sw, dxp, dw):
    # The batch is cut into one chunk per thread; each chunk sums its weight
    # gradient privately and the chunks are added once at the end (no races).
    n_chunks = min(openmp.omp_get_max_threads(), dy.shape[0])
    _backward_in_chunks(dy, xp, w, sh, sw, dxp, dw, n_chunks)


def _backward_in_chunks(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                        const floating[:, :, :, ::1] w, Py_ssize_t sh, Py_ssize_t sw,
                        floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] dw,
                        Py_ssize_t n_chunks):
    cdef Py_ssize_t n_img = dy.shape[0], n_filt = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t n_taps = n_chan * kh * kw, n_pix = oh * ow
    cdef Py_ssize_t n_quad_pix = n_pix - n_pix % 4, n_quad_filt = n_filt - n_filt % 4
    cdef Py_ssize_t t, n, f, y, x, r, q
    cdef floating p0, p1, p2, p3, g0, g1, g2, g3
    cdef bint compute_dx = dxp is not None
    dtype = np.asarray(dw).dtype
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    cdef const Py_ssize_t[::1] pix_at = _pixel_offsets(oh, ow, sh, sw, wp)
    cdef const floating[:, ::1] images = np.asarray(xp).reshape(n_img, n_chan * hp * wp)
    cdef floating[:, ::1] dx_images = None
    if compute_dx:
        dx_images = np.asarray(dxp).reshape(n_img, n_chan * hp * wp)
    cdef const floating[:, :, ::1] dy_planes = np.asarray(dy).reshape(n_img, n_filt, n_pix)
    cdef const floating[:, ::1] w_ft = np.asarray(w).reshape(n_filt, n_taps)  # the taps of one filter: a contiguous vector
    # Per chunk: its dw (taps, F), dy of the image at hand with filters last
    # (OH*OW, F), and one window's gradient (taps,).
    cdef floating[:, :, ::1] dw_parts = np.zeros((n_chunks, n_taps, n_filt), dtype)
    cdef floating[:, :, ::1] dy_pf = np.empty((n_chunks, n_pix, n_filt), dtype)
    cdef floating[:, ::1] windows = np.empty((n_chunks, n_taps), dtype)
    cdef floating[:, ::1] dw_ft = np.asarray(dw).reshape(n_filt, n_taps)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
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
                if compute_dx:
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
