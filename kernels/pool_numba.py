"""Max and avg pooling in Numba, forward and backward; line for line the
twin of ``pool_cython.pyx``.

Layouts as in :mod:`fastconv.kernels`: xp and dxp (N, C, Hp, Wp), already
padded; out and dy (N, C, OH, OW). Inputs are trusted (validated by
fastconv.ops). Helpers take one (Hp, Wp) plane as a 2-D view.

naive       one output pixel at a time, looping over its window.
vectorized  one output row at a time, parallel over the (n, c) planes. For
            max and avg forward and avg backward the window offsets run
            outside and the output columns inside, a streaming loop the
            compiler turns into SIMD; max backward is a scatter to
            data-dependent places and searches window by window. The
            non-overlapping 2x2 windows of stride 2 of the MNIST CNN get row
            passes of their own that read two input rows once.

NaN propagates as in NumPy and PyTorch: a window holding NaN has maximum NaN,
and its gradient goes to the first NaN.
"""
import numpy as np
from numba import njit, prange

# ----------------------------------------------------------------- windows


@njit(cache=True)
def max2(a, b):
    """The larger of a and b, or a NaN if either is."""
    # np.maximum, unlike a conditional expression, compiles without branches.
    return np.maximum(a, b)


@njit(cache=True)
def first_nan_offset(xp_plane, y0, x0, kh, kw):
    """Row-major offset i*KW + j of the first NaN of a KHxKW window that
    holds one."""
    for i in range(kh):
        for j in range(kw):
            v = xp_plane[y0 + i, x0 + j]
            if v != v:
                return i * kw + j
    return 0


@njit(cache=True)
def first_max_offset(xp_plane, y0, x0, kh, kw):
    """Row-major offset i*KW + j of the first maximum (or the first NaN) of
    the KHxKW window whose top-left corner is (y0, x0)."""
    best = 0
    best_value = xp_plane[y0, x0]
    holds_nan = False
    for i in range(kh):
        for j in range(kw):
            v = xp_plane[y0 + i, x0 + j]
            # Strict comparison: an equal value later on does not displace
            # the first maximum.
            if v > best_value:
                best_value = v
                best = i * kw + j
            holds_nan = holds_nan | (v != v)
    # NaN is rare: the scan stays free of a branch for it, and only windows
    # holding one are searched again.
    return first_nan_offset(xp_plane, y0, x0, kh, kw) if holds_nan else best


@njit(cache=True)
def window_sum(xp_plane, y0, x0, kh, kw):
    """Sum of the KHxKW window whose top-left corner is (y0, x0)."""
    total = xp_plane.dtype.type(0)
    for i in range(kh):
        for j in range(kw):
            total = total + xp_plane[y0 + i, x0 + j]
    return total


# ------------------------------------------------------------------- naive


