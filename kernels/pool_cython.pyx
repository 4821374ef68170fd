# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Max and avg pooling in Cython, forward and backward; line for line the
twin of ``pool_numba.py``.

Layouts as in :mod:`fastconv.kernels`: xp and dxp (N, C, Hp, Wp), already
padded; out and dy (N, C, OH, OW). Inputs are trusted (validated by
fastconv.ops). Helpers take one (Hp, Wp) plane as a pointer to its first
element and the row length wp.

naive       one output pixel at a time, looping over its window.
vectorized  one output row at a time, parallel over the (n, c) planes. For
            max and avg forward and avg backward the window offsets run
            outside and the output columns inside, a streaming loop the
            compiler turns into SIMD; max backward is a scatter to
            data-dependent places and searches window by window. The
            non-overlapping 2x2 windows of stride 2 of the MNIST CNN get row
            passes of their own that read two input rows once, all SIMD.

NaN propagates as in NumPy and PyTorch: a window holding NaN has maximum NaN,
and its gradient goes to the first NaN.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY


# ----------------------------------------------------------------- windows


cdef inline floating max2(floating a, floating b) noexcept nogil:
    """The larger of a and b, or a NaN if either is."""
    cdef floating larger = a if a >= b else b
    return a if a != a else larger


cdef Py_ssize_t first_nan_offset(const floating *xp_plane, Py_ssize_t wp,
                                 Py_ssize_t y0, Py_ssize_t x0,
                                 Py_ssize_t kh, Py_ssize_t kw) noexcept nogil:
    """Row-major offset i*KW + j of the first NaN of a KHxKW window that
    holds one."""
    cdef Py_ssize_t i, j
    cdef floating v
    for i in range(kh):
        for j in range(kw):
            v = xp_plane[(y0 + i) * wp + x0 + j]
            if v != v:
                return i * kw + j
    return 0


cdef inline Py_ssize_t first_max_offset(const floating *xp_plane, Py_ssize_t wp,
                                        Py_ssize_t y0, Py_ssize_t x0,
                                        Py_ssize_t kh, Py_ssize_t kw) noexcept nogil:
    """Row-major offset i*KW + j of the first maximum (or the first NaN) of
    the KHxKW window whose top-left corner is (y0, x0)."""
    cdef Py_ssize_t i, j, best = 0
    cdef floating best_value = xp_plane[y0 * wp + x0], v
    cdef bint holds_nan = False
    for i in range(kh):
        for j in range(kw):
            v = xp_plane[(y0 + i) * wp + x0 + j]
            # Strict comparison: an equal value later on does not displace
            # the first maximum.
            if v > best_value:
                best_value = v
                best = i * kw + j
            holds_nan = holds_nan | (v != v)
    # NaN is rare: the scan stays free of a branch for it, and only windows
    # holding one are searched again.
    return first_nan_offset(xp_plane, wp, y0, x0, kh, kw) if holds_nan else best


cdef inline floating window_sum(const floating *xp_plane, Py_ssize_t wp,
                                Py_ssize_t y0, Py_ssize_t x0,
                                Py_ssize_t kh, Py_ssize_t kw) noexcept nogil:
    """Sum of the KHxKW window whose top-left corner is (y0, x0)."""
    cdef Py_ssize_t i, j
    cdef floating total = 0
    for i in range(kh):
        for j in range(kw):
            total = total + xp_plane[(y0 + i) * wp + x0 + j]
    return total


# ------------------------------------------------------------------- naive


