# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels in Cython, line for line the twin of ``conv_numba.py``.

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
                                    dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


# --------------------------------------------------------------- vectorized


def conv2d_vectorized(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                      const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                      floating[:, :, :, ::1] out):
    cdef Py_ssize_t n_img = out.shape[0], n_filt = out.shape[1], oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t n, f, y, x, c, i, j
    cdef floating pixel
    # Filters last, so the F weights of one input tap are one contiguous vector.
    cdef const floating[:, :, :, ::1] w_cijf = np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))
    # One output row per image, filters last (OW, F): small enough for L1.
    cdef floating[:, :, ::1] rows = np.empty((n_img, ow, n_filt), np.asarray(out).dtype)
    with nogil:
        for n in prange(n_img, schedule="static"):
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
    cdef Py_ssize_t t, n, f, y, x, c, i, j, yy, xx
    cdef floating pixel, g
    dtype = np.asarray(dw).dtype
    # Channels last, so the C weights of one filter tap are one contiguous vector.
    cdef const floating[:, :, :, ::1] w_fijc = np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1)))
    # Per chunk: its dw (C, KH, KW, F) and, for the image at hand, dy
    # (OH, OW, F) and dx (Hp, Wp, C) with channels last (dx starts zeroed).
    cdef floating[:, :, :, :, ::1] dw_parts = np.zeros((n_chunks, n_chan, kh, kw, n_filt), dtype)
    cdef floating[:, :, :, ::1] dy_yxf = np.empty((n_chunks, oh, ow, n_filt), dtype)
    cdef floating[:, :, :, ::1] dx_yxc = np.zeros((n_chunks, hp, wp, n_chan), dtype)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
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
