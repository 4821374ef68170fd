"""Batch normalisation in Numba, forward and backward; line for line the
twin of ``norm_cython.pyx``.

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
            and every pass is an elementwise loop over it, which LLVM turns
            into SIMD for any M, the M = 1 of features included: the sums
            go into a double accumulator per value position (a reduction
            across vector lanes would need fastmath to reorder it), and
            each channel's numbers (mean, scale, shift) are first spread
            into rows as long as the block. A block's N runs stay in cache
            from one pass to the next.

A backward call with ``dx`` None computes dgamma and dbeta only: Numba
compiles a separate specialization for None in which the ``dx is not
None`` branches are pruned.
"""
import numpy as np
from numba import njit, prange

# Values of one image per block, at least: runs long enough for the
# prefetcher and for a row pass's set-up to cost little (blocks of one 7x7
# channel were 1.5-2x slower), short enough that a block's N runs (128 KB
# of float32 at batch 64) stay in L2 from one pass to the next. A call of
# one block (cnn-deep's 128 features) runs in the calling thread: waking
# the sleeping threads for it cost about 0.1 ms, five times its work.
BLOCK_VALUES = 512


@njit(cache=True)
def inv_std(var, eps):
    return 1.0 / np.sqrt(np.float64(var) + eps)


# ------------------------------------------------------------------- naive


@njit(cache=True)
def batch_norm_naive(x, gamma, beta, mean, var, eps, training, y):
    n_img, n_chan, m_len = x.shape
    for c in range(n_chan):
        if training:
            total = 0.0
            for n in range(n_img):
                for m in range(m_len):
                    total += x[n, c, m]
            mean[c] = total / (n_img * m_len)
            total = 0.0
            for n in range(n_img):
                for m in range(m_len):
                    d = x[n, c, m] - np.float64(mean[c])
                    total += d * d
            var[c] = total / (n_img * m_len)
        scale = x.dtype.type(gamma[c] * inv_std(var[c], eps))
        for n in range(n_img):
            for m in range(m_len):
                y[n, c, m] = (x[n, c, m] - mean[c]) * scale + beta[c]


@njit(cache=True)
def batch_norm_backward_naive(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta):
    n_img, n_chan, m_len = x.shape
    for c in range(n_chan):
        istd = inv_std(var[c], eps)
        sum_dy = 0.0
        sum_dy_centred = 0.0
        for n in range(n_img):
            for m in range(m_len):
                sum_dy += dy[n, c, m]
                sum_dy_centred += dy[n, c, m] * (x[n, c, m] - np.float64(mean[c]))
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_centred * istd
        if dx is not None:
            # dx = p*dy + q*(x - mean) + r: ops.batch_norm_backward's formula
            # with the channel's means of dy and dy*xhat folded into q and r.
            p = x.dtype.type(gamma[c] * istd)
            q = x.dtype.type(-gamma[c] * istd * istd * istd * sum_dy_centred / (n_img * m_len))
            r = x.dtype.type(-gamma[c] * istd * sum_dy / (n_img * m_len))
            for n in range(n_img):
                for m in range(m_len):
                    dx[n, c, m] = dy[n, c, m] * p + (x[n, c, m] - mean[c]) * q + r


# -------------------------------------------------------------- vectorized
#
# Row passes over one image's run of a block: j0..j1 of its (C*M) plane.


@njit(cache=True)
def channel_total(acc):
    """The sum of one channel's M accumulators."""
    total = 0.0
    for m in range(acc.shape[0]):
        total += acc[m]
    return total


@njit(cache=True)
def add_row(acc, row):
    for j in range(acc.shape[0]):
        acc[j] += row[j]


@njit(cache=True)
def add_centred_squares(acc, row, centre):
    for j in range(acc.shape[0]):
        d = row[j] - np.float64(centre[j])
        acc[j] += d * d


@njit(cache=True)
def add_gradient_sums(acc_dy, acc_dy_centred, dy_row, row, centre):
    for j in range(acc_dy.shape[0]):
        acc_dy[j] += dy_row[j]
        acc_dy_centred[j] += dy_row[j] * (row[j] - np.float64(centre[j]))


@njit(cache=True)
def affine_row(out, row, centre, scale, shift):
    for j in range(out.shape[0]):
        out[j] = (row[j] - centre[j]) * scale[j] + shift[j]


@njit(cache=True)
def dx_row(out, dy_row, row, centre, p, q, r):
    for j in range(out.shape[0]):
        out[j] = dy_row[j] * p[j] + (row[j] - centre[j]) * q[j] + r[j]


