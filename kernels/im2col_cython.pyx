# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The unfold pair in Cython: im2col and its adjoint col2im.

Layouts as in :mod:`fastconv.kernels`: xp (N, C, Hp, Wp), cols
(C*KH*KW, N*OH*OW). Inputs are trusted (validated by fastconv.ops).
"""
from cython cimport floating
from cython.parallel cimport prange


def im2col(const floating[:, :, :, ::1] xp, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t sh, Py_ssize_t sw, floating[:, ::1] cols):
    cdef Py_ssize_t n_img = xp.shape[0], n_rows = xp.shape[1] * kh * kw
    cdef Py_ssize_t oh = (xp.shape[2] - kh) // sh + 1, ow = (xp.shape[3] - kw) // sw + 1
    cdef Py_ssize_t row, c, i, j, n, y, x, col
    with nogil:
        # Each thread fills whole rows: no two threads write the same place.
        for row in prange(n_rows, schedule="static"):
            c = row // (kh * kw)
            i = (row // kw) % kh
            j = row % kw
            for n in range(n_img):
                for y in range(oh):
                    col = (n * oh + y) * ow
                    for x in range(ow):
                        cols[row, col + x] = xp[n, c, y * sh + i, x * sw + j]


def col2im(const floating[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t sh, Py_ssize_t sw, floating[:, :, :, ::1] dxp):
    cdef Py_ssize_t n_chan = dxp.shape[1], n_planes = dxp.shape[0] * dxp.shape[1]
    cdef Py_ssize_t oh = (dxp.shape[2] - kh) // sh + 1, ow = (dxp.shape[3] - kw) // sw + 1
    cdef Py_ssize_t plane, n, c, i, j, y, x, row, col
    with nogil:
        # Overlapping windows add into the same pixel, so each thread owns
        # whole (n, c) planes of dxp instead of rows of cols.
        for plane in prange(n_planes, schedule="static"):
            n = plane // n_chan
            c = plane % n_chan
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        col = (n * oh + y) * ow
                        for x in range(ow):
                            dxp[n, c, y * sh + i, x * sw + j] += cols[row, col + x]
