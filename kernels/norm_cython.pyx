# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batch normalisation in Cython, forward and backward; line for line the
twin of ``norm_numba.py``.

Layouts as in :mod:`fastconv.kernels`: x, y, dy and dx (N, C, M), the M =
H*W values of a channel in each image one contiguous run (M = 1 for
features); gamma, beta, mean, var, dgamma and dbeta (C,). Inputs are
trusted (validated by fastconv.ops).

Every sum runs in double precision whatever the dtype, in two passes (the
mean first, then the squares about it), so float32 loses nothing to the
cancellation of a one-pass E[x^2] - E[x]^2. Everything after the sums
reads the mean and variance as stored in their dtype, so forward and
backward divide by one and the same inv_std = 1 / sqrt(var + eps).

naive       one channel at a time, one value at a time: the formulas as
            written.
vectorized  parallel over blocks of channels (as many as make BLOCK_VALUES
            values of an image, or one channel of a larger map). One
            image's part of a block is a contiguous run of the (C*M) plane,
            and every pass is an elementwise loop over it, which the
            compiler turns into SIMD for any M, the M = 1 of features
            included: the sums go into a double accumulator per value
            position (a reduction across vector lanes would need
            -ffast-math to reorder it), and each channel's numbers (mean,
            scale, shift) are first spread into rows as long as the block.
            A block's N runs stay in cache from one pass to the next.

A backward call with ``dx`` None computes dgamma and dbeta only: Cython
tests a flag set before the loops release the GIL.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

# Values of one image per block, at least: runs long enough for the
# prefetcher and for a row pass's set-up to cost little (blocks of one 7x7
# channel were 1.5-2x slower), short enough that a block's N runs (128 KB
# of float32 at batch 64) stay in L2 from one pass to the next. A call of
# one block (cnn-deep's 128 features) runs in the calling thread: waking
# the sleeping threads for it cost about 0.1 ms, five times its work.
cdef Py_ssize_t BLOCK_VALUES = 512


cdef inline double inv_std(double var, double eps) noexcept nogil:
    return 1.0 / sqrt(var + eps)


# ------------------------------------------------------------------- naive


def batch_norm_naive(const floating[:, :, ::1] x, const floating[::1] gamma, const floating[::1] beta,
                     floating[::1] mean, floating[::1] var, double eps, bint training,
                     floating[:, :, ::1] y):
    cdef Py_ssize_t n_img = x.shape[0], n_chan = x.shape[1], m_len = x.shape[2]
    cdef Py_ssize_t n, c, m
    cdef double total, d
    cdef floating scale
    with nogil:
        for c in range(n_chan):
            if training:
                total = 0
                for n in range(n_img):
                    for m in range(m_len):
                        total += x[n, c, m]
                mean[c] = total / (n_img * m_len)
                total = 0
                for n in range(n_img):
                    for m in range(m_len):
                        d = x[n, c, m] - <double>mean[c]
                        total += d * d
                var[c] = total / (n_img * m_len)
            scale = <floating>(gamma[c] * inv_std(var[c], eps))
            for n in range(n_img):
                for m in range(m_len):
                    y[n, c, m] = (x[n, c, m] - mean[c]) * scale + beta[c]


def batch_norm_backward_naive(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                              const floating[::1] gamma, const floating[::1] mean, const floating[::1] var,
                              double eps, floating[:, :, ::1] dx, floating[::1] dgamma, floating[::1] dbeta):
    cdef Py_ssize_t n_img = x.shape[0], n_chan = x.shape[1], m_len = x.shape[2]
    cdef Py_ssize_t n, c, m
    cdef double istd, sum_dy, sum_dy_centred
    cdef floating p, q, r
    cdef bint compute_dx = dx is not None
    with nogil:
        for c in range(n_chan):
            istd = inv_std(var[c], eps)
            sum_dy = 0
            sum_dy_centred = 0
            for n in range(n_img):
                for m in range(m_len):
                    sum_dy += dy[n, c, m]
                    sum_dy_centred += dy[n, c, m] * (x[n, c, m] - <double>mean[c])
            dbeta[c] = sum_dy
            dgamma[c] = sum_dy_centred * istd
            if compute_dx:
                # dx = p*dy + q*(x - mean) + r: ops.batch_norm_backward's formula
                # with the channel's means of dy and dy*xhat folded into q and r.
                p = <floating>(gamma[c] * istd)
                q = <floating>(-gamma[c] * istd * istd * istd * sum_dy_centred / (n_img * m_len))
                r = <floating>(-gamma[c] * istd * sum_dy / (n_img * m_len))
                for n in range(n_img):
                    for m in range(m_len):
                        dx[n, c, m] = dy[n, c, m] * p + (x[n, c, m] - mean[c]) * q + r