@njit(cache=True)
def normalise_block(x, gamma, beta, mean, var, eps, training, y, acc, centre, scale, shift, c0, c1):
    """batch_norm for channels c0..c1; acc, centre, scale, shift: rows of
    the (C*M) plane, of which the block uses its own part."""
    n_img, n_chan, m_len = x.shape
    j0, j1 = c0 * m_len, c1 * m_len
    planes, out = x.reshape(n_img, n_chan * m_len), y.reshape(n_img, n_chan * m_len)
    if training:
        acc[j0:j1] = 0
        for n in range(n_img):
            add_row(acc[j0:j1], planes[n, j0:j1])
        for c in range(c0, c1):
            mean[c] = channel_total(acc[c * m_len:(c + 1) * m_len]) / (n_img * m_len)
    for c in range(c0, c1):
        centre[c * m_len:(c + 1) * m_len] = mean[c]
    if training:
        acc[j0:j1] = 0
        for n in range(n_img):
            add_centred_squares(acc[j0:j1], planes[n, j0:j1], centre[j0:j1])
        for c in range(c0, c1):
            var[c] = channel_total(acc[c * m_len:(c + 1) * m_len]) / (n_img * m_len)
    for c in range(c0, c1):
        scale[c * m_len:(c + 1) * m_len] = x.dtype.type(gamma[c] * inv_std(var[c], eps))
        shift[c * m_len:(c + 1) * m_len] = beta[c]
    for n in range(n_img):
        affine_row(out[n, j0:j1], planes[n, j0:j1], centre[j0:j1], scale[j0:j1], shift[j0:j1])


@njit(cache=True)
def backward_block(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, acc_dy, acc_dy_centred, centre, p, q, r,
                   c0, c1):
    """batch_norm_backward for channels c0..c1, with rows as normalise_block's."""
    n_img, n_chan, m_len = x.shape
    j0, j1 = c0 * m_len, c1 * m_len
    dy_planes, planes = dy.reshape(n_img, n_chan * m_len), x.reshape(n_img, n_chan * m_len)
    acc_dy[j0:j1] = 0
    acc_dy_centred[j0:j1] = 0
    for c in range(c0, c1):
        centre[c * m_len:(c + 1) * m_len] = mean[c]
    for n in range(n_img):
        add_gradient_sums(acc_dy[j0:j1], acc_dy_centred[j0:j1], dy_planes[n, j0:j1], planes[n, j0:j1], centre[j0:j1])
    for c in range(c0, c1):
        istd = inv_std(var[c], eps)
        sum_dy = channel_total(acc_dy[c * m_len:(c + 1) * m_len])
        sum_dy_centred = channel_total(acc_dy_centred[c * m_len:(c + 1) * m_len])
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_centred * istd
        if dx is not None:  # as in the naive kernel
            p[c * m_len:(c + 1) * m_len] = x.dtype.type(gamma[c] * istd)
            q[c * m_len:(c + 1) * m_len] = x.dtype.type(-gamma[c] * istd * istd * istd * sum_dy_centred
                                                        / (n_img * m_len))
            r[c * m_len:(c + 1) * m_len] = x.dtype.type(-gamma[c] * istd * sum_dy / (n_img * m_len))
    if dx is not None:
        dx_planes = dx.reshape(n_img, n_chan * m_len)
        for n in range(n_img):
            dx_row(dx_planes[n, j0:j1], dy_planes[n, j0:j1], planes[n, j0:j1], centre[j0:j1], p[j0:j1], q[j0:j1],
                   r[j0:j1])


@njit(parallel=True, cache=True)
def batch_norm_vectorized(x, gamma, beta, mean, var, eps, training, y):
    n_chan, m_len = x.shape[1], x.shape[2]
    per_block = max(1, BLOCK_VALUES // m_len)
    n_blocks = (n_chan + per_block - 1) // per_block
    acc = np.empty(n_chan * m_len, np.float64)
    centre = np.empty(n_chan * m_len, x.dtype)
    scale = np.empty(n_chan * m_len, x.dtype)
    shift = np.empty(n_chan * m_len, x.dtype)
    if n_blocks == 1:  # in this thread: see BLOCK_VALUES
        normalise_block(x, gamma, beta, mean, var, eps, training, y, acc, centre, scale, shift, 0, n_chan)
    else:
        for block in prange(n_blocks):
            c0 = block * per_block
            normalise_block(x, gamma, beta, mean, var, eps, training, y, acc, centre, scale, shift, c0,
                            min(c0 + per_block, n_chan))


@njit(parallel=True, cache=True)
def batch_norm_backward_vectorized(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta):
    n_chan, m_len = x.shape[1], x.shape[2]
    per_block = max(1, BLOCK_VALUES // m_len)
    n_blocks = (n_chan + per_block - 1) // per_block
    acc_dy = np.empty(n_chan * m_len, np.float64)
    acc_dy_centred = np.empty(n_chan * m_len, np.float64)
    centre = np.empty(n_chan * m_len, x.dtype)
    p = np.empty(n_chan * m_len, x.dtype)
    q = np.empty(n_chan * m_len, x.dtype)
    r = np.empty(n_chan * m_len, x.dtype)
    if n_blocks == 1:  # in this thread: see BLOCK_VALUES
        backward_block(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, acc_dy, acc_dy_centred, centre, p, q, r,
                       0, n_chan)
    else:
        for block in prange(n_blocks):
            c0 = block * per_block
            backward_block(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta, acc_dy, acc_dy_centred, centre, p,
                           q, r, c0, min(c0 + per_block, n_chan))


KERNELS = {
    ("batch_norm", "naive"): batch_norm_naive,
    ("batch_norm_backward", "naive"): batch_norm_backward_naive,
    ("batch_norm", "vectorized"): batch_norm_vectorized,
    ("batch_norm_backward", "vectorized"): batch_norm_backward_vectorized,
}