@njit(cache=True)
def max_pool2d_naive(xp, kh, kw, sh, sw, out):
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for y in range(out.shape[2]):
                for x in range(out.shape[3]):
                    k = first_max_offset(xp[n, c], y * sh, x * sw, kh, kw)
                    out[n, c, y, x] = xp[n, c, y * sh + k // kw, x * sw + k % kw]


@njit(cache=True)
def max_pool2d_backward_naive(dy, xp, kh, kw, sh, sw, dxp):
    for n in range(dy.shape[0]):
        for c in range(dy.shape[1]):
            for y in range(dy.shape[2]):
                for x in range(dy.shape[3]):
                    k = first_max_offset(xp[n, c], y * sh, x * sw, kh, kw)
                    dxp[n, c, y * sh + k // kw, x * sw + k % kw] += dy[n, c, y, x]


@njit(cache=True)
def avg_pool2d_naive(xp, kh, kw, sh, sw, out):
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for y in range(out.shape[2]):
                for x in range(out.shape[3]):
                    out[n, c, y, x] = window_sum(xp[n, c], y * sh, x * sw, kh, kw) / (kh * kw)


@njit(cache=True)
def avg_pool2d_backward_naive(dy, xp, kh, kw, sh, sw, dxp):
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


@njit(cache=True)
def max_row(xp_plane, y0, kh, kw, sw, out_row):
    for x in range(out_row.shape[0]):
        out_row[x] = -np.inf
    for i in range(kh):
        for j in range(kw):
            src = xp_plane[y0 + i, j:]
            for x in range(out_row.shape[0]):
                out_row[x] = max2(out_row[x], src[x * sw])


@njit(cache=True)
def max_row_2x2(xp_plane, y0, out_row):
    top = xp_plane[y0]
    bottom = xp_plane[y0 + 1]
    for x in range(out_row.shape[0]):
        out_row[x] = max2(max2(top[2 * x], top[2 * x + 1]), max2(bottom[2 * x], bottom[2 * x + 1]))


@njit(cache=True)
def route_row(xp_plane, dxp_plane, y0, kh, kw, sw, dy_row):
    for x in range(dy_row.shape[0]):
        k = first_max_offset(xp_plane, y0, x * sw, kh, kw)
        dxp_plane[y0 + k // kw, x * sw + k % kw] += dy_row[x]


@njit(cache=True)
def holds_max(v, m):
    """Whether v is a candidate place of the window maximum m (NaN when any
    value is)."""
    return (v == m) | (v != v)


@njit(cache=True)
def route_row_2x2(xp_plane, dxp_plane, y0, dy_row):
    top = xp_plane[y0]
    bottom = xp_plane[y0 + 1]
    for x in range(dy_row.shape[0]):
        a = top[2 * x]
        b = top[2 * x + 1]
        c = bottom[2 * x]
        d = bottom[2 * x + 1]
        m = max2(max2(a, b), max2(c, d))
        # Row-major offset of the first place of the maximum, counted from
        # comparisons rather than chosen by selects: rows this short stay
        # scalar in LLVM, which turns float selects into branches that
        # random data mispredicts (the Cython twin's selects vectorize).
        k = (not holds_max(a, m)) * (1 + (not holds_max(b, m)) * (1 + (not holds_max(c, m))))
        dxp_plane[y0 + k // 2, 2 * x + k % 2] += dy_row[x]


@njit(cache=True)
def mean_row(xp_plane, y0, kh, kw, sw, out_row):
    for x in range(out_row.shape[0]):
        out_row[x] = 0
    for i in range(kh):
        for j in range(kw):
            src = xp_plane[y0 + i, j:]
            for x in range(out_row.shape[0]):
                out_row[x] += src[x * sw]
    for x in range(out_row.shape[0]):
        out_row[x] /= kh * kw


@njit(cache=True)
def mean_row_2x2(xp_plane, y0, out_row):
    top = xp_plane[y0]
    bottom = xp_plane[y0 + 1]
    for x in range(out_row.shape[0]):
        out_row[x] = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) / 4


@njit(cache=True)
def spread_row(dxp_plane, y0, kh, kw, sw, dy_row):
    for i in range(kh):
        for j in range(kw):
            dst = dxp_plane[y0 + i, j:]
            for x in range(dy_row.shape[0]):
                dst[x * sw] += dy_row[x] / (kh * kw)


@njit(cache=True)
def spread_row_2x2(dxp_plane, y0, dy_row):
    dtop = dxp_plane[y0]
    dbottom = dxp_plane[y0 + 1]
    for x in range(dy_row.shape[0]):
        share = dy_row[x] / 4
        dtop[2 * x] += share
        dtop[2 * x + 1] += share
        dbottom[2 * x] += share
        dbottom[2 * x + 1] += share


@njit(parallel=True, cache=True)
def pool_rows(xp, kh, kw, sh, sw, out, take_max):
    """Fill out row by row with the maximum (take_max) or the mean of each
    window, parallel over the (n, c) planes."""
    n_chan, n_planes = out.shape[1], out.shape[0] * out.shape[1]
    pairs = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for plane in prange(n_planes):
        n = plane // n_chan
        c = plane % n_chan
        for y in range(out.shape[2]):
            if take_max and pairs:
                max_row_2x2(xp[n, c], 2 * y, out[n, c, y])
            elif take_max:
                max_row(xp[n, c], y * sh, kh, kw, sw, out[n, c, y])
            elif pairs:
                mean_row_2x2(xp[n, c], 2 * y, out[n, c, y])
            else:
                mean_row(xp[n, c], y * sh, kh, kw, sw, out[n, c, y])


@njit(parallel=True, cache=True)
def pool_rows_backward(dy, xp, kh, kw, sh, sw, dxp, take_max):
    """Add each dy row into dxp: to each window's first maximum (take_max)
    or spread evenly over it. Overlapping windows add into the same pixel,
    so each thread owns whole (n, c) planes of dxp."""
    n_chan, n_planes = dy.shape[1], dy.shape[0] * dy.shape[1]
    pairs = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for plane in prange(n_planes):
        n = plane // n_chan
        c = plane % n_chan
        for y in range(dy.shape[2]):
            if take_max and pairs:
                route_row_2x2(xp[n, c], dxp[n, c], 2 * y, dy[n, c, y])
            elif take_max:
                route_row(xp[n, c], dxp[n, c], y * sh, kh, kw, sw, dy[n, c, y])
            elif pairs:
                spread_row_2x2(dxp[n, c], 2 * y, dy[n, c, y])
            else:
                spread_row(dxp[n, c], y * sh, kh, kw, sw, dy[n, c, y])


@njit(cache=True)
def max_pool2d_vectorized(xp, kh, kw, sh, sw, out):
    pool_rows(xp, kh, kw, sh, sw, out, True)


@njit(cache=True)
def max_pool2d_backward_vectorized(dy, xp, kh, kw, sh, sw, dxp):
    pool_rows_backward(dy, xp, kh, kw, sh, sw, dxp, True)


@njit(cache=True)
def avg_pool2d_vectorized(xp, kh, kw, sh, sw, out):
    pool_rows(xp, kh, kw, sh, sw, out, False)


@njit(cache=True)
def avg_pool2d_backward_vectorized(dy, xp, kh, kw, sh, sw, dxp):
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
