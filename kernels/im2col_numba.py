"""The unfold pair in Numba: im2col and its adjoint col2im, line for line
the twin of ``im2col_cython.pyx``.

Layouts as in :mod:`fastconv.kernels`: xp (N, C, Hp, Wp), cols
(C*KH*KW, N*OH*OW). Inputs are trusted (validated by fastconv.ops).
"""
from numba import njit, prange


@njit(parallel=True, cache=True)
def im2col(xp, kh, kw, sh, sw, cols):
    n_img, n_rows = xp.shape[0], xp.shape[1] * kh * kw
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    # Each thread fills whole rows: no two threads write the same place.
    for row in prange(n_rows):
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        for n in range(n_img):
            for y in range(oh):
                col = (n * oh + y) * ow
                for x in range(ow):
                    cols[row, col + x] = xp[n, c, y * sh + i, x * sw + j]


@njit(parallel=True, cache=True)
def col2im(cols, kh, kw, sh, sw, dxp):
    n_chan, n_planes = dxp.shape[1], dxp.shape[0] * dxp.shape[1]
    oh, ow = (dxp.shape[2] - kh) // sh + 1, (dxp.shape[3] - kw) // sw + 1
    # Overlapping windows add into the same pixel, so each thread owns
    # whole (n, c) planes of dxp instead of rows of cols.
    for plane in prange(n_planes):
        n = plane // n_chan
        c = plane % n_chan
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for y in range(oh):
                    col = (n * oh + y) * ow
                    for x in range(ow):
                        dxp[n, c, y * sh + i, x * sw + j] += cols[row, col + x]
