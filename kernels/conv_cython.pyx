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
At stride 1 the forward and backward passes (the conv and the fused op)
run instead a register-blocked micro-kernel over "wide rows" of output
positions, in the C header ``conv_tile.h`` (GCC/Clang vector extensions),
whose accumulators stay in registers; see ``_tiled_forward`` and
``_tiled_backward``.

``gemm`` unfolds a group of images at a time into a buffer of its thread,
as many as fit in half the L2 (conv2 of the MNIST CNN: 288 x 121 floats,
139 KB, an image), and multiplies them by the filters with one
single-threaded BLAS GEMM called from inside the parallel loop: the
arithmetic of im2col without its batch-sized buffer going through main
memory. The fused ``conv2d_relu_maxpool2d`` ops use the same grouped GEMM
and then pool the group's conv output while it is still in cache. At
stride 1 the backward pass unfolds in rows as wide as the input's, 16%
more GEMM columns for conv2, so that its unfold and fold are one long
contiguous copy or add per tap rather than eleven of eleven values (see
``_columns_per_row``). The forward pass keeps the packed layout: there
16% more GEMM work (about 0.22 ms at conv2's shape, batch 64, two threads)
would cost what the faster unfold saves (about 0.2 ms; the two were timed
apart, not as a whole-row forward pass).

A backward call with ``dxp`` None computes dw only: Numba compiles a separate
specialization for None in which the ``dxp is not None`` branches are pruned;
Cython tests a flag set before the loops release the GIL.
"""
cimport openmp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from "conv_tile.h" nogil:
    const int FC_TILE_FILTERS
    const int FC_LANES_FLOAT
    const int FC_LANES_DOUBLE
    void fc_conv_image_float(const float *image, const float *w_rows, const float *b4, const Py_ssize_t *tap_at,
                             Py_ssize_t n_taps, Py_ssize_t n_filt4, Py_ssize_t n_q, float *out, Py_ssize_t row)
    void fc_conv_image_double(const double *image, const double *w_rows, const double *b4, const Py_ssize_t *tap_at,
                              Py_ssize_t n_taps, Py_ssize_t n_filt4, Py_ssize_t n_q, double *out, Py_ssize_t row)
    void fc_filter_gradient_float(const float *image, Py_ssize_t image_step, const float *dy, Py_ssize_t dy_step,
                                  Py_ssize_t plane, Py_ssize_t n_images, const Py_ssize_t *tap_at, Py_ssize_t n_taps,
                                  Py_ssize_t n_filt4, Py_ssize_t n_q, float *dw4)
    void fc_filter_gradient_double(const double *image, Py_ssize_t image_step, const double *dy, Py_ssize_t dy_step,
                                   Py_ssize_t plane, Py_ssize_t n_images, const Py_ssize_t *tap_at, Py_ssize_t n_taps,
                                   Py_ssize_t n_filt4, Py_ssize_t n_q, double *dw4)
    void fc_add_rows_float(const float *x, const float *w, Py_ssize_t n_rows, Py_ssize_t n, float *out)
    void fc_add_rows_double(const double *x, const double *w, Py_ssize_t n_rows, Py_ssize_t n, double *out)
    void fc_change_layout_float(float *image, Py_ssize_t n_chan, Py_ssize_t height, Py_ssize_t width, float *hwc,
                                Py_ssize_t hwc_width, Py_ssize_t top, Py_ssize_t left, int to_hwc, const float *bias)
    void fc_change_layout_double(double *image, Py_ssize_t n_chan, Py_ssize_t height, Py_ssize_t width,
                                 double *hwc, Py_ssize_t hwc_width, Py_ssize_t top, Py_ssize_t left, int to_hwc,
                                 const double *bias)

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
# Small per-thread buffers are padded by PAD elements per row, so that no
# cache line holds the rows of two threads: such a line, written in the
# inner loops by both, made two threads slower than one.

PAD = 16  # elements: at least one 64-byte cache line

# The fused op's 2x2 pooling runs over whole blocks of POOL_RUN positions of
# a wide row, the ones past the last pooled pixel computed and dropped (their
# buffers are long enough, and zero past what the micro-kernel writes): GCC
# vectorizes the loop in blocks of 32 and left the rest of a run to a scalar
# loop with branches, which took most of the pooling's time (conv2 of the
# MNIST CNN: 25 of a run of 57).
cdef Py_ssize_t POOL_RUN = 64


cdef inline Py_ssize_t _whole_runs(Py_ssize_t n) noexcept nogil:
    """n rounded up to whole blocks of POOL_RUN."""
    return (n + POOL_RUN - 1) // POOL_RUN * POOL_RUN


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


SPLIT_MACS = 1 << 20
"""Multiply-adds per image (direct convolution) from which fewer images
than threads share their filters out between the threads (_work_split).
The fused op at batch 1, 2 threads, Intel Xeon: the MNIST CNN's conv2
(2.2M) took 28-30 us in two parts against 36-38 us in one; its conv1
(0.2M, mostly the call's fixed costs) 13.0-13.4 us against 13.2-13.8."""


def _work_split(xp, w):
    """(n_chunks, n_parts) for the micro-kernel's stride-1 forward passes of
    xp (N, C, Hp, Wp) by w (F, C, KH, KW): one chunk of the work per thread,
    the work being N * n_parts items, an item one image's filters in one of
    n_parts parts of whole tiles. With fewer images than threads (batch 1:
    the inference plan) and SPLIT_MACS of work per image, the filters are
    shared out so that every thread has work; otherwise an item is an image."""
    cdef Py_ssize_t n_img = xp.shape[0], n_threads = openmp.omp_get_max_threads()
    cdef Py_ssize_t n_tiles = (w.shape[0] + FC_TILE_FILTERS - 1) // FC_TILE_FILTERS
    cdef Py_ssize_t n_parts = 1
    if n_img < n_threads and w.size * (xp.shape[2] - w.shape[2] + 1) * (xp.shape[3] - w.shape[3] + 1) >= SPLIT_MACS:
        n_parts = min(n_tiles, (n_threads + n_img - 1) // n_img)
    return min(n_threads, n_img * n_parts), n_parts


cdef inline (Py_ssize_t, Py_ssize_t) _part_filters(Py_ssize_t part, Py_ssize_t n_parts,
                                                    Py_ssize_t n_filt4) noexcept nogil:
    """(first, last): the filters of part ``part`` of n_parts, whole tiles
    of the F4 filters."""
    cdef Py_ssize_t n_tiles = n_filt4 // FC_TILE_FILTERS
    return (part * n_tiles // n_parts * FC_TILE_FILTERS, (part + 1) * n_tiles // n_parts * FC_TILE_FILTERS)


def conv2d_vectorized(xp, w, b, Py_ssize_t sh, Py_ssize_t sw, out):
    # Stride 1: the register-blocked micro-kernel, a chunk of the images (or of one
    # image's filters) per thread.
    if sh == 1 and sw == 1:
        _tiled_forward(xp, w, b, 0, 0, 0, 0, out, None, *_work_split(xp, w))
    else:
        _strided_forward(xp, w, b, sh, sw, out)


def _strided_forward(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
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


# The stride-1 forward passes of ``vectorized`` (the conv and the fused op)
# run the register-blocked micro-kernel of conv_tile.h on one image at a
# time: the conv over "wide rows" (F, (OH - 1)*Wp + OW), every Wp-th run of
# OW positions being an output row, in a buffer of the thread that stays in
# cache; then the rows are copied out, or pooled with the ReLU. Other
# strides take the per-pixel loops.


cdef const floating *_filter_rows(const floating[:, :, :, ::1] w, floating[:, ::1] padded) noexcept nogil:
    """w (F, C, KH, KW) as conv_tile.h takes it, (F4, C*KH*KW), one filter a
    row: w itself when F is a whole number of tiles (padded, then, has no
    rows), else padded (F4, C*KH*KW) filled with w's rows, then zeros."""
    cdef Py_ssize_t size = w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
    if padded.shape[0] == 0:
        return &w[0, 0, 0, 0]
    memcpy(&padded[0, 0], &w[0, 0, 0, 0], size * sizeof(floating))
    memset(&padded[w.shape[0], 0], 0, (padded.shape[0] - w.shape[0]) * padded.shape[1] * sizeof(floating))
    return &padded[0, 0]


cdef void _conv_image_tiled(const floating *image, const floating *w_rows, const floating *b4,
                            const Py_ssize_t[::1] tap_at, Py_ssize_t n_q, floating[:, ::1] wide) noexcept nogil:
    """wide (F4, row) = the conv of one image (C*Hp*Wp,) at wide positions
    q < n_q of the filters w_rows (F4, T), plus b4 (F4,) unless it is NULL
    (conv_tile.h)."""
    if floating is float:
        fc_conv_image_float(image, w_rows, b4, &tap_at[0], tap_at.shape[0], wide.shape[0], n_q, &wide[0, 0],
                            wide.shape[1])
    else:
        fc_conv_image_double(image, w_rows, b4, &tap_at[0], tap_at.shape[0], wide.shape[0], n_q, &wide[0, 0],
                             wide.shape[1])


cdef void _relu_maxpool_wide(const floating[:, ::1] wide, const floating[::1] b, Py_ssize_t wp,
                             floating[:, ::1] pooled, unsigned char[:, ::1] codes, floating[:, :, ::1] out,
                             unsigned char[:, :, ::1] code) noexcept nogil:
    """out (F, PH, PW) and code = the ReLU-max-pool, 2x2 windows at stride 2,
    of one image's conv output in wide rows, wide (F, row) (bias b (F,) not
    yet added). Pooled pixel (py, px) is wide position j = py*Wp + px of
    pooled and codes (F, row): its window starts at 2j. One long run of j
    per filter, whole blocks of POOL_RUN (wide readable up to 2*run + Wp),
    the positions past PW of each row computed and never read, then the
    rows copied out: the loop vectorizes, where one of PW pixels a row (5
    for conv2 of the MNIST CNN) did not."""
    cdef Py_ssize_t f, j, py, pw = out.shape[2], n_run = _whole_runs((out.shape[1] - 1) * wp + out.shape[2])
    for f in range(out.shape[0]):
        for j in range(n_run):
            pooled[f, j] = _relu_max4(wide[f, 2 * j] + b[f], wide[f, 2 * j + 1] + b[f], wide[f, 2 * j + wp] + b[f],
                                      wide[f, 2 * j + wp + 1] + b[f], &codes[f, j])
        for py in range(out.shape[1]):
            memcpy(&out[f, py, 0], &pooled[f, py * wp], pw * sizeof(floating))
            memcpy(&code[f, py, 0], &codes[f, py * wp], pw)


def _tiled_forward(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w, const floating[::1] b,
                   Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                   floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code, Py_ssize_t n_chunks,
                   Py_ssize_t n_parts):
    """The stride-1 forward pass of the conv (code None: out is the conv
    output) or of the fused op (out and code pooled from it), the items
    (each image's filters in n_parts parts: _work_split) cut into n_chunks
    chunks, one per thread."""
    cdef Py_ssize_t n_img = xp.shape[0], n_filt = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t hp = xp.shape[2], wp = xp.shape[3], size = xp.shape[1] * hp * wp
    cdef Py_ssize_t oh = hp - kh + 1, ow = wp - kw + 1, n_q = (oh - 1) * wp + ow
    cdef Py_ssize_t lanes = FC_LANES_FLOAT if floating is float else FC_LANES_DOUBLE
    cdef Py_ssize_t n_filt4 = (n_filt + FC_TILE_FILTERS - 1) // FC_TILE_FILTERS * FC_TILE_FILTERS
    cdef Py_ssize_t n_taps = w.shape[1] * kh * kw, n_items = n_img * n_parts, t, item, n, f, y, first, last, end
    cdef bint pooled = code is not None
    if pooled:  # only the conv outputs a pool window covers (cnn's conv2: 10 of 11 rows, 8 vectors not 9)
        n_q = ((out.shape[2] - 1) * psh + pkh - 1) * wp + (out.shape[3] - 1) * psw + pkw
    dtype = np.asarray(out).dtype
    cdef floating[:, ::1] padded = np.empty((0 if n_filt4 == n_filt else n_filt4, w.shape[1] * kh * kw), dtype)
    cdef const floating *w_rows
    cdef floating[::1] b4 = np.zeros(0 if pooled else n_filt4, dtype)  # the fused op adds b as it pools
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(xp.shape[1], kh, kw, hp, wp)
    # The micro-kernel reads whole vectors, up to lanes - 1 elements past an
    # image (for positions it then drops): the next images', and for the
    # last images, as many as those reads reach (one unless images are
    # smaller than a vector), a copy with zeros after it.
    cdef Py_ssize_t n_tail = min(n_img, 1 + (lanes - 2) // size), first_tail = n_img - n_tail
    cdef floating[:, ::1] tail = np.empty((n_chunks, n_tail * size + lanes), dtype)
    cdef Py_ssize_t n_written = (n_q + lanes - 1) // lanes * lanes  # the positions the micro-kernel writes
    cdef Py_ssize_t row = n_written + PAD
    # the usual pool (2x2 windows at stride 2) runs in wide rows too, into
    # these, over whole blocks (_relu_maxpool_wide)
    cdef bint wide_pool = pooled and pkh == pkw == psh == psw == 2
    if wide_pool:
        row = max(row, 2 * _whole_runs((out.shape[2] - 1) * wp + out.shape[3]) + wp + PAD)
    cdef floating[:, :, ::1] wide = np.empty((n_chunks, n_filt4, row), dtype)
    cdef floating[:, :, ::1] pooled_rows = np.empty((n_chunks if wide_pool else 0, n_filt, row), dtype)
    cdef unsigned char[:, :, ::1] codes = np.empty((n_chunks if wide_pool else 0, n_filt, row), np.uint8)
    with nogil:
        w_rows = _filter_rows(w, padded)
        if not pooled:
            for f in range(n_filt):
                b4[f] = b[f]
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            if n_tail * size > 0 and (t + 1) * n_items // n_chunks > first_tail * n_parts:
                memcpy(&tail[t, 0], &xp[first_tail, 0, 0, 0], n_tail * size * sizeof(floating))
            memset(&tail[t, n_tail * size], 0, lanes * sizeof(floating))
            for f in range(n_filt4):  # the pool may read past the positions written
                memset(&wide[t, f, n_written], 0, (row - n_written) * sizeof(floating))
            for item in range(t * n_items // n_chunks, (t + 1) * n_items // n_chunks):
                n = item // n_parts
                first, last = _part_filters(item % n_parts, n_parts, n_filt4)
                end = min(last, n_filt)
                _conv_image_tiled(<const floating *>&tail[t, (n - first_tail) * size] if n >= first_tail
                                  else &xp[n, 0, 0, 0], w_rows + first * n_taps, NULL if pooled else &b4[first],
                                  tap_at, n_q, wide[t, first:last])
                if wide_pool:
                    _relu_maxpool_wide(wide[t, first:end], b[first:end], wp, pooled_rows[t], codes[t],
                                       out[n, first:end], code[n, first:end])
                elif pooled:
                    _relu_maxpool_image(wide[t, first:end], b[first:end], wp, pkh, pkw, psh, psw,
                                        out[n, first:end], code[n, first:end])
                if pooled:
                    continue
                for f in range(first, end):
                    for y in range(oh):
                        memcpy(&out[n, f, y, 0], &wide[t, f, y * wp], ow * sizeof(floating))


# The fused op's usual case, 2x2 pool windows at stride 2, pools without
# strided or short loops: the conv output is computed as its four phases
# (the rows of parity di and columns of parity dj, di*2 + dj being the
# position in the pool window), each a stride-1 conv over the image split
# into phase planes (C, 2, 2, H2, W2), H2 = ceil(Hp / 2), W2 = ceil(Wp / 2),
# with its own tap offsets. A pool window's four values then sit at one
# wide position q = py*W2 + px of the four phases' buffers, and the ReLU-max
# is elementwise over long contiguous runs.


FEW_TAPS = 32  # taps (C*KH*KW) up to which the fused op pools by output phases


def _phase_offsets(Py_ssize_t n_chan, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t h2, Py_ssize_t w2):
    """(4, C*KH*KW): for output phase di*2 + dj, the offset of tap (c, i, j)
    from pooled position (0, 0) in the phase planes (C, 2, 2, H2, W2)."""
    tap_at = np.empty((4, n_chan * kh * kw), np.intp)
    cdef Py_ssize_t[:, ::1] tap_at_view = tap_at
    cdef Py_ssize_t di, dj, c, i, j
    for di in range(2):
        for dj in range(2):
            for c in range(n_chan):
                for i in range(kh):
                    for j in range(kw):
                        tap_at_view[di * 2 + dj, (c * kh + i) * kw + j] = (
                            (((c * 2 + (di + i) % 2) * 2 + (dj + j) % 2) * h2 + (di + i) // 2) * w2 + (dj + j) // 2)
    return tap_at


cdef void _split_phases(const floating[:, :, ::1] image, floating[:, :, :, :, ::1] planes) noexcept nogil:
    """planes (C, 2, 2, H2, W2)[c, y % 2, x % 2, y // 2, x // 2] = image
    (C, Hp, Wp)[c, y, x]; the entries past an odd Hp or Wp are left as they
    are (only positions that are never pooled read them)."""
    cdef Py_ssize_t c, y, cp, d
    for c in range(image.shape[0]):
        for y in range(image.shape[1]):
            for cp in range(2):
                for d in range((image.shape[2] - cp + 1) // 2):
                    planes[c, y % 2, cp, y // 2, d] = image[c, y, 2 * d + cp]


cdef void _relu_maxpool_phases(floating[:, :, ::1] phases, const floating[::1] b, Py_ssize_t n_q,
                               Py_ssize_t w2, unsigned char[:, ::1] codes, floating[:, :, ::1] out,
                               unsigned char[:, :, ::1] code) noexcept nogil:
    """out (F, PH, PW) and code = the ReLU-max-pool of the four phases
    (4, F4, row) of one image's conv output (bias b (F,) not yet added),
    pooled pixel (py, px) at wide position py*W2 + px. The pooled values go
    over phase 0 and the codes into codes (F4, row) first, one long run per
    filter in whole blocks of POOL_RUN, then row by row into out and code."""
    cdef Py_ssize_t f, q, py
    for f in range(out.shape[0]):
        for q in range(_whole_runs(n_q)):
            phases[0, f, q] = _relu_max4(phases[0, f, q] + b[f], phases[1, f, q] + b[f], phases[2, f, q] + b[f],
                                         phases[3, f, q] + b[f], &codes[f, q])
        for py in range(out.shape[1]):
            memcpy(&out[f, py, 0], &phases[0, f, py * w2], out.shape[2] * sizeof(floating))
            memcpy(&code[f, py, 0], &codes[f, py * w2], out.shape[2])


def _phase_pooled_forward(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w, const floating[::1] b,
                          floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code, Py_ssize_t n_chunks,
                          Py_ssize_t n_parts):
    """The stride-1 fused op with 2x2 pool windows at stride 2, by output
    phases, the items (each image's filters in n_parts parts: _work_split)
    cut into n_chunks chunks, one per thread."""
    cdef Py_ssize_t n_img = xp.shape[0], n_chan = xp.shape[1], n_filt = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t h2 = (xp.shape[2] + 1) // 2, w2 = (xp.shape[3] + 1) // 2
    cdef Py_ssize_t ph = out.shape[2], pw = out.shape[3], n_q = (ph - 1) * w2 + pw
    cdef Py_ssize_t lanes = FC_LANES_FLOAT if floating is float else FC_LANES_DOUBLE
    cdef Py_ssize_t n_filt4 = (n_filt + FC_TILE_FILTERS - 1) // FC_TILE_FILTERS * FC_TILE_FILTERS
    cdef Py_ssize_t n_written = (n_q + lanes - 1) // lanes * lanes  # the positions the micro-kernel writes
    cdef Py_ssize_t row = max(n_written, _whole_runs(n_q)) + PAD
    cdef Py_ssize_t t, n, phase
    dtype = np.asarray(out).dtype
    cdef floating[:, ::1] padded = np.empty((0 if n_filt4 == n_filt else n_filt4, n_chan * kh * kw), dtype)
    cdef const floating *w_rows
    cdef const Py_ssize_t[:, ::1] tap_at = _phase_offsets(n_chan, kh, kw, h2, w2)
    # Per thread: the phase planes of an image, with channels of zeros after
    # them for the micro-kernel to read whole vectors past the last one; the
    # four phases of its conv output; the codes of its pooled pixels.
    cdef Py_ssize_t room = (lanes + 4 * h2 * w2 - 1) // (4 * h2 * w2)
    cdef floating[:, :, :, :, :, ::1] planes = np.zeros((n_chunks, n_chan + room, 2, 2, h2, w2), dtype)
    cdef floating[:, :, :, ::1] phases = np.empty((n_chunks, 4, n_filt4, row), dtype)
    cdef unsigned char[:, :, ::1] codes = np.empty((n_chunks, n_filt4, row), np.uint8)
    cdef Py_ssize_t n_taps = n_chan * kh * kw, n_items = n_img * n_parts, f, item, first, last, end
    with nogil:
        w_rows = _filter_rows(w, padded)
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            for phase in range(4):
                for f in range(n_filt4):  # the pool reads past the positions written
                    memset(&phases[t, phase, f, n_written], 0, (row - n_written) * sizeof(floating))
            for item in range(t * n_items // n_chunks, (t + 1) * n_items // n_chunks):
                n = item // n_parts
                first, last = _part_filters(item % n_parts, n_parts, n_filt4)
                end = min(last, n_filt)
                _split_phases(xp[n], planes[t])
                for phase in range(4):
                    _conv_image_tiled(&planes[t, 0, 0, 0, 0, 0], w_rows + first * n_taps, NULL, tap_at[phase], n_q,
                                      phases[t, phase, first:last])
                _relu_maxpool_phases(phases[t, :, first:end], b[first:end], n_q, w2, codes[t], out[n, first:end],
                                     code[n, first:end])


# The stride-1 backward pass (the conv and the fused op) on the same
# micro-kernel. Each image's conv output gradient goes into "gradient
# planes" (F4, plane): filter f's gradient at output (y, x) is element
# (y + KH - 1)*Wp + KW - 1 + x of its plane, zeros everywhere else. Then
#   dw: from position base = (KH - 1)*Wp + KW - 1 on, the planes hold the
#       gradient in wide rows (the zeros between rows are where x >= OW),
#       so dw[f, tap] = sum over q of plane[f, base + q] * image[tap_at + q],
#       a reduction tile (conv_tile.h, fc_filter_gradient) over a group of
#       images at a time;
#   dx: the full convolution of the planes with the filters flipped and
#       transposed, dxp[c, p] = sum over (f, i, j) of w[f, c, i, j] *
#       plane[f, p + (KH - 1 - i)*Wp + KW - 1 - j] for every p < Hp*Wp (the
#       zeros stand in for the gradient outside the output), the forward
#       micro-kernel with C as its filters and F*KH*KW taps.

# A thread's group of images in the tiled backward: half of a 1 MiB L2
# (AMD Zen 4's). With a 2 MiB L2 (Intel Xeon) groups of 1 to 8 MiB were
# no faster (cnn-deep conv2 and conv3, batch 64): the filter-gradient tile
# reuses a block's gradient planes from L1, not L2.
GROUP_BYTES = 1 << 19


CACHE_LINE = 64  # bytes


def _aligned_empty(shape, dtype, first):
    """An uninitialised array of the given shape, element ``first`` of the
    first row (along the last axis) starting a cache line: so does every
    row's, if rows are whole cache lines long."""
    size = int(np.prod(shape))
    line = CACHE_LINE // np.dtype(dtype).itemsize
    buffer = np.empty(size + line, dtype)
    skip = (-(buffer.ctypes.data // buffer.itemsize + first)) % line
    return buffer[skip:skip + size].reshape(shape)


def _gradient_tap_offsets(Py_ssize_t n_filt, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t wp, Py_ssize_t plane):
    """Offset of tap (f, i, j), numbered (f*KH + i)*KW + j, of the full
    convolution that gives dx, from a position in the gradient planes."""
    tap_at = np.empty(n_filt * kh * kw, np.intp)
    cdef Py_ssize_t[::1] tap_at_view = tap_at
    cdef Py_ssize_t f, i, j
    for f in range(n_filt):
        for i in range(kh):
            for j in range(kw):
                tap_at_view[(f * kh + i) * kw + j] = f * plane + (kh - 1 - i) * wp + kw - 1 - j
    return tap_at


def _input_filter_rows(w, Py_ssize_t n_chan4):
    """w (F, C, KH, KW) as the dx convolution's filters for conv_tile.h:
    (C4, F*KH*KW), w[f, c, i, j] at [c, (f*KH + i)*KW + j]; channels C..C4
    are zeros."""
    n_filt, n_chan, kh, kw = w.shape
    rows = np.zeros((n_chan4, n_filt, kh, kw), w.dtype)
    rows[:n_chan] = w.transpose(1, 0, 2, 3)
    return rows.reshape(n_chan4, n_filt * kh * kw)


cdef void _gradient_tiled(const floating *image, Py_ssize_t image_step, const floating *dy, Py_ssize_t dy_step,
                          Py_ssize_t plane, Py_ssize_t n_images, const Py_ssize_t[::1] tap_at, Py_ssize_t n_q,
                          floating[:, :, ::1] dw4) noexcept nogil:
    """dw4 (F4 / B, T, B) += the filter gradient of n_images images from
    their gradient planes, each from its position base on (conv_tile.h)."""
    if floating is float:
        fc_filter_gradient_float(image, image_step, dy, dy_step, plane, n_images, &tap_at[0], tap_at.shape[0],
                                 dw4.shape[0] * FC_TILE_FILTERS, n_q, &dw4[0, 0, 0])
    else:
        fc_filter_gradient_double(image, image_step, dy, dy_step, plane, n_images, &tap_at[0], tap_at.shape[0],
                                  dw4.shape[0] * FC_TILE_FILTERS, n_q, &dw4[0, 0, 0])


def _tiled_backward(const floating[:, :, :, ::1] dy, const unsigned char[:, :, :, ::1] code,
                    const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w, Py_ssize_t pkw,
                    Py_ssize_t psh, Py_ssize_t psw, floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] dw,
                    floating[::1] db, Py_ssize_t n_chunks):
    """The stride-1 backward pass of the conv (code and db None: dy is the
    conv output's gradient) or of the fused op (code routes the pooled dy
    to the conv output; db += the routed gradient per filter), the batch
    cut into n_chunks chunks, one per thread, each with its own dw."""
    cdef Py_ssize_t n_img = xp.shape[0], n_chan = xp.shape[1], hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t n_filt = w.shape[0], kh = w.shape[2], kw = w.shape[3], size = n_chan * hp * wp
    cdef Py_ssize_t oh = hp - kh + 1, ow = wp - kw + 1, n_q = (oh - 1) * wp + ow
    cdef Py_ssize_t lanes = FC_LANES_FLOAT if floating is float else FC_LANES_DOUBLE
    cdef Py_ssize_t n_filt4 = (n_filt + FC_TILE_FILTERS - 1) // FC_TILE_FILTERS * FC_TILE_FILTERS
    cdef Py_ssize_t n_chan4 = (n_chan + FC_TILE_FILTERS - 1) // FC_TILE_FILTERS * FC_TILE_FILTERS
    cdef Py_ssize_t base = (kh - 1) * wp + kw - 1
    cdef Py_ssize_t row = (hp * wp + lanes - 1) // lanes * lanes + PAD
    cdef Py_ssize_t t, first, end, g, n, k, m, f, y, c
    cdef bint compute_dx = dxp is not None, routed = code is not None
    dtype = np.asarray(dw).dtype
    # room for whole-vector reads past the last gradient position (zeros),
    # whole cache lines, so that the filter gradient's reads are aligned
    cdef Py_ssize_t line = CACHE_LINE // dtype.itemsize
    cdef Py_ssize_t plane = ((hp + kh - 1) * wp + kw + lanes + line - 1) // line * line
    # and each image of a group copied with zeros after it, for the filter
    # gradient's reads past its end: they are multiplied by a zero gradient,
    # and anything there but a number (the next image's inf, memory past the
    # batch) would make the product NaN
    cdef Py_ssize_t image_step = (size + lanes + line - 1) // line * line
    cdef Py_ssize_t group = max(1, min(GROUP_BYTES // ((n_filt4 * plane + image_step) * dtype.itemsize),
                                       (n_img + n_chunks - 1) // n_chunks))
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    cdef const Py_ssize_t[::1] tap_at_dx = _gradient_tap_offsets(n_filt, kh, kw, wp, plane)
    cdef const floating[:, ::1] w_dx = _input_filter_rows(np.asarray(w), n_chan4)
    cdef const floating[:, ::1] images = np.asarray(xp).reshape(n_img, size)
    cdef floating[:, ::1] dx_images = np.asarray(dxp).reshape(n_img, size) if compute_dx else None
    # per thread, each thread's zeroed by that thread (zeroed by one, they
    # were read from its core's cache by the other: cnn-deep's conv1 block,
    # 1 MB)
    cdef floating[:, :, ::1] group_images = _aligned_empty((n_chunks, group, image_step), dtype, 0)
    cdef floating[:, :, :, ::1] planes = _aligned_empty((n_chunks, group, n_filt4, plane), dtype, base)
    cdef floating[:, :, ::1] dx_wide = np.empty((n_chunks if compute_dx else 0, n_chan4, row), dtype)
    cdef floating[:, :, :, ::1] dw4_parts = np.empty((n_chunks, n_filt4 // FC_TILE_FILTERS, tap_at.shape[0],
                                                      FC_TILE_FILTERS), dtype)
    cdef floating[:, ::1] db_parts = np.empty((n_chunks, n_filt + PAD), dtype)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            memset(&group_images[t, 0, 0], 0, group * image_step * sizeof(floating))
            memset(&planes[t, 0, 0, 0], 0, group * n_filt4 * plane * sizeof(floating))
            memset(&dw4_parts[t, 0, 0, 0], 0,
                   dw4_parts.shape[1] * dw4_parts.shape[2] * FC_TILE_FILTERS * sizeof(floating))
            memset(&db_parts[t, 0], 0, db_parts.shape[1] * sizeof(floating))
            first, end = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
            for g in range((end - first + group - 1) // group):
                n = first + g * group
                m = min(group, end - n)
                for k in range(m):
                    memcpy(&group_images[t, k, 0], &images[n + k, 0], size * sizeof(floating))
                    if routed:
                        _unpool_image(dy[n + k], code[n + k], wp, pkw, psh, psw,
                                      planes[t, k, :n_filt, base:base + n_q], db_parts[t])
                    else:
                        for f in range(n_filt):
                            for y in range(oh):
                                memcpy(&planes[t, k, f, base + y * wp], &dy[n + k, f, y, 0], ow * sizeof(floating))
                    if compute_dx:
                        _conv_image_tiled(&planes[t, k, 0, 0], &w_dx[0, 0], NULL, tap_at_dx, hp * wp, dx_wide[t])
                        for c in range(n_chan):
                            memcpy(&dx_images[n + k, c * hp * wp], &dx_wide[t, c, 0], hp * wp * sizeof(floating))
                _gradient_tiled(&group_images[t, 0, 0], image_step, &planes[t, 0, 0, base], n_filt4 * plane,
                                plane, m, tap_at, n_q, dw4_parts[t])
                if routed:  # the planes zeros again for the next group
                    for k in range(m):
                        _clear_unpooled(code[n + k], wp, pkw, psh, psw, planes[t, k, :n_filt, base:base + n_q])
    _add_blocked_parts(dw4_parts, dw)
    if routed:
        for t in range(n_chunks):
            for f in range(n_filt):
                db[f] += db_parts[t, f]


def _add_blocked_parts(const floating[:, :, :, ::1] dw4_parts, floating[:, :, :, ::1] dw):
    """dw (F, C, KH, KW) += the sum of the per-chunk parts (chunks, F4 / B,
    C*KH*KW, B) of the tiled backward, filter f at [f // B, :, f % B]."""
    cdef floating[:, ::1] dw_ft = np.asarray(dw).reshape(dw.shape[0], -1)
    cdef Py_ssize_t t, f, r
    for t in range(dw4_parts.shape[0]):
        for f in range(dw_ft.shape[0]):
            for r in range(dw_ft.shape[1]):
                dw_ft[f, r] += dw4_parts[t, f // FC_TILE_FILTERS, r, f % FC_TILE_FILTERS]


def conv2d_backward_vectorized(dy, xp, w, Py_ssize_t sh, Py_ssize_t sw, dxp, dw):
    # The batch is cut into one chunk per thread; each chunk sums its weight
    # gradient privately and the chunks are added once at the end (no races).
    # Stride 1: the register-blocked micro-kernel.
    n_chunks = min(openmp.omp_get_max_threads(), dy.shape[0])
    if sh == 1 and sw == 1:
        _tiled_backward(dy, None, xp, w, 0, 0, 0, dxp, dw, None, n_chunks)
    else:
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
    cdef floating[:, ::1] windows = np.empty((n_chunks, n_taps + PAD), dtype)
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


# --------------------------------------------------------------------- gemm
#
# Every thread takes a contiguous chunk of the batch, as in the vectorized
# backward, and goes through it a group of images at a time: the group's
# unfolded columns (C*KH*KW, m*OH*OW), image by image side by side, and
# its conv output or gradient (F, m*OH*OW) stay in the core's cache between
# the unfold, the GEMM and the pass that reads it; m is as many images as
# in ``cache_bytes`` (:func:`_images_per_gemm`), since a wider GEMM runs
# faster; the forward pass then adds the bias (or pools) on the way to the
# output. Dispatch passes ``n_chunks`` and ``cache_bytes`` and runs BLAS
# single-threaded meanwhile (fastconv.registry), so the threads are this
# loop's, never loop threads times BLAS threads.

def _images_per_gemm(bytes_per_image, n_img, n_chunks, cache_bytes):
    """How many images a thread unfolds side by side for one GEMM: as many
    as fit in ``cache_bytes``, at least one, at most a chunk's share."""
    return max(1, min(cache_bytes // max(bytes_per_image, 1), -(-n_img // n_chunks)))


cdef inline int _ld(const floating[:, ::1] a) noexcept nogil:
    """The row stride of a matrix view, in elements (BLAS's leading dimension)."""
    return a.strides[0] // sizeof(floating)


cdef enum:
    NO_GRADIENT = 255  # fastconv.kernels.NO_GRADIENT


cdef void _matmul(bint trans_a, bint trans_b, int m, int n, int k,
                  const floating *a, int lda, const floating *b, int ldb,
                  floating beta, floating *c, int ldc) noexcept nogil:
    """c (m, n) = op(a) @ op(b) + beta * c, every matrix row-major with the
    given row strides; op(a) is (m, k): a itself, or a (k, m) transposed.
    BLAS is column-major, so it computes c^T = op(b)^T @ op(a)^T."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &one, <float *>b, &ldb, <float *>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &one, <double *>b, &ldb, <double *>a, &lda, &beta, c, &ldc)


# The unfold and fold helpers take a group's whole buffer and the first
# column of the image at hand (as the Numba twin, which needs that to run
# vector loops).

cdef void _unfold_image(const floating[:, :, ::1] image, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, floating[:, ::1] cols, Py_ssize_t first) noexcept nogil:
    """cols[(c*KH + i)*KW + j, first + y*OW + x] = image (C, Hp, Wp)[c, y*sh + i, x*sw + j]."""
    cdef Py_ssize_t oh = (image.shape[1] - kh) // sh + 1, ow = (image.shape[2] - kw) // sw + 1
    cdef Py_ssize_t c, i, j, y, x, r
    cdef const floating *source
    for c in range(image.shape[0]):
        for i in range(kh):
            r = (c * kh + i) * kw
            if kw == 3 and sw == 1:
                # 3x3, stride 1 (the common case): the three rows of taps
                # (c, i, 0..2) in one loop over one source row, since each
                # short copy loop costs about as much to start as to run
                for y in range(oh):
                    source = &image[c, y * sh + i, 0]
                    for x in range(ow):
                        cols[r, first + y * ow + x] = source[x]
                        cols[r + 1, first + y * ow + x] = source[x + 1]
                        cols[r + 2, first + y * ow + x] = source[x + 2]
                continue
            for j in range(kw):
                for y in range(oh):
                    source = &image[c, y * sh + i, j]
                    for x in range(ow):
                        cols[r + j, first + y * ow + x] = source[x * sw]


cdef void _fold_image(const floating[:, ::1] cols, Py_ssize_t first, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, floating[:, :, ::1] image) noexcept nogil:
    """The adjoint of _unfold_image: adds each cols entry into the image
    (C, Hp, Wp) position it was read from."""
    cdef Py_ssize_t oh = (image.shape[1] - kh) // sh + 1, ow = (image.shape[2] - kw) // sw + 1
    cdef Py_ssize_t c, i, j, y, x, r
    cdef const floating *source
    cdef floating *target
    for c in range(image.shape[0]):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    source = &cols[r, first + y * ow]
                    target = &image[c, y * sh + i, 0]
                    for x in range(ow):
                        target[x * sw + j] += source[x]


def _columns_per_row(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t wp, Py_ssize_t sh, Py_ssize_t sw):
    """The backward pass's layout of one image's conv output gradient and
    unfolded input: (whole rows?, columns per output row, columns per
    image). At stride 1, whole rows: rows as wide as the input's (Wp), so
    that each tap's columns are one contiguous run of the input plane,
    (OH - 1)*Wp + OW long, and the unfold and the fold are one long copy or
    add per tap instead of OH short ones (columns x >= OW of a row belong to
    no output; their gradient is zero). Otherwise OW, packed: OH*OW."""
    whole_rows = sh == 1 and sw == 1
    row = wp if whole_rows else ow
    return whole_rows, row, (oh - 1) * row + ow


cdef void _unfold_rows(const floating[:, :, ::1] image, Py_ssize_t kh, Py_ssize_t kw,
                       floating[:, ::1] cols, Py_ssize_t first, Py_ssize_t span) noexcept nogil:
    """Stride 1, whole rows: cols[(c*KH + i)*KW + j, first + q] = image
    (C, Hp, Wp)[c] flattened, at i*Wp + j + q, for q < span = (OH - 1)*Wp + OW."""
    cdef Py_ssize_t c, i, j, r, q
    cdef const floating *source
    cdef floating *target
    for c in range(image.shape[0]):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                source = &image[c, i, j]  # runs on through the rows below, within the plane
                target = &cols[r, first]
                for q in range(span):
                    target[q] = source[q]


cdef void _fold_rows(const floating[:, ::1] cols, Py_ssize_t first, Py_ssize_t span, Py_ssize_t kh,
                     Py_ssize_t kw, floating[:, :, ::1] image) noexcept nogil:
    """The adjoint of _unfold_rows: adds each cols entry into the image
    (C, Hp, Wp) position it was read from."""
    cdef Py_ssize_t c, i, j, r, q
    cdef const floating *source
    cdef floating *target
    for c in range(image.shape[0]):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                source = &cols[r, first]
                target = &image[c, i, j]
                for q in range(span):
                    target[q] += source[q]


def _conv2d_gemm(xp, w, b, Py_ssize_t sh, Py_ssize_t sw, out, Py_ssize_t n_chunks, Py_ssize_t cache_bytes):
    _forward_gemm(xp, w, b, sh, sw, 1, 1, 1, 1, out, None, n_chunks, cache_bytes)


def _conv2d_backward_gemm(dy, xp, w, Py_ssize_t sh, Py_ssize_t sw, dxp, dw, Py_ssize_t n_chunks,
                          Py_ssize_t cache_bytes):
    _backward_gemm(dy, None, xp, w, sh, sw, 1, 1, 1, 1, dxp, dw, None, n_chunks, cache_bytes)


cdef void _add_gradients(const floating[:, ::1] dys, floating[:, ::1] cols, bint whole_rows, Py_ssize_t span,
                         const floating *w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         floating[:, ::1] dw_part, bint compute_dx, floating[:, :, :, ::1] dxp,
                         Py_ssize_t n) noexcept nogil:
    """A group's share of the conv gradients, from the output gradients dys
    (F, m*S) and the unfolded inputs cols (taps, m*S) of images n .. n + m - 1
    (S = span columns each, laid out as _columns_per_row says): dw_part
    (F, taps) += dys @ cols^T; then, if compute_dx, cols is overwritten
    with w^T @ dys, w (F, taps), and folded into dxp."""
    cdef int n_filt = dys.shape[0], n_taps = cols.shape[0], width = cols.shape[1]
    cdef Py_ssize_t k
    _matmul(False, True, n_filt, n_taps, width, &dys[0, 0], _ld(dys), &cols[0, 0], _ld(cols),
            1, &dw_part[0, 0], n_taps)
    if not compute_dx:
        return
    _matmul(True, False, n_taps, width, n_filt, w, n_taps, &dys[0, 0], _ld(dys),
            0, &cols[0, 0], _ld(cols))
    for k in range(width // span):
        if whole_rows:
            _fold_rows(cols, k * span, span, kh, kw, dxp[n + k])
        else:
            _fold_image(cols, k * span, kh, kw, sh, sw, dxp[n + k])


def _add_parts(const floating[:, :, ::1] dw_parts, floating[:, :, :, ::1] dw):
    """dw (F, C, KH, KW) += the sum of the per-chunk parts (chunks, F, C*KH*KW)."""
    cdef floating[:, ::1] dw_ft = np.asarray(dw).reshape(dw.shape[0], -1)
    cdef Py_ssize_t t, f, r
    for t in range(dw_parts.shape[0]):
        for f in range(dw_parts.shape[1]):
            for r in range(dw_parts.shape[2]):
                dw_ft[f, r] += dw_parts[t, f, r]


# ------------------------------------------- fused conv -> ReLU -> max-pool
#
# out = max_pool(relu(conv(x))) with pool windows (PKH, PKW) at strides
# (PSH, PSW) over the conv output, padding 0. The conv output itself is
# never stored: only the pooled map and, per pooled pixel, a one-byte code
# saying which conv output of its window gets the gradient (row-major
# offset i*PKW + j of the window's first maximum), or NO_GRADIENT where the
# ReLU cut it. relu then max equals max then relu, and the first maximum of
# relu(v) is the first maximum of v whenever that is > 0: so the codes route
# the gradient exactly as ReLU backward after max-pool backward would.


def conv2d_relu_maxpool2d_naive(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                                const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                                Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                                floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code):
    cdef Py_ssize_t n_img = out.shape[0], n_filt = out.shape[1], ph = out.shape[2], pw = out.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t n, f, py, px, wi, wj, y, x, c, i, j, best_at
    cdef floating total, best
    with nogil:
        for n in range(n_img):
            for f in range(n_filt):
                for py in range(ph):
                    for px in range(pw):
                        best_at = -1
                        for wi in range(pkh):
                            for wj in range(pkw):
                                # the conv output (y, x) in this pool window
                                y = py * psh + wi
                                x = px * psw + wj
                                total = b[f]
                                for c in range(n_chan):
                                    for i in range(kh):
                                        for j in range(kw):
                                            total += w[f, c, i, j] * xp[n, c, y * sh + i, x * sw + j]
                                if best_at < 0 or total > best or (total != total and best == best):
                                    best = total
                                    best_at = wi * pkw + wj
                        _relu_store(best, best_at, &out[n, f, py, px], &code[n, f, py, px])


cdef inline void _relu_store(floating best, Py_ssize_t best_at, floating *out,
                             unsigned char *code) noexcept nogil:
    """Write relu(best) and the window code of a pooled pixel."""
    if best > 0:
        out[0] = best
        code[0] = <unsigned char>best_at
    else:
        out[0] = best if best != best else 0  # NaN stays NaN, as np.maximum(NaN, 0)
        code[0] = NO_GRADIENT


def conv2d_relu_maxpool2d_backward_naive(const floating[:, :, :, ::1] dy,
                                         const unsigned char[:, :, :, ::1] code,
                                         const floating[:, :, :, ::1] xp,
                                         const floating[:, :, :, ::1] w, Py_ssize_t sh, Py_ssize_t sw,
                                         Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                                         floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] dw,
                                         floating[::1] db):
    cdef Py_ssize_t n_img = dy.shape[0], n_filt = dy.shape[1], ph = dy.shape[2], pw = dy.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t n, f, py, px, y, x, c, i, j
    cdef floating g
    cdef bint compute_dx = dxp is not None
    with nogil:
        for n in range(n_img):
            for f in range(n_filt):
                for py in range(ph):
                    for px in range(pw):
                        if code[n, f, py, px] == NO_GRADIENT:
                            continue
                        # the conv output (y, x) that the window took
                        y = py * psh + code[n, f, py, px] // pkw
                        x = px * psw + code[n, f, py, px] % pkw
                        g = dy[n, f, py, px]
                        db[f] += g
                        for c in range(n_chan):
                            for i in range(kh):
                                for j in range(kw):
                                    dw[f, c, i, j] += g * xp[n, c, y * sh + i, x * sw + j]
                                    if compute_dx:
                                        dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


cdef inline floating _relu_max4(floating v0, floating v1, floating v2, floating v3,
                                unsigned char *code) noexcept nogil:
    """ReLU of the maximum of a 2x2 window's values v0..v3 (row-major), and
    in code the position of its first maximum, or NO_GRADIENT where the ReLU
    cut it or a value is NaN (then the result is NaN). Selects only, no
    branches, so a loop calling it vectorizes."""
    cdef floating best = v0
    cdef unsigned char best_at = 0
    cdef bint take, holds_nan, passes
    take = v1 > best
    best_at = 1 if take else best_at
    best = v1 if take else best
    take = v2 > best
    best_at = 2 if take else best_at
    best = v2 if take else best
    take = v3 > best
    best_at = 3 if take else best_at
    best = v3 if take else best
    holds_nan = (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
    passes = (best > 0) & (not holds_nan)
    code[0] = best_at if passes else NO_GRADIENT
    return NAN if holds_nan else (best if passes else 0)


cdef void _relu_maxpool_image(const floating[:, ::1] conv, const floating[::1] b, Py_ssize_t ow,
                              Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                              floating[:, :, ::1] out, unsigned char[:, :, ::1] code) noexcept nogil:
    """Pool one image's conv output conv (F, OH*OW) (bias not yet added)
    into out (F, PH, PW) and code, as conv2d_relu_maxpool2d_naive does.
    Free of branches on the values (they would be mispredicted half the
    time): a NaN only sets a flag, and a window holding one is NaN."""
    cdef Py_ssize_t f, py, px, wi, wj, best_at, at
    cdef floating v, best
    cdef bint holds_nan
    if pkh == 2 and pkw == 2:  # the usual window, unrolled: selects only, so the loop over px vectorizes
        for f in range(out.shape[0]):
            for py in range(out.shape[1]):
                for px in range(out.shape[2]):
                    at = py * psh * ow + px * psw
                    out[f, py, px] = _relu_max4(conv[f, at] + b[f], conv[f, at + 1] + b[f], conv[f, at + ow] + b[f],
                                                conv[f, at + ow + 1] + b[f], &code[f, py, px])
        return
    for f in range(out.shape[0]):
        for py in range(out.shape[1]):
            for px in range(out.shape[2]):
                at = py * psh * ow + px * psw
                best = conv[f, at] + b[f]
                best_at = 0
                holds_nan = False
                for wi in range(pkh):
                    for wj in range(pkw):
                        v = conv[f, at + wi * ow + wj] + b[f]
                        if v > best:
                            best = v
                            best_at = wi * pkw + wj
                        holds_nan = holds_nan | (v != v)
                out[f, py, px] = best if best > 0 else 0
                code[f, py, px] = <unsigned char>best_at if best > 0 else NO_GRADIENT
                if holds_nan:  # the max and its ReLU are NaN, as np.maximum(NaN, 0)
                    out[f, py, px] = NAN
                    code[f, py, px] = NO_GRADIENT


cdef inline void _window_offsets(Py_ssize_t pkw, Py_ssize_t row, Py_ssize_t *window_at) noexcept nogil:
    """window_at[code] = the offset from its window's first conv output of
    the one a code names, conv output (y, x) being column y*row + x; 0 for
    NO_GRADIENT and every code past the window (never passed)."""
    cdef Py_ssize_t at, i = 0, j = 0
    for at in range(NO_GRADIENT):
        window_at[at] = i * row + j
        j += 1
        if j == pkw:
            i, j = i + 1, 0
    window_at[NO_GRADIENT] = 0


cdef void _unpool_image(const floating[:, :, ::1] dy, const unsigned char[:, :, ::1] code,
                        Py_ssize_t row, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                        floating[:, ::1] dconv, floating[::1] db) noexcept nogil:
    """dconv (F, S) += each pooled gradient dy (F, PH, PW) at the conv
    output its code names (none for NO_GRADIENT), conv output (y, x) being
    column y*row + x, and db (F,) += the sum of those that pass. No branch
    on the code (the ReLU cuts at random): a cut gradient adds 0 at the
    window's first conv output."""
    _unpool_strided(dy, code, row, pkw, psh, psw, &dconv[0, 0], dconv.strides[0] // sizeof(floating), 1, db)


cdef void _unpool_strided(const floating[:, :, ::1] dy, const unsigned char[:, :, ::1] code,
                          Py_ssize_t row, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw, floating *dconv,
                          Py_ssize_t filter_step, Py_ssize_t column_step, floating[::1] db) noexcept nogil:
    """_unpool_image into dconv[f*filter_step + s*column_step] (the Numba
    twin passes a strided view instead): also (S, F) with the filters
    innermost, as Winograd's gradient transform reads it."""
    cdef Py_ssize_t window_at[NO_GRADIENT + 1]
    cdef Py_ssize_t f, py, px, at
    cdef floating grad, total
    _window_offsets(pkw, row, window_at)
    for f in range(dy.shape[0]):
        total = 0
        for py in range(dy.shape[1]):
            for px in range(dy.shape[2]):
                at = code[f, py, px]
                grad = dy[f, py, px] if at != NO_GRADIENT else 0
                dconv[f * filter_step + (py * psh * row + px * psw + window_at[at]) * column_step] += grad
                total = total + grad
        db[f] += total


cdef void _clear_unpooled(const unsigned char[:, :, ::1] code, Py_ssize_t row, Py_ssize_t pkw, Py_ssize_t psh,
                          Py_ssize_t psw, floating[:, ::1] dconv) noexcept nogil:
    """Zeros where _unpool_image with this code wrote in dconv (F, S), and
    at the first conv output of the windows it cut: dconv is all zeros
    again if it was before, in a quarter of a memset's writes (2x2 pool)."""
    cdef Py_ssize_t window_at[NO_GRADIENT + 1]
    cdef Py_ssize_t f, py, px
    _window_offsets(pkw, row, window_at)
    for f in range(code.shape[0]):
        for py in range(code.shape[1]):
            for px in range(code.shape[2]):
                dconv[f, py * psh * row + px * psw + window_at[code[f, py, px]]] = 0


# The vectorized fused op: a direct convolution that never stores the conv
# output, not even per image. For each pooled pixel it computes the F conv
# outputs of each window position in a vector (filters innermost, as the
# vectorized conv), four positions at a time so that each tap's weight
# vector is read once for the four; it then keeps the maximum and its
# position per filter and writes the pooled values. Its backward adds, per
# window position, the input window times the gradient vector of the
# filters whose maximum sat there, four positions summed before each update
# of dw (one update per position made each wait on the last through
# memory). It suits few input channels (conv1: 9 taps), where a GEMM per
# image is too thin to pay and the conv output is large.
#
# Its small per-image and per-thread buffers are padded by PAD elements per
# row, as the vectorized conv's are.


def conv2d_relu_maxpool2d_vectorized(xp, w, b, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pkh, Py_ssize_t pkw,
                                     Py_ssize_t psh, Py_ssize_t psw, out, code):
    # Stride 1: the register-blocked micro-kernel, a chunk of the images (or
    # of one image's filters: _work_split) per thread; by output phases for
    # the usual 2x2 pool at stride 2 over few taps, where pooling would cost
    # more than the conv (conv1 of the MNIST CNN, 9 taps, batch 256: 1.9 ms
    # against 6.3 ms; conv2, 288 taps: 7.6 ms against 6.7 ms, its short
    # phase rows rounded up to whole vectors).
    if sh == 1 and sw == 1 and pkh == pkw == psh == psw == 2 and w.shape[1] * w.shape[2] * w.shape[3] <= FEW_TAPS:
        _phase_pooled_forward(xp, w, b, out, code, *_work_split(xp, w))
    elif sh == 1 and sw == 1:
        _tiled_forward(xp, w, b, pkh, pkw, psh, psw, out, code, *_work_split(xp, w))
    else:
        _fused_strided_forward(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code)


def _fused_strided_forward(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                           const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                           Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                           floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code):
    cdef Py_ssize_t n_img = out.shape[0], n_filt = out.shape[1], ph = out.shape[2], pw = out.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3], hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t n_taps = n_chan * kh * kw
    cdef Py_ssize_t n_quad_taps = n_taps - n_taps % 4
    cdef Py_ssize_t n_spots = pkh * pkw  # positions in a pool window
    cdef Py_ssize_t n_quad_spots = (n_spots + 3) // 4 * 4
    cdef Py_ssize_t n, py, px, wi, wj, r, f, k, q, c0, c1, c2, c3, t0, t1, t2, t3
    cdef floating a0, a1, a2, a3, b0, b1, b2, b3, d0, d1, d2, d3, e0, e1, e2, e3, u0, u1, u2, u3
    cdef bint take, passes
    dtype = np.asarray(out).dtype
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    cdef const floating[:, ::1] images = np.asarray(xp).reshape(n_img, n_chan * hp * wp)
    # Taps first (C*KH*KW, F): the F weights of one tap are one contiguous vector.
    cdef const floating[:, ::1] w_tf = np.ascontiguousarray(np.asarray(w).reshape(n_filt, n_taps).T)
    # Per image: each window position's corner in the image and conv outputs
    # (F,), the positions padded to a multiple of four with position 0's
    # corner; the best so far and where; the pooled pixel's values and codes.
    cdef Py_ssize_t[:, ::1] corner = np.zeros((n_img, n_quad_spots + PAD), np.intp)
    cdef floating[:, :, ::1] acc = np.empty((n_img, n_quad_spots, n_filt + PAD), dtype)
    cdef floating[:, ::1] best = np.empty((n_img, n_filt + PAD), dtype)
    cdef int[:, ::1] best_at = np.empty((n_img, n_filt + PAD), np.intc)
    cdef int[:, ::1] holds_nan = np.empty((n_img, n_filt + PAD), np.intc)
    cdef floating[:, ::1] pooled = np.empty((n_img, n_filt + PAD), dtype)
    cdef unsigned char[:, ::1] codes = np.empty((n_img, n_filt + PAD), np.uint8)
    with nogil:
        for n in prange(n_img, schedule="static"):
            for py in range(ph):
                for px in range(pw):
                    for wi in range(pkh):
                        for wj in range(pkw):
                            corner[n, wi * pkw + wj] = (py * psh + wi) * sh * wp + (px * psw + wj) * sw
                    for k in range(n_spots, n_quad_spots):
                        corner[n, k] = corner[n, 0]
                    # four window positions at a time, each tap's weight vector
                    # read once for all four
                    for q in range(0, n_quad_spots, 4):
                        c0, c1, c2, c3 = corner[n, q], corner[n, q + 1], corner[n, q + 2], corner[n, q + 3]
                        for f in range(n_filt):
                            acc[n, q, f] = b[f]
                            acc[n, q + 1, f] = b[f]
                            acc[n, q + 2, f] = b[f]
                            acc[n, q + 3, f] = b[f]
                        for r in range(0, n_quad_taps, 4):
                            t0, t1, t2, t3 = tap_at[r], tap_at[r + 1], tap_at[r + 2], tap_at[r + 3]
                            a0, a1, a2, a3 = images[n, c0 + t0], images[n, c0 + t1], images[n, c0 + t2], images[n, c0 + t3]
                            b0, b1, b2, b3 = images[n, c1 + t0], images[n, c1 + t1], images[n, c1 + t2], images[n, c1 + t3]
                            d0, d1, d2, d3 = images[n, c2 + t0], images[n, c2 + t1], images[n, c2 + t2], images[n, c2 + t3]
                            e0, e1, e2, e3 = images[n, c3 + t0], images[n, c3 + t1], images[n, c3 + t2], images[n, c3 + t3]
                            for f in range(n_filt):
                                u0, u1, u2, u3 = w_tf[r, f], w_tf[r + 1, f], w_tf[r + 2, f], w_tf[r + 3, f]
                                acc[n, q, f] += a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                                acc[n, q + 1, f] += b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3
                                acc[n, q + 2, f] += d0 * u0 + d1 * u1 + d2 * u2 + d3 * u3
                                acc[n, q + 3, f] += e0 * u0 + e1 * u1 + e2 * u2 + e3 * u3
                        for r in range(n_quad_taps, n_taps):
                            t0 = tap_at[r]
                            a0, b0, d0, e0 = images[n, c0 + t0], images[n, c1 + t0], images[n, c2 + t0], images[n, c3 + t0]
                            for f in range(n_filt):
                                u0 = w_tf[r, f]
                                acc[n, q, f] += a0 * u0
                                acc[n, q + 1, f] += b0 * u0
                                acc[n, q + 2, f] += d0 * u0
                                acc[n, q + 3, f] += e0 * u0
                    for k in range(n_spots):
                        for f in range(n_filt):  # selects, not branches: the loop vectorizes
                            take = (k == 0) | (acc[n, k, f] > best[n, f])
                            best[n, f] = acc[n, k, f] if take else best[n, f]
                            best_at[n, f] = k if take else best_at[n, f]
                            holds_nan[n, f] = ((k != 0) & (holds_nan[n, f] != 0)) | (acc[n, k, f] != acc[n, k, f])
                    for f in range(n_filt):  # a window holding NaN gives NaN, as np.maximum(NaN, 0), and no gradient
                        passes = (best[n, f] > 0) & (holds_nan[n, f] == 0)
                        pooled[n, f] = NAN if holds_nan[n, f] else (best[n, f] if passes else 0)
                        codes[n, f] = <unsigned char>best_at[n, f] if passes else NO_GRADIENT
                    for f in range(n_filt):
                        out[n, f, py, px] = pooled[n, f]
                        code[n, f, py, px] = codes[n, f]


def conv2d_relu_maxpool2d_backward_vectorized(dy, code, xp, w, Py_ssize_t sh, Py_ssize_t sw,
                                              Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh,
                                              Py_ssize_t psw, dxp, dw, db):
    # One chunk of the batch per thread, each with its own dw and db, added
    # at the end. Stride 1: the register-blocked micro-kernel.
    n_chunks = min(openmp.omp_get_max_threads(), dy.shape[0])
    if sh == 1 and sw == 1:
        _tiled_backward(dy, code, xp, w, pkw, psh, psw, dxp, dw, db, n_chunks)
    else:
        _fused_backward_in_chunks(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks)


def _fused_backward_in_chunks(const floating[:, :, :, ::1] dy, const unsigned char[:, :, :, ::1] code,
                              const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pkh, Py_ssize_t pkw,
                              Py_ssize_t psh, Py_ssize_t psw, floating[:, :, :, ::1] dxp,
                              floating[:, :, :, ::1] dw, floating[::1] db, Py_ssize_t n_chunks):
    cdef Py_ssize_t n_img = dy.shape[0], n_filt = dy.shape[1], ph = dy.shape[2], pw = dy.shape[3]
    cdef Py_ssize_t n_chan = w.shape[1], kh = w.shape[2], kw = w.shape[3], hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t n_taps = n_chan * kh * kw
    cdef Py_ssize_t n_spots = pkh * pkw  # positions in a pool window
    cdef Py_ssize_t n_quad_spots = (n_spots + 3) // 4 * 4
    cdef Py_ssize_t t, n, py, px, wi, wj, r, f, k, q
    cdef floating p0, p1, p2, p3, g
    cdef bint compute_dx = dxp is not None, any_gradient
    dtype = np.asarray(dw).dtype
    cdef const Py_ssize_t[::1] tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    cdef const floating[:, ::1] images = np.asarray(xp).reshape(n_img, n_chan * hp * wp)
    cdef floating[:, ::1] dx_images = None
    if compute_dx:
        dx_images = np.asarray(dxp).reshape(n_img, n_chan * hp * wp)
    cdef const floating[:, ::1] w_ft = np.asarray(w).reshape(n_filt, n_taps)
    # Per chunk: its dw (taps, F) and db (F,); per window position, its corner in the
    # image and the gradients (F,) that go to it, the positions padded to a
    # multiple of four with zero gradients at position 0's corner; the
    # pooled pixel's gradients and codes; one window's input gradient (taps,).
    cdef floating[:, :, ::1] dw_parts = np.zeros((n_chunks, n_taps + 1, n_filt + PAD), dtype)
    cdef floating[:, ::1] db_parts = np.zeros((n_chunks, n_filt + PAD), dtype)
    cdef floating[:, :, ::1] grads = np.zeros((n_chunks, n_quad_spots, n_filt + PAD), dtype)
    cdef Py_ssize_t[:, ::1] corner = np.zeros((n_chunks, n_quad_spots + PAD), np.intp)
    cdef floating[:, ::1] pooled_grads = np.empty((n_chunks, n_filt + PAD), dtype)
    cdef int[:, ::1] pooled_codes = np.empty((n_chunks, n_filt + PAD), np.intc)
    cdef floating[:, ::1] windows = np.empty((n_chunks, n_taps + PAD), dtype)
    cdef floating[:, ::1] dw_ft = np.asarray(dw).reshape(n_filt, n_taps)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            for n in range(t * n_img // n_chunks, (t + 1) * n_img // n_chunks):
                for py in range(ph):
                    for px in range(pw):
                        # this pooled pixel's gradients and codes, one contiguous vector each
                        any_gradient = False
                        for f in range(n_filt):
                            pooled_grads[t, f] = dy[n, f, py, px]
                            pooled_codes[t, f] = code[n, f, py, px]
                            any_gradient = any_gradient | (code[n, f, py, px] != NO_GRADIENT)
                        if not any_gradient:
                            continue
                        for wi in range(pkh):
                            for wj in range(pkw):
                                k = wi * pkw + wj
                                corner[t, k] = (py * psh + wi) * sh * wp + (px * psw + wj) * sw
                                for f in range(n_filt):
                                    grads[t, k, f] = pooled_grads[t, f] if pooled_codes[t, f] == k else 0
                                    db_parts[t, f] += grads[t, k, f]
                        for k in range(n_spots, n_quad_spots):
                            corner[t, k] = corner[t, 0]
                        # dw[f, tap] += x[tap] * grads[f], a vector over the filters, for four
                        # window positions at once: one read-modify-write of dw per tap, not four
                        for q in range(0, n_quad_spots, 4):
                            for r in range(n_taps):
                                p0 = images[n, corner[t, q] + tap_at[r]]
                                p1 = images[n, corner[t, q + 1] + tap_at[r]]
                                p2 = images[n, corner[t, q + 2] + tap_at[r]]
                                p3 = images[n, corner[t, q + 3] + tap_at[r]]
                                for f in range(n_filt):
                                    dw_parts[t, r, f] += (p0 * grads[t, q, f] + p1 * grads[t, q + 1, f]
                                                          + p2 * grads[t, q + 2, f] + p3 * grads[t, q + 3, f])
                        if compute_dx:
                            for k in range(n_spots):
                                # the window's input gradient, a vector over the taps
                                for r in range(n_taps):
                                    windows[t, r] = 0
                                for f in range(n_filt):
                                    g = grads[t, k, f]
                                    if g != 0:
                                        for r in range(n_taps):
                                            windows[t, r] += g * w_ft[f, r]
                                for r in range(n_taps):
                                    dx_images[n, corner[t, k] + tap_at[r]] += windows[t, r]
        for t in range(n_chunks):
            for f in range(n_filt):
                db[f] += db_parts[t, f]
                for r in range(n_taps):
                    dw_ft[f, r] += dw_parts[t, r, f]


def _forward_gemm(const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                  const floating[::1] b, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                  floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code,
                  Py_ssize_t n_chunks, Py_ssize_t cache_bytes):
    """The forward pass of the fused op: out and code pooled from the conv
    output; with code None, of the conv: out is the conv output itself."""
    cdef Py_ssize_t n_img = xp.shape[0], n_filt = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t oh = (xp.shape[2] - kh) // sh + 1, ow = (xp.shape[3] - kw) // sw + 1
    cdef Py_ssize_t n_taps = w.shape[1] * kh * kw, n_pix = oh * ow
    cdef Py_ssize_t t, first, last, g, n, m, k, f, y, x
    cdef bint pooled = code is not None
    dtype = np.asarray(out).dtype
    cdef Py_ssize_t group = _images_per_gemm((n_taps + n_filt) * n_pix * dtype.itemsize, n_img, n_chunks, cache_bytes)
    cdef floating[:, :, ::1] cols = np.empty((n_chunks, n_taps, group * n_pix), dtype)
    cdef floating[:, :, ::1] conv = np.empty((n_chunks, n_filt, group * n_pix), dtype)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
            for g in range((last - first + group - 1) // group):
                n = first + g * group
                m = min(group, last - n)
                for k in range(m):
                    _unfold_image(xp[n + k], kh, kw, sh, sw, cols[t], k * n_pix)
                # conv (F, m*OH*OW) = w (F, taps) @ cols (taps, m*OH*OW)
                _matmul(False, False, n_filt, m * n_pix, n_taps, &w[0, 0, 0, 0], n_taps,
                        &cols[t, 0, 0], _ld(cols[t]), 0, &conv[t, 0, 0], _ld(conv[t]))
                for k in range(m):
                    if pooled:
                        _relu_maxpool_image(conv[t, :, k * n_pix:(k + 1) * n_pix], b, ow, pkh, pkw,
                                            psh, psw, out[n + k], code[n + k])
                        continue
                    for f in range(n_filt):
                        for y in range(oh):
                            for x in range(ow):
                                out[n + k, f, y, x] = conv[t, f, k * n_pix + y * ow + x] + b[f]


def _backward_gemm(const floating[:, :, :, ::1] dy, const unsigned char[:, :, :, ::1] code,
                   const floating[:, :, :, ::1] xp, const floating[:, :, :, ::1] w,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh,
                   Py_ssize_t psw, floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] dw,
                   floating[::1] db, Py_ssize_t n_chunks, Py_ssize_t cache_bytes):
    """The backward pass of the conv, and of the fused op: there dy is the
    pooled gradient, which code routes back to the conv output, and db is
    the fused op's; with code and db None, dy is the conv output's gradient
    itself."""
    cdef Py_ssize_t n_img = dy.shape[0], n_filt = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t oh = (xp.shape[2] - kh) // sh + 1, ow = (xp.shape[3] - kw) // sw + 1
    cdef Py_ssize_t n_taps = w.shape[1] * kh * kw, row, span
    cdef Py_ssize_t t, first, last, g, n, m, k, f, y
    cdef bint compute_dx = dxp is not None, routed = code is not None, whole_rows
    dtype = np.asarray(dw).dtype
    whole_rows, row, span = _columns_per_row(oh, ow, xp.shape[3], sh, sw)
    cdef Py_ssize_t group = _images_per_gemm((n_taps + n_filt) * span * dtype.itemsize, n_img, n_chunks, cache_bytes)
    cdef floating[:, :, ::1] cols = np.empty((n_chunks, n_taps, group * span), dtype)
    cdef floating[:, :, ::1] dconv = np.empty((n_chunks, n_filt, group * span), dtype)
    cdef floating[:, :, ::1] dw_parts = np.zeros((n_chunks, n_filt, n_taps), dtype)
    cdef floating[:, ::1] db_parts = np.zeros((n_chunks, n_filt), dtype)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
            for g in range((last - first + group - 1) // group):
                n = first + g * group
                m = min(group, last - n)
                for k in range(m):
                    # dconv (F, S) of image n + k, side by side with the group's others
                    for f in range(n_filt):
                        memset(&dconv[t, f, k * span], 0, span * sizeof(floating))
                        if not routed:
                            for y in range(oh):
                                memcpy(&dconv[t, f, k * span + y * row], &dy[n + k, f, y, 0], ow * sizeof(floating))
                    if routed:
                        _unpool_image(dy[n + k], code[n + k], row, pkw, psh, psw,
                                      dconv[t, :, k * span:(k + 1) * span], db_parts[t])
                    if whole_rows:
                        _unfold_rows(xp[n + k], kh, kw, cols[t], k * span, span)
                    else:
                        _unfold_image(xp[n + k], kh, kw, sh, sw, cols[t], k * span)
                _add_gradients(dconv[t, :, :m * span], cols[t, :, :m * span], whole_rows, span, &w[0, 0, 0, 0],
                               kh, kw, sh, sw, dw_parts[t], compute_dx, dxp, n)
    _add_parts(dw_parts, dw)
    if db is not None:
        for t in range(n_chunks):
            for f in range(n_filt):
                db[f] += db_parts[t, f]


# ----------------------------------------------------------------- winograd
#
# F(m x m, 3x3) (Lavin and Gray, CVPR 2016), m = 2 or 4: each m x m block
# of the output, a tile, comes from the alpha x alpha input patch under it
# (alpha = m + 2) as Y = A^T [U * V] A, with U = G g G^T the filter and
# V = B^T d B the patch transformed: alpha^2 multiplications per tile and
# input channel (16 for m = 2, 36 for m = 4) instead of 9 m^2 (36, 144).
# The alpha^2 products of a tile are independent matrix products over the
# channels, so a group of images runs as alpha^2 GEMMs M[e] (tiles, F) =
# V[e] (tiles, C) @ U[e] (C, F), e = alpha*a + b. _tile_size picks m per
# output size. The transforms run on
# channel-last copies of the images, vectors over the channels (input) or
# filters (output), so their innermost loops are contiguous: each is two
# passes of a 1-D transform (_bt, _b, _at, _a: one line of alpha or m
# vectors to the other), first down the patch's columns, then along its
# rows. The groups, chunks and BLAS calls are gemm's (above). 3x3 kernels
# at stride 1 only (fastconv.ops refuses the rest). The backward pass is
# the transposed algorithm: Z = A dY A^T of each tile's output gradient,
# then dU[e] = V[e]^T Z[e] and dV[e] = Z[e] U[e]^T, and the adjoints of the
# transforms, dg = G^T dU G and a patch gradient B dV B^T added where the
# patches overlap.
#
# G is kept in integers (G' = k G, k = 2 or 24) and the results divided by
# k^2 at the end, so sums of small integers stay exact (fused ops' ties).
#
#   m = 2: B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
#          G'  = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]]             (k = 2)
#          A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
#   m = 4: B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
#                 [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
#          G'  = [[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]]  (k = 24)
#          A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]

_FILTER_TRANSFORMS = {
    2: ([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], 4),
    4: ([[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]], 576),
}
"""G' (alpha, 3) and the divisor k^2 of each tile size m."""


def _tile_size(oh, ow):
    """m for an OH x OW output: 4 where F(4x4, 3x3) needs at most 2/3 of
    F(2x2, 3x3)'s multiplications (alpha^2 a tile, a last partial tile
    counted whole), else 2. Its transforms cost more a value and its float32
    error is larger, so a smaller saving does not pay: cnn-deep's conv2
    (14x14, 0.73 of the multiplications) ran slower with it, conv3 (7x7,
    0.56) and cnn's conv2 (11x11, 0.56) faster."""
    products = {m: (m + 2) ** 2 * (-(-oh // m)) * (-(-ow // m)) for m in (2, 4)}
    return 4 if 3 * products[4] <= 2 * products[2] else 2


def _tiling(hp, wp, dtype):
    """(m, tiles_h, tiles_w, g, scale) for a padded input of Hp x Wp: tiles
    down and across the (Hp-2) x (Wp-2) output (a last one partly outside),
    G' (alpha, 3) of dtype and the divisor k^2."""
    oh, ow = hp - 2, wp - 2
    m = _tile_size(oh, ow)
    g, scale = _FILTER_TRANSFORMS[m]
    return m, -(-oh // m), -(-ow // m), np.array(g, dtype), scale


cdef inline void _bt(Py_ssize_t alpha, const floating *s, Py_ssize_t ss, floating *d, Py_ssize_t ds,
                     Py_ssize_t n) noexcept nogil:
    """d[r] = sum_i B^T[r, i] s[i]: alpha vectors of n, s[i] at s + i*ss, d[r] at d + r*ds."""
    cdef Py_ssize_t c
    if alpha == 4:
        for c in range(n):
            d[c] = s[c] - s[2 * ss + c]
            d[ds + c] = s[ss + c] + s[2 * ss + c]
            d[2 * ds + c] = s[2 * ss + c] - s[ss + c]
            d[3 * ds + c] = s[ss + c] - s[3 * ss + c]
        return
    for c in range(n):
        d[c] = 4 * s[c] - 5 * s[2 * ss + c] + s[4 * ss + c]
        d[ds + c] = s[3 * ss + c] + s[4 * ss + c] - 4 * (s[ss + c] + s[2 * ss + c])
        d[2 * ds + c] = s[4 * ss + c] - s[3 * ss + c] + 4 * (s[ss + c] - s[2 * ss + c])
        d[3 * ds + c] = s[4 * ss + c] - s[2 * ss + c] + 2 * (s[3 * ss + c] - s[ss + c])
        d[4 * ds + c] = s[4 * ss + c] - s[2 * ss + c] + 2 * (s[ss + c] - s[3 * ss + c])
        d[5 * ds + c] = 4 * s[ss + c] - 5 * s[3 * ss + c] + s[5 * ss + c]


cdef inline void _b(Py_ssize_t alpha, const floating *s, Py_ssize_t ss, floating *d, Py_ssize_t ds,
                    Py_ssize_t n) noexcept nogil:
    """d[i] += sum_r B^T[r, i] s[r]: the adjoint of _bt."""
    cdef Py_ssize_t c
    if alpha == 4:
        for c in range(n):
            d[c] += s[c]
            d[ds + c] += s[ss + c] - s[2 * ss + c] + s[3 * ss + c]
            d[2 * ds + c] += s[ss + c] + s[2 * ss + c] - s[c]
            d[3 * ds + c] -= s[3 * ss + c]
        return
    for c in range(n):
        d[c] += 4 * s[c]
        d[ds + c] += 4 * (s[2 * ss + c] - s[ss + c] + s[5 * ss + c]) + 2 * (s[4 * ss + c] - s[3 * ss + c])
        d[2 * ds + c] -= 5 * s[c] + 4 * (s[ss + c] + s[2 * ss + c]) + s[3 * ss + c] + s[4 * ss + c]
        d[3 * ds + c] += s[ss + c] - s[2 * ss + c] + 2 * (s[3 * ss + c] - s[4 * ss + c]) - 5 * s[5 * ss + c]
        d[4 * ds + c] += s[c] + s[ss + c] + s[2 * ss + c] + s[3 * ss + c] + s[4 * ss + c]
        d[5 * ds + c] += s[5 * ss + c]


cdef inline void _at(Py_ssize_t alpha, const floating *s, Py_ssize_t ss, floating *d, Py_ssize_t ds,
                     Py_ssize_t n) noexcept nogil:
    """d[i] = sum_r A^T[i, r] s[r]: alpha vectors to m = alpha - 2."""
    cdef Py_ssize_t c
    if alpha == 4:
        for c in range(n):
            d[c] = s[c] + s[ss + c] + s[2 * ss + c]
            d[ds + c] = s[ss + c] - s[2 * ss + c] - s[3 * ss + c]
        return
    for c in range(n):
        d[c] = s[c] + s[ss + c] + s[2 * ss + c] + s[3 * ss + c] + s[4 * ss + c]
        d[ds + c] = s[ss + c] - s[2 * ss + c] + 2 * (s[3 * ss + c] - s[4 * ss + c])
        d[2 * ds + c] = s[ss + c] + s[2 * ss + c] + 4 * (s[3 * ss + c] + s[4 * ss + c])
        d[3 * ds + c] = s[ss + c] - s[2 * ss + c] + 8 * (s[3 * ss + c] - s[4 * ss + c]) + s[5 * ss + c]


cdef inline void _a(Py_ssize_t alpha, const floating *s, Py_ssize_t ss, floating *d, Py_ssize_t ds,
                    Py_ssize_t n) noexcept nogil:
    """d[r] = sum_i A^T[i, r] s[i]: the adjoint of _at, m vectors to alpha."""
    cdef Py_ssize_t c
    if alpha == 4:
        for c in range(n):
            d[c] = s[c]
            d[ds + c] = s[c] + s[ss + c]
            d[2 * ds + c] = s[c] - s[ss + c]
            d[3 * ds + c] = -s[ss + c]
        return
    for c in range(n):
        d[c] = s[c]
        d[ds + c] = s[c] + s[ss + c] + s[2 * ss + c] + s[3 * ss + c]
        d[2 * ds + c] = s[c] - s[ss + c] + s[2 * ss + c] - s[3 * ss + c]
        d[3 * ds + c] = s[c] + 2 * s[ss + c] + 4 * s[2 * ss + c] + 8 * s[3 * ss + c]
        d[4 * ds + c] = s[c] - 2 * s[ss + c] + 4 * s[2 * ss + c] - 8 * s[3 * ss + c]
        d[5 * ds + c] = s[3 * ss + c]


cdef inline void _divide(floating *d, Py_ssize_t n, floating scale) noexcept nogil:
    """d[:n] /= scale (divided, not multiplied by 1/scale: exact whenever
    the quotient is representable)."""
    cdef Py_ssize_t c
    cdef floating divisor = scale  # a local: scale may live in memory d could alias, which kept the loop scalar
    for c in range(n):
        d[c] /= divisor


cdef void _filter_transform(const floating[:, :, :, ::1] wt, const floating[:, ::1] g, floating[:, :, ::1] u,
                            floating[:, :, ::1] gw, Py_ssize_t first, Py_ssize_t end) noexcept nogil:
    """u (alpha^2, C, F): u[alpha*a + b, c] = (G' w[:, c] G'^T)[a, b], vectors
    over the F filters of wt (C, 3, 3, F), the filters with the filter axis
    last, for the channels c from first to end (each thread its share);
    gw (alpha, 3, F) is scratch for G' w. Given wc (F, 3, 3, C), the
    channels last, it makes (alpha^2, F, C) the same way, vectors over C."""
    cdef Py_ssize_t n_filt = wt.shape[3], alpha = g.shape[0], c, a, b, k, l, f
    cdef floating coef
    for c in range(first, end):
        memset(&gw[0, 0, 0], 0, alpha * 3 * n_filt * sizeof(floating))
        for a in range(alpha):
            for k in range(3):
                coef = g[a, k]
                if coef != 0:
                    for l in range(3):
                        for f in range(n_filt):
                            gw[a, l, f] += coef * wt[c, k, l, f]
        for a in range(alpha):
            for b in range(alpha):
                memset(&u[alpha * a + b, c, 0], 0, n_filt * sizeof(floating))
                for l in range(3):
                    coef = g[b, l]
                    if coef != 0:
                        for f in range(n_filt):
                            u[alpha * a + b, c, f] += coef * gw[a, l, f]


cdef void _filter_gradient(floating[:, :, :, ::1] du_parts, Py_ssize_t c, const floating[:, ::1] g,
                           floating scale, floating[:, :, :, ::1] dwt, floating[:, :, ::1] gd,
                           floating[:, :, :, ::1] dw) noexcept nogil:
    """dwt[c] (3, 3, F) = G'^T dU G' / scale, dU (alpha, alpha) the vectors
    du[:, c] over the F filters, du (alpha^2, C, F) the sum of the threads'
    parts du_parts (T, alpha^2, C, F), summed into du_parts[0] here: the
    adjoint of _filter_transform, for one channel c; then dw[:, c] (F, 3,
    3) += dwt[c]. gd (alpha, 3, F) is scratch for dU G'."""
    cdef Py_ssize_t n_filt = du_parts.shape[3], alpha = g.shape[0], t, a, b, k, l, f
    cdef floating coef
    for t in range(1, du_parts.shape[0]):
        for a in range(alpha * alpha):
            for f in range(n_filt):
                du_parts[0, a, c, f] += du_parts[t, a, c, f]
    memset(&gd[0, 0, 0], 0, alpha * 3 * n_filt * sizeof(floating))
    for a in range(alpha):
        for b in range(alpha):
            for l in range(3):
                coef = g[b, l]
                if coef != 0:
                    for f in range(n_filt):
                        gd[a, l, f] += coef * du_parts[0, alpha * a + b, c, f]
    memset(&dwt[c, 0, 0, 0], 0, 9 * n_filt * sizeof(floating))
    for k in range(3):
        for a in range(alpha):
            coef = g[a, k]
            if coef != 0:
                for l in range(3):
                    for f in range(n_filt):
                        dwt[c, k, l, f] += coef * gd[a, l, f]
    _divide(&dwt[c, 0, 0, 0], 9 * n_filt, scale)
    for k in range(3):
        for l in range(3):
            for f in range(n_filt):
                dw[f, c, k, l] += dwt[c, k, l, f]


cdef Py_ssize_t CHANNEL_BLOCK = 16


cdef inline void _change_layout(floating *image, Py_ssize_t n_chan, Py_ssize_t height, Py_ssize_t width,
                                floating *hwc, Py_ssize_t hwc_width, Py_ssize_t top, Py_ssize_t left, bint to_hwc,
                                const floating *bias) noexcept nogil:
    """conv_tile.h's fc_change_layout for this dtype: an image (C, H, W) to
    its channels-last copy hwc (H', W', C) from row top and column left on,
    or back (to_hwc false, plus bias[c] unless it is NULL)."""
    if floating is float:
        fc_change_layout_float(image, n_chan, height, width, hwc, hwc_width, top, left, to_hwc, bias)
    else:
        fc_change_layout_double(image, n_chan, height, width, hwc, hwc_width, top, left, to_hwc, bias)


cdef void _channels_last(const floating[:, :, ::1] image, Py_ssize_t ph, Py_ssize_t pw,
                         floating[:, :, ::1] hwc) noexcept nogil:
    """hwc (H', W', C) = image (C, H, W) with the channels innermost, from
    row ph and column pw on, zeros around it (the conv's padding, and past
    where a last tile's patch reaches). In blocks of channels by pixels
    transposed in registers (conv_tile.h, fc_change_layout; the Numba twin
    a row at a time in blocks of CHANNEL_BLOCK channels, one value at a
    time)."""
    memset(&hwc[0, 0, 0], 0, hwc.shape[0] * hwc.shape[1] * hwc.shape[2] * sizeof(floating))
    _change_layout(<floating *>&image[0, 0, 0], image.shape[0], image.shape[1], image.shape[2], &hwc[0, 0, 0],
                   hwc.shape[1], ph, pw, True, NULL)


cdef void _interior_channels_first(const floating[:, :, ::1] hwc, Py_ssize_t ph, Py_ssize_t pw,
                                  floating[:, :, ::1] image) noexcept nogil:
    """image (C, H, W) = hwc (H', W', C) from row ph and column pw on (the
    part inside the padding), as _channels_last, the other way round."""
    _change_layout(&image[0, 0, 0], image.shape[0], image.shape[1], image.shape[2], <floating *>&hwc[0, 0, 0],
                   hwc.shape[1], ph, pw, False, NULL)


cdef void _input_transform(const floating[:, :, ::1] hwc, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                           floating[:, :, ::1] v, Py_ssize_t first, floating[:, :, ::1] bd) noexcept nogil:
    """v[alpha*a + b, first + ty*TW + tx] = (B^T d B)[a, b] of each patch
    d = hwc[m*ty : m*ty + alpha, m*tx : m*tx + alpha], vectors over the C
    channels (alpha = bd.shape[0], m = alpha - 2); bd (alpha, W', C) is
    scratch for B^T times a row of patches, made for the whole row at once
    (one long vector loop, and the columns two patches share made once)."""
    cdef Py_ssize_t n_chan = hwc.shape[2], alpha = bd.shape[0], m = alpha - 2, ty, tx, p, a
    cdef Py_ssize_t row = hwc.shape[1] * n_chan, v_step = v.shape[1] * n_chan
    for ty in range(tiles_h):
        _bt(alpha, &hwc[m * ty, 0, 0], row, &bd[0, 0, 0], row, row)
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _bt(alpha, &bd[a, m * tx, 0], n_chan, &v[alpha * a, p, 0], v_step, n_chan)


cdef void _patch_gradient(const floating[:, :, ::1] dv, Py_ssize_t first, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                          floating scale, floating[:, :, ::1] hwc, floating[:, :, ::1] bdv) noexcept nogil:
    """hwc = the sum over tiles of B dV B^T placed at its patch, divided by
    scale, dV (alpha, alpha) the vectors dv[:, first + ty*TW + tx] over the
    C channels: the adjoint of _input_transform. bdv (alpha, W', C) is
    scratch for a row of patches' dV B^T, summed where they overlap, then
    multiplied by B for the whole row at once."""
    cdef Py_ssize_t n_chan = hwc.shape[2], alpha = bdv.shape[0], m = alpha - 2, ty, tx, p, a
    cdef Py_ssize_t row = hwc.shape[1] * n_chan, v_step = dv.shape[1] * n_chan
    memset(&hwc[0, 0, 0], 0, hwc.shape[0] * row * sizeof(floating))
    for ty in range(tiles_h):
        memset(&bdv[0, 0, 0], 0, alpha * row * sizeof(floating))
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _b(alpha, &dv[alpha * a, p, 0], v_step, &bdv[a, m * tx, 0], n_chan, n_chan)
        _b(alpha, &bdv[0, 0, 0], row, &hwc[m * ty, 0, 0], row, row)
    _divide(&hwc[0, 0, 0], hwc.shape[0] * row, scale)


cdef void _output_transform(const floating[:, :, ::1] m_e, Py_ssize_t first, Py_ssize_t tiles_h,
                            Py_ssize_t tiles_w, floating scale, floating[:, :, ::1] hwf,
                            floating[:, :, ::1] am) noexcept nogil:
    """hwf[m*ty + i, m*tx + j] = (A^T M A)[i, j] / scale of each tile's M
    (alpha, alpha), the vectors m_e[:, first + ty*TW + tx] over the F
    filters; am (m, alpha, F) is scratch for A^T M."""
    cdef Py_ssize_t n_filt = m_e.shape[2], m = am.shape[0], alpha = am.shape[1], ty, tx, p, i, b
    cdef Py_ssize_t m_step = m_e.shape[1] * n_filt
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for b in range(alpha):
                _at(alpha, &m_e[b, p, 0], alpha * m_step, &am[0, b, 0], alpha * n_filt, n_filt)
            for i in range(m):
                _at(alpha, &am[i, 0, 0], n_filt, &hwf[m * ty + i, m * tx, 0], n_filt, n_filt)
                _divide(&hwf[m * ty + i, m * tx, 0], m * n_filt, scale)


cdef void _gradient_transform(const floating[:, :, ::1] hwf, Py_ssize_t tiles_h, Py_ssize_t tiles_w,
                              floating[:, :, ::1] z, Py_ssize_t first, floating[:, :, ::1] ag) noexcept nogil:
    """z[alpha*a + b, first + ty*TW + tx] = (A dY A^T)[a, b] of each tile's
    output gradient dY = hwf[m*ty : m*ty + m, m*tx : m*tx + m], vectors
    over the F filters: the adjoint of _output_transform. ag (alpha, W, F)
    is scratch for A times a row of tiles, made for the whole row at once."""
    cdef Py_ssize_t n_filt = hwf.shape[2], alpha = ag.shape[0], m = alpha - 2, ty, tx, p, a
    cdef Py_ssize_t row = hwf.shape[1] * n_filt, z_step = z.shape[1] * n_filt
    for ty in range(tiles_h):
        _a(alpha, &hwf[m * ty, 0, 0], row, &ag[0, 0, 0], row, row)
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _a(alpha, &ag[a, m * tx, 0], n_filt, &z[alpha * a, p, 0], z_step, n_filt)


cdef void _channels_first(const floating[:, :, ::1] hwf, Py_ssize_t oh, Py_ssize_t ow, const floating[::1] b,
                          floating *rows) noexcept nogil:
    """rows (F, OH*OW), C-contiguous from rows, = the OH x OW part of hwf
    (H', W', F) with the filters first, plus b[f]; as _channels_last, the
    other way round."""
    _change_layout(rows, hwf.shape[2], oh, ow, <floating *>&hwf[0, 0, 0], hwf.shape[1], 0, 0, False, &b[0])


cdef void _relu_maxpool_filters_last(const floating[:, :, ::1] hwf, const floating[::1] b, Py_ssize_t psh,
                                     Py_ssize_t psw, floating[:, ::1] pooled, unsigned char[:, ::1] pooled_code,
                                     floating[:, :, ::1] out, unsigned char[:, :, ::1] code) noexcept nogil:
    """_relu_maxpool_image for a 2x2 window, read straight from hwf (H', W',
    F) plus b[f]: each window's four vectors over the F filters give the
    pooled values and codes in pooled and pooled_code (PH*PW, F), which go
    to out and code (F, PH, PW): the values as in _channels_first, the codes
    in blocks of CHANNEL_BLOCK filters, one at a time. Pooled from the
    filters-first conv output instead, a window's loop ran over the PW
    pooled columns, too few to vectorize."""
    cdef Py_ssize_t n_filt = hwf.shape[2], n_pw = out.shape[2], n_pool = out.shape[1] * n_pw, py, px, p, f, block
    cdef const floating *top
    cdef const floating *bottom
    for py in range(out.shape[1]):
        for px in range(n_pw):
            p = py * n_pw + px
            top = &hwf[py * psh, px * psw, 0]
            bottom = &hwf[py * psh + 1, px * psw, 0]
            for f in range(n_filt):
                pooled[p, f] = _relu_max4(top[f] + b[f], top[n_filt + f] + b[f], bottom[f] + b[f],
                                          bottom[n_filt + f] + b[f], &pooled_code[p, f])
    _change_layout(&out[0, 0, 0], n_filt, out.shape[1], n_pw, &pooled[0, 0], n_pw, 0, 0, False, NULL)
    for block in range((n_filt + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
        for p in range(n_pool):
            for f in range(block * CHANNEL_BLOCK, min((block + 1) * CHANNEL_BLOCK, n_filt)):
                code[f, p // n_pw, p % n_pw] = pooled_code[p, f]


# Every image is copied into a channels-last scratch with zeros around it
# anyway, so the Winograd kernels take the padding themselves: called with
# padding=(ph, pw), xp is the unpadded x (N, C, H, W) and dxp the unpadded
# dx, and fastconv.ops makes no padded copy of x, no zero-filled dxp and no
# crop of it: in cnn-deep's training step at batch 64 (Intel Xeon, 2
# threads) those copies were 0.7 ms of the 1.5 ms ops spent around these
# kernels. With the default (0, 0), xp is padded by the caller as for
# every other kernel (the inference plan's buffers).


def _conv2d_winograd(xp, w, b, Py_ssize_t sh, Py_ssize_t sw, out, Py_ssize_t n_chunks, Py_ssize_t cache_bytes,
                     padding=(0, 0)):
    _winograd_forward(xp, w, b, sh, sw, 1, 1, 1, 1, out, None, n_chunks, cache_bytes, padding)


def _conv2d_backward_winograd(dy, xp, w, Py_ssize_t sh, Py_ssize_t sw, dxp, dw, Py_ssize_t n_chunks,
                              Py_ssize_t cache_bytes, padding=(0, 0)):
    _winograd_backward(dy, None, xp, w, sh, sw, 1, 1, 1, 1, dxp, dw, None, n_chunks, cache_bytes, padding)


def _winograd_forward(xp, w, b, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh,
                      Py_ssize_t psw, out, code, Py_ssize_t n_chunks, Py_ssize_t cache_bytes, padding=(0, 0)):
    """The forward pass of the fused op: out and code pooled from the conv
    output; with code None, of the conv: out is the conv output itself."""
    n_filt, n_chan = w.shape[0], w.shape[1]
    ph, pw = padding
    m, tiles_h, tiles_w, g, scale = _tiling(xp.shape[2] + 2 * ph, xp.shape[3] + 2 * pw, out.dtype)
    n_e = (m + 2) ** 2
    group = _images_per_gemm(n_e * (n_chan + n_filt) * tiles_h * tiles_w * out.itemsize, xp.shape[0], n_chunks,
                             cache_bytes)
    u = np.empty((n_e, n_chan, n_filt), out.dtype)
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    _winograd_forward_groups(xp, ph, pw, wt, g, u, b, scale, pkh, pkw, psh, psw, out, code, n_chunks, group, m,
                             tiles_h, tiles_w)


def _winograd_forward_groups(const floating[:, :, :, ::1] xp, Py_ssize_t ph, Py_ssize_t pw,
                             const floating[:, :, :, ::1] wt, const floating[:, ::1] g, floating[:, :, ::1] u,
                             const floating[::1] b,
                             floating scale, Py_ssize_t pkh, Py_ssize_t pkw, Py_ssize_t psh, Py_ssize_t psw,
                             floating[:, :, :, ::1] out, unsigned char[:, :, :, ::1] code, Py_ssize_t n_chunks,
                             Py_ssize_t group, Py_ssize_t m, Py_ssize_t tiles_h, Py_ssize_t tiles_w):
    cdef Py_ssize_t n_img = xp.shape[0], n_e = u.shape[0], n_chan = u.shape[1], n_filt = u.shape[2]
    cdef Py_ssize_t alpha = m + 2, oh = xp.shape[2] + 2 * ph - 2, ow = xp.shape[3] + 2 * pw - 2
    cdef Py_ssize_t n_tiles = tiles_h * tiles_w
    cdef Py_ssize_t t, first, last, g_at, n, m_img, k, e
    cdef bint pooled = code is not None
    # 2x2 windows are pooled from hwf, filters innermost; other windows from
    # the conv output made filters-first in conv
    cdef bint filters_last = pooled and pkh == 2 and pkw == 2
    dtype = np.asarray(out).dtype
    cdef floating[:, :, :, ::1] v = np.empty((n_chunks, n_e, group * n_tiles, n_chan), dtype)
    cdef floating[:, :, :, ::1] m_e = np.empty((n_chunks, n_e, group * n_tiles, n_filt), dtype)
    cdef floating[:, :, :, ::1] hwc = np.empty((n_chunks, m * tiles_h + 2, m * tiles_w + 2, n_chan), dtype)
    cdef floating[:, :, :, ::1] hwf = np.empty((n_chunks, m * tiles_h, m * tiles_w, n_filt), dtype)
    cdef floating[:, :, ::1] conv = np.empty((n_chunks, n_filt, oh * ow if pooled and not filters_last else 0), dtype)
    cdef floating[::1] no_bias = np.zeros(n_filt, dtype)
    cdef floating[:, :, :, ::1] bd = np.empty((n_chunks, alpha, m * tiles_w + 2, n_chan), dtype)
    cdef floating[:, :, :, ::1] am = np.empty((n_chunks, m, alpha, n_filt), dtype)
    cdef floating[:, :, :, ::1] gw = np.empty((n_chunks, alpha, 3, n_filt), dtype)
    n_pool = out.shape[2] * out.shape[3] if filters_last else 0
    cdef floating[:, :, ::1] pool_values = np.empty((n_chunks, n_pool, n_filt), dtype)
    cdef unsigned char[:, :, ::1] pool_codes = np.empty((n_chunks, n_pool, n_filt), np.uint8)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            _filter_transform(wt, g, u, gw[t], t * n_chan // n_chunks, (t + 1) * n_chan // n_chunks)
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
            for g_at in range((last - first + group - 1) // group):
                n = first + g_at * group
                m_img = min(group, last - n)
                for k in range(m_img):
                    _channels_last(xp[n + k], ph, pw, hwc[t])
                    _input_transform(hwc[t], tiles_h, tiles_w, v[t], k * n_tiles, bd[t])
                for e in range(n_e):
                    # M[e] (m*tiles, F) = V[e] (m*tiles, C) @ U[e] (C, F)
                    _matmul(False, False, m_img * n_tiles, n_filt, n_chan, &v[t, e, 0, 0], n_chan,
                            &u[e, 0, 0], n_filt, 0, &m_e[t, e, 0, 0], n_filt)
                for k in range(m_img):
                    _output_transform(m_e[t], k * n_tiles, tiles_h, tiles_w, scale, hwf[t], am[t])
                    if pooled:  # the pooling adds the bias
                        if filters_last:
                            _relu_maxpool_filters_last(hwf[t], b, psh, psw, pool_values[t], pool_codes[t],
                                                       out[n + k], code[n + k])
                        else:
                            _channels_first(hwf[t], oh, ow, no_bias, &conv[t, 0, 0])
                            _relu_maxpool_image(conv[t], b, ow, pkh, pkw, psh, psw, out[n + k], code[n + k])
                        continue
                    _channels_first(hwf[t], oh, ow, b, &out[n + k, 0, 0, 0])


def _winograd_backward(dy, code, xp, w, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pkh, Py_ssize_t pkw,
                       Py_ssize_t psh, Py_ssize_t psw, dxp, dw, db, Py_ssize_t n_chunks, Py_ssize_t cache_bytes,
                       padding=(0, 0)):
    """The backward pass of the conv, and of the fused op: there dy is the
    pooled gradient, which code routes back to the conv output, and db is
    the fused op's; with code and db None, dy is the conv output's gradient
    itself. dxp is written whole (it may arrive uninitialised)."""
    if xp.shape[0] == 0:  # nothing to add; each thread's dU part is written by its first group
        return
    n_filt, n_chan = w.shape[0], w.shape[1]
    ph, pw = padding
    m, tiles_h, tiles_w, g, scale = _tiling(xp.shape[2] + 2 * ph, xp.shape[3] + 2 * pw, dw.dtype)
    n_e = (m + 2) ** 2
    group = _images_per_gemm(n_e * (2 * n_chan + n_filt) * tiles_h * tiles_w * dw.itemsize, xp.shape[0], n_chunks,
                             cache_bytes)
    # the transformed filters as dV's GEMM reads them, (alpha^2, F, C): each
    # U[e] transposed, so the GEMM multiplies plain rows (with U[e] (C, F)
    # read transposed it ran at half the speed for a thin Z[e])
    ut = np.empty((n_e, n_filt, n_chan), dw.dtype)
    wc = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    # each thread's first group writes its part of dU, the others add to it
    du = np.empty((n_chunks, n_e, n_chan, n_filt), dw.dtype)
    dwt = np.empty((n_chan, 3, 3, n_filt), dw.dtype)
    _winograd_backward_groups(dy, code, xp, ph, pw, wc, g, ut, scale, pkw, psh, psw, dxp, du, dwt, dw, db, n_chunks,
                              group, m, tiles_h, tiles_w)


def _winograd_backward_groups(const floating[:, :, :, ::1] dy, const unsigned char[:, :, :, ::1] code,
                              const floating[:, :, :, ::1] xp, Py_ssize_t ph, Py_ssize_t pw,
                              const floating[:, :, :, ::1] wc,
                              const floating[:, ::1] g, floating[:, :, ::1] ut, floating scale, Py_ssize_t pkw,
                              Py_ssize_t psh, Py_ssize_t psw, floating[:, :, :, ::1] dxp, floating[:, :, :, ::1] du,
                              floating[:, :, :, ::1] dwt, floating[:, :, :, ::1] dw, floating[::1] db,
                              Py_ssize_t n_chunks, Py_ssize_t group, Py_ssize_t m, Py_ssize_t tiles_h,
                              Py_ssize_t tiles_w):
    cdef Py_ssize_t n_img = xp.shape[0], n_e = ut.shape[0], n_filt = ut.shape[1], n_chan = ut.shape[2]
    cdef Py_ssize_t alpha = m + 2
    cdef Py_ssize_t n_tiles = tiles_h * tiles_w
    cdef Py_ssize_t t, first, last, g_at, n, m_img, k, e, c, f
    cdef bint compute_dx = dxp is not None, routed = code is not None
    dtype = np.asarray(du).dtype
    cdef floating[:, :, :, ::1] v = np.empty((n_chunks, n_e, group * n_tiles, n_chan), dtype)
    cdef floating[:, :, :, ::1] z = np.empty((n_chunks, n_e, group * n_tiles, n_filt), dtype)
    cdef floating[:, :, :, ::1] dv = np.empty((n_chunks, n_e, group * n_tiles, n_chan), dtype)
    cdef floating[:, :, :, ::1] hwc = np.empty((n_chunks, m * tiles_h + 2, m * tiles_w + 2, n_chan), dtype)
    cdef floating[:, :, :, ::1] hwf = np.empty((n_chunks, m * tiles_h, m * tiles_w, n_filt), dtype)
    cdef floating[:, ::1] db_parts = np.zeros((n_chunks, n_filt), dtype)
    cdef floating[:, :, :, ::1] bd = np.empty((n_chunks, alpha, m * tiles_w + 2, n_chan), dtype)
    cdef floating[:, :, :, ::1] ag = np.empty((n_chunks, alpha, m * tiles_w, n_filt), dtype)
    cdef floating[:, :, :, ::1] gw = np.empty((n_chunks, alpha, 3, n_chan), dtype)
    cdef floating[:, :, :, ::1] gd = np.empty((n_chunks, alpha, 3, n_filt), dtype)
    with nogil:
        if compute_dx:
            for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
                _filter_transform(wc, g, ut, gw[t], t * n_filt // n_chunks, (t + 1) * n_filt // n_chunks)
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
            for g_at in range((last - first + group - 1) // group):
                n = first + g_at * group
                m_img = min(group, last - n)
                for k in range(m_img):
                    _channels_last(xp[n + k], ph, pw, hwc[t])
                    _input_transform(hwc[t], tiles_h, tiles_w, v[t], k * n_tiles, bd[t])
                    if routed:
                        # routed straight to the filters-innermost layout
                        memset(&hwf[t, 0, 0, 0], 0, hwf.shape[1] * hwf.shape[2] * n_filt * sizeof(floating))
                        _unpool_strided(dy[n + k], code[n + k], hwf.shape[2], pkw, psh, psw, &hwf[t, 0, 0, 0], 1,
                                        n_filt, db_parts[t])
                    else:
                        _channels_last(dy[n + k], 0, 0, hwf[t])
                    _gradient_transform(hwf[t], tiles_h, tiles_w, z[t], k * n_tiles, ag[t])
                for e in range(n_e):
                    # dU[e] (C, F) += V[e]^T (C, m*tiles) @ Z[e] (m*tiles, F)
                    _matmul(True, False, n_chan, n_filt, m_img * n_tiles, &v[t, e, 0, 0], n_chan,
                            &z[t, e, 0, 0], n_filt, g_at > 0, &du[t, e, 0, 0], n_filt)
                    if compute_dx:
                        # dV[e] (m*tiles, C) = Z[e] (m*tiles, F) @ U[e]^T (F, C)
                        _matmul(False, False, m_img * n_tiles, n_chan, n_filt, &z[t, e, 0, 0], n_filt,
                                &ut[e, 0, 0], n_chan, 0, &dv[t, e, 0, 0], n_chan)
                if compute_dx:
                    for k in range(m_img):
                        _patch_gradient(dv[t], k * n_tiles, tiles_h, tiles_w, scale, hwc[t], bd[t])
                        _interior_channels_first(hwc[t], ph, pw, dxp[n + k])
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            for c in range(t * n_chan // n_chunks, (t + 1) * n_chan // n_chunks):
                _filter_gradient(du, c, g, scale, dwt, gd[t], dw)
    if db is not None:
        for t in range(n_chunks):
            for f in range(n_filt):
                db[f] += db_parts[t, f]


# ---------------------------------------------------------- dense products


cdef bint _c_contiguous(const floating[:, :] a) noexcept:
    """NumPy's C-contiguous flag of a matrix (a dimension of 1 may have any stride)."""
    return ((a.shape[1] == 1 or a.strides[1] == sizeof(floating))
            and (a.shape[0] == 1 or a.strides[0] == a.shape[1] * sizeof(floating)))


def product(const floating[:, :] a, const floating[:, :] b, floating[:, ::1] out, Py_ssize_t n_chunks):
    """out (M, N) = a (M, K) @ b (K, N), a and b each C- or F-contiguous
    (a transposed C array), for the dense layers: n_chunks threads each
    compute a part with a single-threaded BLAS call (the caller limits
    BLAS), so that each thread reads only its part of the larger operand:
    a block of rows of out when a is the larger one, of columns when b is,
    and where K is at least twice M and N (a layer's forward pass, whose
    weights b are the larger operand) a block of K, each thread's product
    of a's columns by b's rows in that block summed at the end. (A block of
    b's columns is a part of every row, which read slower than whole rows:
    cnn-deep's first dense layer, 64 x 6272 by 6272 x 128, took 0.75 ms a
    thread by columns against 0.57 by K, one thread's BLAS, NumPy.)"""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1], k = a.shape[1], t, first, last, i, j
    cdef bint by_depth = k >= 2 * max(m, n), by_rows = m > n
    cdef bint trans_a = not _c_contiguous(a), trans_b = not _c_contiguous(b)
    # the row length of the array as stored: a (M, K) itself, or the (K, M) one it transposes
    cdef int lda = max(1, a.shape[0] if trans_a else k), ldb = max(1, b.shape[0] if trans_b else n)
    # thread t > 0's product by K (thread 0 writes out)
    cdef floating[:, :, ::1] parts = np.empty((n_chunks - 1 if by_depth else 0, m, n), np.asarray(out).dtype)
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            if by_depth:
                first, last = t * k // n_chunks, (t + 1) * k // n_chunks
                _matmul(trans_a, trans_b, m, n, last - first, &a[0, first], lda, &b[first, 0], ldb, 0,
                        &out[0, 0] if t == 0 else &parts[t - 1, 0, 0], n)
            elif by_rows:
                first, last = t * m // n_chunks, (t + 1) * m // n_chunks
                if last > first:
                    _matmul(trans_a, trans_b, last - first, n, k, &a[first, 0], lda, &b[0, 0], ldb, 0,
                            &out[first, 0], n)
            else:
                first, last = t * n // n_chunks, (t + 1) * n // n_chunks
                if last > first:
                    _matmul(trans_a, trans_b, m, last - first, k, &a[0, 0], lda, &b[0, first], ldb, 0,
                            &out[0, first], n)
        for t in range(parts.shape[0]):
            for i in range(m):
                for j in range(n):
                    out[i, j] += parts[t, i, j]


def row_product(const floating[::1] a, const floating[:, ::1] b, floating[:, ::1] parts, floating[::1] out,
                Py_ssize_t n_chunks):
    """out (N,) = a (K,) @ b (K, N), b C-contiguous: a dense layer's product
    for one row (batch 1). n_chunks threads each sum a block of b's rows,
    weighted by a, into its row of parts (n_chunks, N) (conv_tile.h,
    fc_add_rows); out is then the rows' sum. A thread reads only its block
    of b, which stays in its core's cache from call to call."""
    cdef Py_ssize_t k = b.shape[0], n = b.shape[1], t, first, j
    cdef floating total
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            first = t * k // n_chunks
            if floating is float:
                fc_add_rows_float(&a[first], &b[first, 0], (t + 1) * k // n_chunks - first, n, &parts[t, 0])
            else:
                fc_add_rows_double(&a[first], &b[first, 0], (t + 1) * k // n_chunks - first, n, &parts[t, 0])
        for j in range(n):
            total = parts[0, j]
            for t in range(1, n_chunks):
                total = total + parts[t, j]
            out[j] = total


KERNELS = {
    ("conv2d", "naive"): conv2d_naive,
    ("conv2d_backward", "naive"): conv2d_backward_naive,
    ("conv2d", "vectorized"): conv2d_vectorized,
    ("conv2d_backward", "vectorized"): conv2d_backward_vectorized,
    ("conv2d", "gemm"): _conv2d_gemm,
    ("conv2d_backward", "gemm"): _conv2d_backward_gemm,
    ("conv2d", "winograd"): _conv2d_winograd,
    ("conv2d_backward", "winograd"): _conv2d_backward_winograd,
    ("conv2d_relu_maxpool2d", "naive"): conv2d_relu_maxpool2d_naive,
    ("conv2d_relu_maxpool2d_backward", "naive"): conv2d_relu_maxpool2d_backward_naive,
    ("conv2d_relu_maxpool2d", "vectorized"): conv2d_relu_maxpool2d_vectorized,
    ("conv2d_relu_maxpool2d_backward", "vectorized"): conv2d_relu_maxpool2d_backward_vectorized,
    ("conv2d_relu_maxpool2d", "gemm"): _forward_gemm,
    ("conv2d_relu_maxpool2d_backward", "gemm"): _backward_gemm,
    ("conv2d_relu_maxpool2d", "winograd"): _winograd_forward,
    ("conv2d_relu_maxpool2d_backward", "winograd"): _winograd_backward,
}