# -------------------------------------------------------------- vectorized
#
# Row passes over one image's run of a block: j0..j1 of its (C*M) plane.


cdef inline void zero(double *acc, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        acc[j] = 0


cdef inline void fill(floating *row, floating value, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        row[j] = value


cdef inline double channel_total(const double *acc, Py_ssize_t m_len) noexcept nogil:
    """The sum of one channel's M accumulators."""
    cdef Py_ssize_t m
    cdef double total = 0
    for m in range(m_len):
        total += acc[m]
    return total


cdef inline void add_row(double *acc, const floating *row, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        acc[j] += row[j]


cdef inline void add_centred_squares(double *acc, const floating *row, const floating *centre,
                                     Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    cdef double d
    for j in range(length):
        d = row[j] - <double>centre[j]
        acc[j] += d * d


cdef inline void add_gradient_sums(double *acc_dy, double *acc_dy_centred, const floating *dy_row,
                                   const floating *row, const floating *centre,
                                   Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        acc_dy[j] += dy_row[j]
        acc_dy_centred[j] += dy_row[j] * (row[j] - <double>centre[j])


cdef inline void affine_row(floating *out, const floating *row, const floating *centre,
                            const floating *scale, const floating *shift, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        out[j] = (row[j] - centre[j]) * scale[j] + shift[j]


cdef inline void dx_row(floating *out, const floating *dy_row, const floating *row, const floating *centre,
                        const floating *p, const floating *q, const floating *r, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(length):
        out[j] = dy_row[j] * p[j] + (row[j] - centre[j]) * q[j] + r[j]


cdef void normalise_block(const floating[:, :, ::1] x, const floating[::1] gamma, const floating[::1] beta,
                          floating[::1] mean, floating[::1] var, double eps, bint training,
                          floating[:, :, ::1] y, double[::1] acc, floating[::1] centre, floating[::1] scale,
                          floating[::1] shift, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """batch_norm for channels c0..c1; acc, centre, scale, shift: rows of
    the (C*M) plane, of which the block uses its own part."""
    cdef Py_ssize_t n_img = x.shape[0], m_len = x.shape[2], j0 = c0 * m_len, j1 = c1 * m_len, n, c
    if training:
        zero(&acc[j0], j1 - j0)
        for n in range(n_img):
            add_row(&acc[j0], &x[n, c0, 0], j1 - j0)
        for c in range(c0, c1):
            mean[c] = channel_total(&acc[c * m_len], m_len) / (n_img * m_len)
    for c in range(c0, c1):
        fill(&centre[c * m_len], mean[c], m_len)
    if training:
        zero(&acc[j0], j1 - j0)
        for n in range(n_img):
            add_centred_squares(&acc[j0], &x[n, c0, 0], &centre[j0], j1 - j0)
        for c in range(c0, c1):
            var[c] = channel_total(&acc[c * m_len], m_len) / (n_img * m_len)
    for c in range(c0, c1):
        fill(&scale[c * m_len], <floating>(gamma[c] * inv_std(var[c], eps)), m_len)
        fill(&shift[c * m_len], beta[c], m_len)
    for n in range(n_img):
        affine_row(&y[n, c0, 0], &x[n, c0, 0], &centre[j0], &scale[j0], &shift[j0], j1 - j0)


cdef void backward_block(const floating[:, :, ::1] dy, const floating[:, :, ::1] x, const floating[::1] gamma,
                         const floating[::1] mean, const floating[::1] var, double eps, floating[:, :, ::1] dx,
                         floating[::1] dgamma, floating[::1] dbeta, bint compute_dx, double[::1] acc_dy,
                         double[::1] acc_dy_centred, floating[::1] centre, floating[::1] p, floating[::1] q,
                         floating[::1] r, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """batch_norm_backward for channels c0..c1, with rows as normalise_block's."""
    cdef Py_ssize_t n_img = x.shape[0], m_len = x.shape[2], j0 = c0 * m_len, j1 = c1 * m_len, n, c
    cdef double istd, sum_dy, sum_dy_centred
    zero(&acc_dy[j0], j1 - j0)
    zero(&acc_dy_centred[j0], j1 - j0)
    for c in range(c0, c1):
        fill(&centre[c * m_len], mean[c], m_len)
    for n in range(n_img):
        add_gradient_sums(&acc_dy[j0], &acc_dy_centred[j0], &dy[n, c0, 0], &x[n, c0, 0], &centre[j0], j1 - j0)
    for c in range(c0, c1):
        istd = inv_std(var[c], eps)
        sum_dy = channel_total(&acc_dy[c * m_len], m_len)
        sum_dy_centred = channel_total(&acc_dy_centred[c * m_len], m_len)
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_centred * istd
        if compute_dx:  # as in the naive kernel
            fill(&p[c * m_len], <floating>(gamma[c] * istd), m_len)
            fill(&q[c * m_len], <floating>(-gamma[c] * istd * istd * istd * sum_dy_centred / (n_img * m_len)),
                 m_len)
            fill(&r[c * m_len], <floating>(-gamma[c] * istd * sum_dy / (n_img * m_len)), m_len)
    if compute_dx:
        for n in range(n_img):
            dx_row(&dx[n, c0, 0], &dy[n, c0, 0], &x[n, c0, 0], &centre[j0], &p[j0], &q[j0], &r[j0], j1 - j0)


def batch_norm_vectorized(const floating[:, :, ::1] x, const floating[::1] gamma, const floating[::1] beta,
                          floating[::1] mean, floating[::1] var, double eps, bint training,
                          floating[:, :, ::1] y):
    cdef Py_ssize_t n_chan = x.shape[1], m_len = x.shape[2]
    cdef Py_ssize_t per_block = max(1, BLOCK_VALUES // m_len)
    cdef Py_ssize_t n_blocks = (n_chan + per_block - 1) // per_block
    dtype = np.asarray(y).dtype
    cdef double[::1] acc = np.empty(n_chan * m_len, np.float64)
    cdef floating[::1] centre = np.empty(n_chan * m_len, dtype)
    cdef floating[::1] scale = np.empty(n_chan * m_len, dtype)
    cdef floating[::1] shift = np.empty(n_chan * m_len, dtype)
    cdef Py_ssize_t block, c0
    with nogil:
        if n_blocks == 1:  # in this thread: see BLOCK_VALUES
            normalise_block(x, gamma, beta, mean, var, eps, training, y, acc, centre, scale, shift, 0, n_chan)
        else:
            for block in prange(n_blocks, schedule="static"):
                c0 = block * per_block
                normalise_block(x, gamma, beta, mean, var, eps, training, y, acc, centre, scale, shift, c0,
                                min(c0 + per_block, n_chan))


def batch_norm_backward_vectorized(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                                   const floating[::1] gamma, const floating[::1] mean,
                                   const floating[::1] var, double eps, floating[:, :, ::1] dx,
                                   floating[::1] dgamma, floating[::1] dbeta):
    cdef Py_ssize_t n_chan = x.shape[1], m_len = x.shape[2]
    cdef Py_ssize_t per_block = max(1, BLOCK_VALUES // m_len)
    cdef Py_ssize_t n_blocks = (n_chan + per_block - 1) // per_block
    dtype = np.asarray(dgamma).dtype
    cdef double[::1] acc_dy = np.empty(n_chan * m_len, np.float64)
    cdef double[::1] acc_dy_centred = np.empty(n_chan * m_len, np.float64)
    cdef floating[::1] centre = np.empty(n_chan * m_len, dtype)
    cdef floating[::1] p = np.empty(n_chan * m_len, dtype)
    cdef floating[::1] q = np.empty(n_chan * m_len, dtype)
    cdef floating[::1] r = np.empty(n_chan * m_len, dtype)
    cdef bint compute_dx = dx is not None
    cdef Py_ssize_t block, c0
    with nogil:
        if n_blocks == 1:  # in this thread: see BLOCK_VALUES
            backward_block(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, compute_dx, acc_dy, acc_dy_centred,
                           centre, p, q, r, 0, n_chan)
        else:
            for block in prange(n_blocks, schedule="static"):
                c0 = block * per_block
                backward_block(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, compute_dx, acc_dy,
                               acc_dy_centred, centre, p, q, r, c0, min(c0 + per_block, n_chan))


KERNELS = {
    ("batch_norm", "naive"): batch_norm_naive,
    ("batch_norm_backward", "naive"): batch_norm_backward_naive,
    ("batch_norm", "vectorized"): batch_norm_vectorized,
    ("batch_norm_backward", "vectorized"): batch_norm_backward_vectorized,
}