def max_pool2d_naive(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] out):
    cdef Py_ssize_t wp = xp.shape[3], n, c, y, x, k
    with nogil:
        for n in range(out.shape[0]):
            for c in range(out.shape[1]):
                for y in range(out.shape[2]):
                    for x in range(out.shape[3]):
                        k = first_max_offset(&xp[n, c, 0, 0], wp, y * sh, x * sw, kh, kw)
                        out[n, c, y, x] = xp[n, c, y * sh + k // kw, x * sw + k % kw]


def max_pool2d_backward_naive(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                              floating[:, :, :, ::1] dxp):
    cdef Py_ssize_t wp = xp.shape[3], n, c, y, x, k
    with nogil:
        for n in range(dy.shape[0]):
            for c in range(dy.shape[1]):
                for y in range(dy.shape[2]):
                    for x in range(dy.shape[3]):
                        k = first_max_offset(&xp[n, c, 0, 0], wp, y * sh, x * sw, kh, kw)
                        dxp[n, c, y * sh + k // kw, x * sw + k % kw] += dy[n, c, y, x]


def avg_pool2d_naive(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] out):
    cdef Py_ssize_t wp = xp.shape[3], n, c, y, x
    with nogil:
        for n in range(out.shape[0]):
            for c in range(out.shape[1]):
                for y in range(out.shape[2]):
                    for x in range(out.shape[3]):
                        out[n, c, y, x] = window_sum(&xp[n, c, 0, 0], wp, y * sh, x * sw, kh, kw) / (kh * kw)


def avg_pool2d_backward_naive(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                              floating[:, :, :, ::1] dxp):
    cdef Py_ssize_t n, c, y, x, i, j
    cdef floating share
    with nogil:
        for n in range(dy.shape[0]):
            for c in range(dy.shape[1]):
                for y in range(dy.shape[2]):
                    for x in range(dy.shape[3]):
                        share = dy[n, c, y, x] / (kh * kw)
                        for i in range(kh):
                            for j in range(kw):
                                dxp[n, c, y * sh + i, x * sw + j] += share


# -------------------------------------------------------------- vectorized
#
# Row passes: each handles output row y of one plane, whose windows start at
# input row y0 = y*sh; out_row and dy_row are that output row (OW long).


cdef inline void max_row(const floating *xp_plane, Py_ssize_t wp, Py_ssize_t y0,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                         floating *out_row, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t i, j, x
    cdef const floating *src
    for x in range(ow):
        out_row[x] = -INFINITY
    for i in range(kh):
        for j in range(kw):
            src = xp_plane + (y0 + i) * wp + j
            for x in range(ow):
                out_row[x] = max2(out_row[x], src[x * sw])


cdef inline void max_row_2x2(const floating *xp_plane, Py_ssize_t wp, Py_ssize_t y0,
                             floating *out_row, Py_ssize_t ow) noexcept nogil:
    cdef const floating *top = xp_plane + y0 * wp
    cdef const floating *bottom = top + wp
    cdef Py_ssize_t x
    for x in range(ow):
        out_row[x] = max2(max2(top[2 * x], top[2 * x + 1]), max2(bottom[2 * x], bottom[2 * x + 1]))


cdef inline void route_row(const floating *xp_plane, floating *dxp_plane, Py_ssize_t wp,
                           Py_ssize_t y0, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                           const floating *dy_row, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t x, k
    for x in range(ow):
        k = first_max_offset(xp_plane, wp, y0, x * sw, kh, kw)
        dxp_plane[(y0 + k // kw) * wp + x * sw + k % kw] += dy_row[x]


cdef inline bint holds_max(floating v, floating m) noexcept nogil:
    """Whether v is a candidate place of the window maximum m (NaN when any
    value is)."""
    return (v == m) | (v != v)


cdef inline void route_row_2x2(const floating *xp_plane, floating *dxp_plane, Py_ssize_t wp,
                               Py_ssize_t y0, const floating *dy_row, Py_ssize_t ow) noexcept nogil:
    cdef const floating *top = xp_plane + y0 * wp
    cdef const floating *bottom = top + wp
    cdef floating *dtop = dxp_plane + y0 * wp
    cdef floating *dbottom = dtop + wp
    cdef Py_ssize_t x
    cdef floating a, b, c, d, m, g, ga, gb, gc
    for x in range(ow):
        a = top[2 * x]
        b = top[2 * x + 1]
        c = bottom[2 * x]
        d = bottom[2 * x + 1]
        m = max2(max2(a, b), max2(c, d))
        # The gradient travels through a, b, c, d in row-major order and
        # stops at the first place of the maximum. All four pixels are
        # written (0 where it did not stop): selects, no branches, so gcc
        # vectorizes the loop.
        g = dy_row[x]
        ga = g if holds_max(a, m) else 0
        g = 0 if holds_max(a, m) else g
        gb = g if holds_max(b, m) else 0
        g = 0 if holds_max(b, m) else g
        gc = g if holds_max(c, m) else 0
        g = 0 if holds_max(c, m) else g
        dtop[2 * x] += ga
        dtop[2 * x + 1] += gb
        dbottom[2 * x] += gc
        dbottom[2 * x + 1] += g


cdef inline void mean_row(const floating *xp_plane, Py_ssize_t wp, Py_ssize_t y0,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                          floating *out_row, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t i, j, x
    cdef const floating *src
    for x in range(ow):
        out_row[x] = 0
    for i in range(kh):
        for j in range(kw):
            src = xp_plane + (y0 + i) * wp + j
            for x in range(ow):
                out_row[x] += src[x * sw]
    for x in range(ow):
        out_row[x] /= kh * kw


cdef inline void mean_row_2x2(const floating *xp_plane, Py_ssize_t wp, Py_ssize_t y0,
                              floating *out_row, Py_ssize_t ow) noexcept nogil:
    cdef const floating *top = xp_plane + y0 * wp
    cdef const floating *bottom = top + wp
    cdef Py_ssize_t x
    for x in range(ow):
        out_row[x] = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) / 4


cdef inline void spread_row(floating *dxp_plane, Py_ssize_t wp, Py_ssize_t y0,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                            const floating *dy_row, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t i, j, x
    cdef floating *dst
    for i in range(kh):
        for j in range(kw):
            dst = dxp_plane + (y0 + i) * wp + j
            for x in range(ow):
                dst[x * sw] += dy_row[x] / (kh * kw)


cdef inline void spread_row_2x2(floating *dxp_plane, Py_ssize_t wp, Py_ssize_t y0,
                                const floating *dy_row, Py_ssize_t ow) noexcept nogil:
    cdef floating *dtop = dxp_plane + y0 * wp
    cdef floating *dbottom = dtop + wp
    cdef Py_ssize_t x
    cdef floating share
    for x in range(ow):
        share = dy_row[x] / 4
        dtop[2 * x] += share
        dtop[2 * x + 1] += share
        dbottom[2 * x] += share
        dbottom[2 * x + 1] += share


cdef void pool_rows(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] out,
                    bint take_max) noexcept nogil:
    """Fill out row by row with the maximum (take_max) or the mean of each
    window, parallel over the (n, c) planes."""
    cdef Py_ssize_t n_chan = out.shape[1], n_planes = out.shape[0] * out.shape[1]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3], wp = xp.shape[3]
    cdef bint pairs = kh == 2 and kw == 2 and sh == 2 and sw == 2
    cdef Py_ssize_t plane, n, c, y
    for plane in prange(n_planes, schedule="static"):
        n = plane // n_chan
        c = plane % n_chan
        for y in range(oh):
            if take_max and pairs:
                max_row_2x2(&xp[n, c, 0, 0], wp, 2 * y, &out[n, c, y, 0], ow)
            elif take_max:
                max_row(&xp[n, c, 0, 0], wp, y * sh, kh, kw, sw, &out[n, c, y, 0], ow)
            elif pairs:
                mean_row_2x2(&xp[n, c, 0, 0], wp, 2 * y, &out[n, c, y, 0], ow)
            else:
                mean_row(&xp[n, c, 0, 0], wp, y * sh, kh, kw, sw, &out[n, c, y, 0], ow)


cdef void pool_rows_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                             floating[:, :, :, ::1] dxp, bint take_max) noexcept nogil:
    """Add each dy row into dxp: to each window's first maximum (take_max)
    or spread evenly over it. Overlapping windows add into the same pixel,
    so each thread owns whole (n, c) planes of dxp."""
    cdef Py_ssize_t n_chan = dy.shape[1], n_planes = dy.shape[0] * dy.shape[1]
    cdef Py_ssize_t oh = dy.shape[2], ow = dy.shape[3], wp = dxp.shape[3]
    cdef bint pairs = kh == 2 and kw == 2 and sh == 2 and sw == 2
    cdef Py_ssize_t plane, n, c, y
    for plane in prange(n_planes, schedule="static"):
        n = plane // n_chan
        c = plane % n_chan
        for y in range(oh):
            if take_max and pairs:
                route_row_2x2(&xp[n, c, 0, 0], &dxp[n, c, 0, 0], wp, 2 * y, &dy[n, c, y, 0], ow)
            elif take_max:
                route_row(&xp[n, c, 0, 0], &dxp[n, c, 0, 0], wp, y * sh, kh, kw, sw, &dy[n, c, y, 0], ow)
            elif pairs:
                spread_row_2x2(&dxp[n, c, 0, 0], wp, 2 * y, &dy[n, c, y, 0], ow)
            else:
                spread_row(&dxp[n, c, 0, 0], wp, y * sh, kh, kw, sw, &dy[n, c, y, 0], ow)


def max_pool2d_vectorized(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] out):
    with nogil:
        pool_rows(xp, kh, kw, sh, sw, out, True)


def max_pool2d_backward_vectorized(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                   floating[:, :, :, ::1] dxp):
    with nogil:
        pool_rows_backward(dy, xp, kh, kw, sh, sw, dxp, True)


def avg_pool2d_vectorized(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] out):
    with nogil:
        pool_rows(xp, kh, kw, sh, sw, out, False)


def avg_pool2d_backward_vectorized(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] xp,
                                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                   floating[:, :, :, ::1] dxp):
    with nogil:
        pool_rows_backward(dy, xp, kh, kw, sh, sw, dxp, False)


KERNELS = {
    ("max_pool2d", "naive"): max_pool2d_naive,
    ("max_pool2d_backward", "naive"): max_pool2d_backward_naive,
    ("avg_pool2d", "naive"): avg_pool2d_naive,
    ("avg_pool2d_backward", "naive"): avg_pool2d_backward_naive,
    ("max_pool2d", "vectorized"): max_pool2d_vectorized,
    ("max_pool2d_backward", "vectorized"): max_pool2d_backward_vectorized,
    ("avg_pool2d", "vectorized"): avg_pool2d_vectorized,
    ("avg_pool2d_backward", "vectorized"): avg_pool2d_backward_vectorized,
}
