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
At stride 1 the forward and backward passes (the conv and the fused op)
run instead a register-blocked micro-kernel over "wide rows" of output
positions, in plain loops: the algorithm and layout of the Cython twin's C
header ``conv_tile.h``, with accumulators in L1 rather than in registers
(slower; see ``_tiled_forward`` and ``_tiled_backward``).

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
import numba
import numpy as np
# Numba's np.dot calls SciPy's BLAS. Loaded here, with this module, it is
# in memory when fastconv.threads applies the thread counts (after a kernel
# module loads); loaded later, when the first gemm kernel compiles, no limit
# would reach it, and each of the kernel's threads would run a BLAS of
# every core.
import scipy.linalg.cython_blas  # noqa: F401
from numba import njit, prange

from . import NO_GRADIENT

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
# Small per-thread buffers are padded by PAD elements per row, so that no
# cache line holds the rows of two threads: such a line, written in the
# inner loops by both, made two threads slower than one.

PAD = 16  # elements: at least one 64-byte cache line

# The fused op's 2x2 pooling runs over whole blocks of POOL_RUN positions of
# a wide row, the ones past the last pooled pixel computed and dropped (their
# buffers are long enough, and zero past what the micro-kernel writes): the
# Cython twin's compiler vectorizes the loop in blocks of 32 and left the
# rest of a run to a scalar loop with branches, which took most of the
# pooling's time (conv2 of the MNIST CNN: 25 of a run of 57).
POOL_RUN = 64


@njit(cache=True)
def _whole_runs(n):
    """n rounded up to whole blocks of POOL_RUN."""
    return (n + POOL_RUN - 1) // POOL_RUN * POOL_RUN


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


SPLIT_MACS = 1 << 20
"""Multiply-adds per image (direct convolution) from which fewer images
than threads share their filters out between the threads (_work_split);
see the Cython twin for the measurements."""


def _work_split(xp, w):
    """(n_chunks, n_parts) for the micro-kernel's stride-1 forward passes of
    xp (N, C, Hp, Wp) by w (F, C, KH, KW): one chunk of the work per thread,
    the work being N * n_parts items, an item one image's filters in one of
    n_parts parts of whole tiles. With fewer images than threads (batch 1:
    the inference plan) and SPLIT_MACS of work per image, the filters are
    shared out so that every thread has work; otherwise an item is an image."""
    n_img, n_threads = xp.shape[0], numba.get_num_threads()
    n_tiles = (w.shape[0] + TILE_FILTERS - 1) // TILE_FILTERS
    n_parts = 1
    if n_img < n_threads and w.size * (xp.shape[2] - w.shape[2] + 1) * (xp.shape[3] - w.shape[3] + 1) >= SPLIT_MACS:
        n_parts = min(n_tiles, (n_threads + n_img - 1) // n_img)
    return min(n_threads, n_img * n_parts), n_parts


@njit(cache=True)
def _part_filters(part, n_parts, n_filt4):
    """(first, last): the filters of part ``part`` of n_parts, whole tiles
    of the F4 filters."""
    n_tiles = n_filt4 // TILE_FILTERS
    return part * n_tiles // n_parts * TILE_FILTERS, (part + 1) * n_tiles // n_parts * TILE_FILTERS


def conv2d_vectorized(xp, w, b, sh, sw, out):
    # Stride 1: the register-blocked micro-kernel, a chunk of the images (or
    # of one image's filters: _work_split) per thread.
    if sh == 1 and sw == 1:
        _tiled_forward(xp, w, b, *_filter_rows(w, b, _filters_in_blocks(w)), 0, 0, 0, 0, out, None,
                       *_work_split(xp, w))
    else:
        _strided_forward(xp, w, b, sh, sw, out)


@njit(parallel=True, cache=True)
def _strided_forward(xp, w, b, sh, sw, out):
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


# The stride-1 forward passes of ``vectorized`` (the conv and the fused op)
# run the algorithm of conv_tile.h, the Cython twin's micro-kernel, on one
# image at a time: the conv over "wide rows" (F, (OH - 1)*Wp + OW), every
# Wp-th run of OW positions being an output row, in a buffer of the thread
# that stays in cache; then the rows are copied out, or pooled with the
# ReLU. Other strides take the per-pixel loops.
#
# Here the tile is plain loops (TILE_FILTERS filters by TILE_POSITIONS
# positions, the loop over positions innermost for LLVM to vectorize): same
# algorithm and layout, but its accumulators live in memory (in L1), not
# in registers, and it reads no position past n_q (no copy of the last image).

TILE_FILTERS = 8  # the filters of a tile: conv_tile.h's AVX-512 tile, 8 filters
TILE_POSITIONS = 48  # by 3 vectors of 16 floats


def _filter_rows(w, b, n_filt4):
    """w (F, C, KH, KW) and b (F,) as conv_tile.h takes them: w_rows (F4,
    C*KH*KW), one filter a row, and b4 (F4,); filters F..F4 are zeros.
    NumPy, called before the jitted loops (compiled, such a helper added
    0.45 s to a first call's wait)."""
    n_filt, n_taps = w.shape[0], w.shape[1] * w.shape[2] * w.shape[3]
    w_rows = np.zeros((n_filt4, n_taps), w.dtype)
    w_rows[:n_filt] = w.reshape(n_filt, n_taps)
    b4 = np.zeros(n_filt4, w.dtype)
    b4[:n_filt] = b
    return w_rows, b4


def _filters_in_blocks(w):
    """F4: the F filters of w (F, C, KH, KW) rounded up to whole blocks."""
    return (w.shape[0] + TILE_FILTERS - 1) // TILE_FILTERS * TILE_FILTERS


@njit(cache=True)
def _conv_image_tiled(image, w_rows, b4, add_bias, tap_at, n_q, wide):
    """wide (F4, row) = the conv of one image (C*Hp*Wp,) at wide positions
    q < n_q of the filters w_rows (F4, T), plus b4 (F4,) if add_bias
    (conv_tile.h's algorithm)."""
    n_tile, n_taps = TILE_FILTERS, w_rows.shape[1]
    for block in range(w_rows.shape[0] // n_tile):
        for q0 in range(0, n_q, TILE_POSITIONS):
            span = min(TILE_POSITIONS, n_q - q0)
            for f in range(n_tile):
                for q in range(q0, q0 + span):
                    wide[block * n_tile + f, q] = b4[block * n_tile + f] if add_bias else 0
            for t in range(n_taps):
                window = image[tap_at[t] + q0:tap_at[t] + q0 + span]
                for f in range(n_tile):
                    weight = w_rows[block * n_tile + f, t]
                    acc = wide[block * n_tile + f, q0:q0 + span]
                    for q in range(span):
                        acc[q] += weight * window[q]


@njit(cache=True)
def _relu_maxpool_wide(wide, b, wp, pooled, codes, out, code):
    """out (F, PH, PW) and code = the ReLU-max-pool, 2x2 windows at stride 2,
    of one image's conv output in wide rows, wide (F, row) (bias b (F,) not
    yet added). Pooled pixel (py, px) is wide position j = py*Wp + px of
    pooled and codes (F, row): its window starts at 2j. One long run of j
    per filter, whole blocks of POOL_RUN (wide readable up to 2*run + Wp),
    the positions past PW of each row computed and never read, then the
    rows copied out: the loop vectorizes, where one of PW pixels a row (5
    for conv2 of the MNIST CNN) did not."""
    pw, n_run = out.shape[2], _whole_runs((out.shape[1] - 1) * wp + out.shape[2])
    for f in range(out.shape[0]):
        for j in range(n_run):
            pooled[f, j], codes[f, j] = _relu_max4(wide[f, 2 * j] + b[f], wide[f, 2 * j + 1] + b[f],
                                                   wide[f, 2 * j + wp] + b[f], wide[f, 2 * j + wp + 1] + b[f])
        for py in range(out.shape[1]):
            for px in range(pw):
                out[f, py, px] = pooled[f, py * wp + px]
                code[f, py, px] = codes[f, py * wp + px]


@njit(parallel=True, cache=True)
def _tiled_forward(xp, w, b, w_rows, b4, pkh, pkw, psh, psw, out, code, n_chunks, n_parts):
    """The stride-1 forward pass of the conv (code None: out is the conv
    output) or of the fused op (out and code pooled from it), the items
    (each image's filters in n_parts parts: _work_split) cut into n_chunks
    chunks, one per thread; w_rows and b4 are w and b as the tile takes
    them (_filter_rows, run by the caller)."""
    n_img, n_filt, kh, kw = xp.shape[0], w.shape[0], w.shape[2], w.shape[3]
    hp, wp, size = xp.shape[2], xp.shape[3], xp.shape[1] * xp.shape[2] * xp.shape[3]
    oh, ow = hp - kh + 1, wp - kw + 1
    n_q = (oh - 1) * wp + ow
    if code is not None:  # only the conv outputs a pool window covers (cnn's conv2: 10 of 11 rows, 8 vectors not 9)
        n_q = ((out.shape[2] - 1) * psh + pkh - 1) * wp + (out.shape[3] - 1) * psw + pkw
    n_filt4 = w_rows.shape[0]
    tap_at = _tap_offsets(xp.shape[1], kh, kw, hp, wp)
    images = xp.reshape(n_img, size)
    row = n_q + PAD
    # the usual pool (2x2 windows at stride 2) runs in wide rows too, into
    # these, over whole blocks (_relu_maxpool_wide)
    wide_pool = pkh == pkw == psh == psw == 2
    if code is not None and wide_pool:
        row = max(row, 2 * _whole_runs((out.shape[2] - 1) * wp + out.shape[3]) + wp + PAD)
    wide = np.empty((n_chunks, n_filt4, row), out.dtype)
    pooled_rows = np.empty((n_chunks if wide_pool else 0, n_filt, row), out.dtype)
    codes = np.empty((n_chunks if wide_pool else 0, n_filt, row), np.uint8)
    n_items = n_img * n_parts
    for t in prange(n_chunks):
        wide[t, :, n_q:] = 0  # what the micro-kernel does not write, the pool may read
        for item in range(t * n_items // n_chunks, (t + 1) * n_items // n_chunks):
            n = item // n_parts
            first, last = _part_filters(item % n_parts, n_parts, n_filt4)
            end = min(last, n_filt)
            _conv_image_tiled(images[n], w_rows[first:last], b4[first:last], code is None, tap_at, n_q,
                              wide[t, first:last])
            if code is not None and wide_pool:
                _relu_maxpool_wide(wide[t, first:end], b[first:end], wp, pooled_rows[t], codes[t],
                                   out[n, first:end], code[n, first:end])
            elif code is not None:
                _relu_maxpool_image(wide[t, first:end], b[first:end], wp, pkh, pkw, psh, psw,
                                    out[n, first:end], code[n, first:end])
            if code is not None:
                continue
            for f in range(first, end):
                for y in range(oh):
                    for x in range(ow):
                        out[n, f, y, x] = wide[t, f, y * wp + x]


# The fused op's usual case, 2x2 pool windows at stride 2, pools without
# strided or short loops: the conv output is computed as its four phases
# (the rows of parity di and columns of parity dj, di*2 + dj being the
# position in the pool window), each a stride-1 conv over the image split
# into phase planes (C, 2, 2, H2, W2), H2 = ceil(Hp / 2), W2 = ceil(Wp / 2),
# with its own tap offsets. A pool window's four values then sit at one
# wide position q = py*W2 + px of the four phases' buffers, and the ReLU-max
# is elementwise over long contiguous runs.


FEW_TAPS = 32  # taps (C*KH*KW) up to which the fused op pools by output phases


@njit(cache=True)
def _phase_offsets(n_chan, kh, kw, h2, w2):
    """(4, C*KH*KW): for output phase di*2 + dj, the offset of tap (c, i, j)
    from pooled position (0, 0) in the phase planes (C, 2, 2, H2, W2)."""
    tap_at = np.empty((4, n_chan * kh * kw), np.intp)
    for di in range(2):
        for dj in range(2):
            for c in range(n_chan):
                for i in range(kh):
                    for j in range(kw):
                        tap_at[di * 2 + dj, (c * kh + i) * kw + j] = (
                            (((c * 2 + (di + i) % 2) * 2 + (dj + j) % 2) * h2 + (di + i) // 2) * w2 + (dj + j) // 2)
    return tap_at


@njit(cache=True)
def _split_phases(image, planes):
    """planes (C, 2, 2, H2, W2)[c, y % 2, x % 2, y // 2, x // 2] = image
    (C, Hp, Wp)[c, y, x]; the entries past an odd Hp or Wp are left as they
    are (only positions that are never pooled read them)."""
    for c in range(image.shape[0]):
        for y in range(image.shape[1]):
            for cp in range(2):
                for d in range((image.shape[2] - cp + 1) // 2):
                    planes[c, y % 2, cp, y // 2, d] = image[c, y, 2 * d + cp]


@njit(cache=True)
def _relu_maxpool_phases(phases, b, n_q, w2, codes, out, code):
    """out (F, PH, PW) and code = the ReLU-max-pool of the four phases
    (4, F4, row) of one image's conv output (bias b (F,) not yet added),
    pooled pixel (py, px) at wide position py*W2 + px. The pooled values go
    over phase 0 and the codes into codes (F4, row) first, one long run per
    filter in whole blocks of POOL_RUN, then row by row into out and code."""
    for f in range(out.shape[0]):
        for q in range(_whole_runs(n_q)):
            phases[0, f, q], codes[f, q] = _relu_max4(phases[0, f, q] + b[f], phases[1, f, q] + b[f],
                                                      phases[2, f, q] + b[f], phases[3, f, q] + b[f])
        for py in range(out.shape[1]):
            for px in range(out.shape[2]):
                out[f, py, px] = phases[0, f, py * w2 + px]
                code[f, py, px] = codes[f, py * w2 + px]


@njit(parallel=True, cache=True)
def _phase_pooled_forward(xp, w, b, w_rows, out, code, n_chunks, n_parts):
    """The stride-1 fused op with 2x2 pool windows at stride 2, by output
    phases, the items (each image's filters in n_parts parts: _work_split)
    cut into n_chunks chunks, one per thread; w_rows is w as the tile takes
    it (_filter_rows, run by the caller)."""
    n_img, n_chan, n_filt, kh, kw = xp.shape[0], xp.shape[1], w.shape[0], w.shape[2], w.shape[3]
    h2, w2 = (xp.shape[2] + 1) // 2, (xp.shape[3] + 1) // 2
    ph, pw = out.shape[2], out.shape[3]
    n_q = (ph - 1) * w2 + pw
    n_filt4 = w_rows.shape[0]
    b4 = np.zeros(n_filt4, out.dtype)  # not added here: the pooling adds b
    tap_at = _phase_offsets(n_chan, kh, kw, h2, w2)
    # Per thread: the phase planes of an image (zeros: the entries no pooled
    # position reads are numbers too); the four phases of its conv output;
    # the codes of its pooled pixels.
    planes = np.zeros((n_chunks, n_chan, 2, 2, h2, w2), out.dtype)
    phases = np.empty((n_chunks, 4, n_filt4, _whole_runs(n_q) + PAD), out.dtype)
    codes = np.empty((n_chunks, n_filt4, _whole_runs(n_q) + PAD), np.uint8)
    n_items = n_img * n_parts
    for t in prange(n_chunks):
        phases[t, :, :, n_q:] = 0  # what the micro-kernel does not write, the pool reads
        for item in range(t * n_items // n_chunks, (t + 1) * n_items // n_chunks):
            n = item // n_parts
            first, last = _part_filters(item % n_parts, n_parts, n_filt4)
            end = min(last, n_filt)
            _split_phases(xp[n], planes[t])
            for phase in range(4):
                _conv_image_tiled(planes[t].reshape(-1), w_rows[first:last], b4[first:last], False, tap_at[phase],
                                  n_q, phases[t, phase, first:last])
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
TILE_TAPS = 3  # the taps of a filter-gradient tile (conv_tile.h's AVX-512 tile: 8 filters x 3 taps)
LANES = 16  # the positions of one vector of 16 floats


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


@njit(cache=True)
def _gradient_tap_offsets(n_filt, kh, kw, wp, plane):
    """Offset of tap (f, i, j), numbered (f*KH + i)*KW + j, of the full
    convolution that gives dx, from a position in the gradient planes."""
    tap_at = np.empty(n_filt * kh * kw, np.intp)
    for f in range(n_filt):
        for i in range(kh):
            for j in range(kw):
                tap_at[(f * kh + i) * kw + j] = f * plane + (kh - 1 - i) * wp + kw - 1 - j
    return tap_at


def _input_filter_rows(w, n_chan4):
    """w (F, C, KH, KW) as the dx convolution's filters for conv_tile.h:
    (C4, F*KH*KW), w[f, c, i, j] at [c, (f*KH + i)*KW + j]; channels C..C4
    are zeros."""
    n_filt, n_chan, kh, kw = w.shape
    rows = np.zeros((n_chan4, n_filt, kh, kw), w.dtype)
    rows[:n_chan] = w.transpose(1, 0, 2, 3)
    return rows.reshape(n_chan4, n_filt * kh * kw)


# Reassociation (and fused multiply-adds) for this function alone: LLVM
# then vectorizes each accumulator's sum into lanes of partial sums, the
# C tile's own order of addition; without it the sums stay scalar (8x
# slower). NaN and infinity keep their meaning (no nnan or ninf).
@njit(cache=True, fastmath={"reassoc", "contract"})
def _gradient_tiled(image, image_step, dy, dy_step, plane, n_images, tap_at, n_q, dw4):
    """dw4 (F4 / B, T, B) += the filter gradient of n_images images, image k
    at k*image_step of the flat image, its output gradient in wide rows at
    k*dy_step of the flat dy (filter f's at f*plane), zero at every
    position q >= n_q rounded up to whole vectors and wherever x >= OW
    (conv_tile.h's tiles of TILE_TAPS taps by B filters, each accumulator
    summed over whole vectors of LANES positions)."""
    n_blocks, n_taps, n_tile = dw4.shape
    n_v = (n_q + LANES - 1) // LANES * LANES
    for block in range(n_blocks):
        for t0 in range(0, n_taps, TILE_TAPS):
            for k in range(n_images):
                for t in range(t0, min(t0 + TILE_TAPS, n_taps)):
                    at = k * image_step + tap_at[t]
                    window = image[at:at + n_v]
                    for f in range(n_tile):
                        g = k * dy_step + (block * n_tile + f) * plane
                        grad = dy[g:g + n_v]
                        total = dw4.dtype.type(0)
                        for q in range(n_v):
                            total += window[q] * grad[q]
                        dw4[block, t, f] += total


@njit(parallel=True, cache=True)
def _tiled_backward(dy, code, xp, w, w_dx, pkw, psh, psw, dxp, dw, db, n_chunks, planes, group_images):
    """The stride-1 backward pass of the conv (code and db None: dy is the
    conv output's gradient) or of the fused op (code routes the pooled dy
    to the conv output; db += the routed gradient per filter), the batch
    cut into n_chunks chunks, one per thread, each with its own dw, in
    groups of images; w_dx is w as the dx convolution's filters
    (_input_filter_rows), planes (n_chunks, group, F4, plane) the
    threads' gradient planes and group_images (n_chunks, group, step) their
    copies of the group's images, made by the caller, each thread's zeroed
    by that thread (zeroed by one, they were read from its core's cache by
    the other: cnn-deep's conv1 block, 1 MB)."""
    n_img, n_chan, hp, wp = xp.shape
    n_filt, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    size = n_chan * hp * wp
    oh, ow = hp - kh + 1, wp - kw + 1
    n_q = (oh - 1) * wp + ow
    n_filt4 = (n_filt + TILE_FILTERS - 1) // TILE_FILTERS * TILE_FILTERS
    n_chan4 = w_dx.shape[0]
    base = (kh - 1) * wp + kw - 1
    group, plane, image_step = planes.shape[1], planes.shape[3], group_images.shape[2]
    tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    tap_at_dx = _gradient_tap_offsets(n_filt, kh, kw, wp, plane)
    no_bias = np.zeros(n_chan4, dw.dtype)
    images = xp.reshape(n_img * size)
    dx_wide = np.empty((n_chunks if dxp is not None else 0, n_chan4, hp * wp + PAD), dw.dtype)
    dw4_parts = np.empty((n_chunks, n_filt4 // TILE_FILTERS, tap_at.shape[0], TILE_FILTERS), dw.dtype)
    db_parts = np.empty((n_chunks, n_filt + PAD), dw.dtype)
    for t in prange(n_chunks):
        group_images[t] = 0
        planes[t] = 0
        dw4_parts[t] = 0
        db_parts[t] = 0
        first, end = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
        for g in range((end - first + group - 1) // group):
            n = first + g * group
            m = min(group, end - n)
            for k in range(m):
                for j in range(size):
                    group_images[t, k, j] = images[(n + k) * size + j]
                if code is not None:
                    _unpool_image(dy[n + k], code[n + k], wp, pkw, psh, psw, planes[t, k, :n_filt, base:base + n_q],
                                  db_parts[t])
                else:
                    for f in range(n_filt):
                        for y in range(oh):
                            for x in range(ow):
                                planes[t, k, f, base + y * wp + x] = dy[n + k, f, y, x]
                if dxp is not None:
                    _conv_image_tiled(planes[t, k].reshape(-1), w_dx, no_bias, False, tap_at_dx, hp * wp, dx_wide[t])
                    for c in range(n_chan):
                        for y in range(hp):
                            for x in range(wp):
                                dxp[n + k, c, y, x] = dx_wide[t, c, y * wp + x]
            _gradient_tiled(group_images[t].reshape(-1), image_step, planes[t].reshape(-1)[base:], n_filt4 * plane,
                            plane, m, tap_at, n_q, dw4_parts[t])
            if code is not None:  # the planes zeros again for the next group
                for k in range(m):
                    _clear_unpooled(code[n + k], wp, pkw, psh, psw, planes[t, k, :n_filt, base:base + n_q])
    _add_blocked_parts(dw4_parts, dw)
    if db is not None:
        for t in range(n_chunks):
            for f in range(n_filt):
                db[f] += db_parts[t, f]


@njit(cache=True)
def _add_blocked_parts(dw4_parts, dw):
    """dw (F, C, KH, KW) += the sum of the per-chunk parts (chunks, F4 / B,
    C*KH*KW, B) of the tiled backward, filter f at [f // B, :, f % B]."""
    dw_ft = dw.reshape(dw.shape[0], -1)
    for t in range(dw4_parts.shape[0]):
        for f in range(dw_ft.shape[0]):
            for r in range(dw_ft.shape[1]):
                dw_ft[f, r] += dw4_parts[t, f // TILE_FILTERS, r, f % TILE_FILTERS]


def _tiled_backward_call(dy, code, xp, w, pkw, psh, psw, dxp, dw, db, n_chunks):
    """_tiled_backward with its filters blocked and its group of images
    chosen (NumPy and Python, before the jitted loops)."""
    hp, wp, kh, kw = xp.shape[2], xp.shape[3], w.shape[2], w.shape[3]
    n_filt4 = _filters_in_blocks(w)
    # room for whole-vector reads past the last gradient position (zeros),
    # whole cache lines, so that the filter gradient's reads are aligned
    line = CACHE_LINE // dw.itemsize
    plane = ((hp + kh - 1) * wp + kw + LANES + line - 1) // line * line
    # and each image of a group copied with zeros after it, for the filter
    # gradient's reads past its end: they are multiplied by a zero gradient,
    # and anything there but a number (the next image's inf, memory past the
    # batch) would make the product NaN
    image_step = (xp[0].size + LANES + line - 1) // line * line
    group = max(1, min(GROUP_BYTES // ((n_filt4 * plane + image_step) * dw.itemsize), -(-xp.shape[0] // n_chunks)))
    planes = _aligned_empty((n_chunks, group, n_filt4, plane), dw.dtype, (kh - 1) * wp + kw - 1)
    group_images = _aligned_empty((n_chunks, group, image_step), dw.dtype, 0)
    w_dx = _input_filter_rows(w, (w.shape[1] + TILE_FILTERS - 1) // TILE_FILTERS * TILE_FILTERS)
    _tiled_backward(dy, code, xp, w, w_dx, pkw, psh, psw, dxp, dw, db, n_chunks, planes, group_images)


def conv2d_backward_vectorized(dy, xp, w, sh, sw, dxp, dw):
    # The batch is cut into one chunk per thread; each chunk sums its weight
    # gradient privately and the chunks are added once at the end (no races).
    # (The thread count is read here: a jitted function reading it cannot be
    # cached on disk.)
    # Stride 1: the register-blocked micro-kernel.
    n_chunks = min(numba.get_num_threads(), dy.shape[0])
    if sh == 1 and sw == 1:
        _tiled_backward_call(dy, None, xp, w, 0, 0, 0, dxp, dw, None, n_chunks)
    else:
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
    windows = np.empty((n_chunks, n_taps + PAD), dw.dtype)
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
# loop's, never loop threads times BLAS threads. np.dot on contiguous 2-D arrays is a BLAS GEMM (the
# same SciPy BLAS that Cython calls); it takes contiguous matrices only, so
# a group's buffer is a flat one shaped to the group's width, and it has no
# beta, so sums into dw go through a product buffer.


def _images_per_gemm(bytes_per_image, n_img, n_chunks, cache_bytes):
    """How many images a thread unfolds side by side for one GEMM: as many
    as fit in ``cache_bytes``, at least one, at most a chunk's share."""
    return max(1, min(cache_bytes // max(bytes_per_image, 1), -(-n_img // n_chunks)))


# The unfold and fold helpers take a group's whole buffer and the first
# column of the image at hand, not a slice of it, and copy through
# one-dimensional slices of a row: Numba cannot tell that a slice's rows
# are contiguous, nor that a computed index is not negative (it then emits
# the wraparound of a negative index), and in either case its loops ran
# scalar (the whole-row unfold at 0.45 ms, 0.22 ms this way).

@njit(cache=True)
def _unfold_image(image, kh, kw, sh, sw, cols, first):
    """cols[(c*KH + i)*KW + j, first + y*OW + x] = image (C, Hp, Wp)[c, y*sh + i, x*sw + j]."""
    oh, ow = (image.shape[1] - kh) // sh + 1, (image.shape[2] - kw) // sw + 1
    for c in range(image.shape[0]):
        for i in range(kh):
            r = (c * kh + i) * kw
            if kw == 3 and sw == 1:
                # 3x3, stride 1 (the common case): the three rows of taps
                # (c, i, 0..2) in one loop over one source row, since each
                # short copy loop costs about as much to start as to run
                for y in range(oh):
                    source = image[c, y * sh + i]
                    at = first + y * ow
                    target0, target1, target2 = cols[r, at:at + ow], cols[r + 1, at:at + ow], cols[r + 2, at:at + ow]
                    for x in range(ow):
                        target0[x] = source[x]
                        target1[x] = source[x + 1]
                        target2[x] = source[x + 2]
                continue
            for j in range(kw):
                for y in range(oh):
                    source = image[c, y * sh + i]
                    target = cols[r + j, first + y * ow:first + (y + 1) * ow]
                    for x in range(ow):
                        target[x] = source[x * sw + j]


@njit(cache=True)
def _fold_image(cols, first, kh, kw, sh, sw, image):
    """The adjoint of _unfold_image: adds each cols entry into the image
    (C, Hp, Wp) position it was read from."""
    oh, ow = (image.shape[1] - kh) // sh + 1, (image.shape[2] - kw) // sw + 1
    for c in range(image.shape[0]):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    source = cols[r, first + y * ow:first + (y + 1) * ow]
                    target = image[c, y * sh + i]
                    for x in range(ow):
                        target[x * sw + j] += source[x]


def _columns_per_row(oh, ow, wp, sh, sw):
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


@njit(cache=True)
def _unfold_rows(image, kh, kw, cols, first, span):
    """Stride 1, whole rows: cols[(c*KH + i)*KW + j, first + q] = image
    (C, Hp, Wp)[c] flattened, at i*Wp + j + q, for q < span = (OH - 1)*Wp + OW."""
    n_chan, hp, wp = image.shape
    planes = image.reshape(n_chan, hp * wp)
    for c in range(n_chan):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                source = planes[c, i * wp + j:i * wp + j + span]
                target = cols[r, first:first + span]
                for q in range(span):
                    target[q] = source[q]


@njit(cache=True)
def _fold_rows(cols, first, span, kh, kw, image):
    """The adjoint of _unfold_rows: adds each cols entry into the image
    (C, Hp, Wp) position it was read from."""
    n_chan, hp, wp = image.shape
    planes = image.reshape(n_chan, hp * wp)
    for c in range(n_chan):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                source = cols[r, first:first + span]
                target = planes[c, i * wp + j:i * wp + j + span]
                for q in range(span):
                    target[q] += source[q]


def _conv2d_gemm(xp, w, b, sh, sw, out, n_chunks, cache_bytes):
    _forward_gemm(xp, w, b, sh, sw, 1, 1, 1, 1, out, None, n_chunks, cache_bytes)


def _conv2d_backward_gemm(dy, xp, w, sh, sw, dxp, dw, n_chunks, cache_bytes):
    _backward_gemm(dy, None, xp, w, sh, sw, 1, 1, 1, 1, dxp, dw, None, n_chunks, cache_bytes)


@njit(cache=True)
def _add_gradients(dys, cols, whole_rows, span, w_tf, kh, kw, sh, sw, dw_part, product, dxp, n):
    """A group's share of the conv gradients, from the output gradients dys
    (F, m*S) and the unfolded inputs cols (taps, m*S) of images n .. n + m - 1
    (S = span columns each, laid out as _columns_per_row says): dw_part
    (F, taps) += dys @ cols^T (through product, a buffer like dw_part);
    then, if dxp is not None, cols is overwritten with w_tf @ dys, w_tf
    (taps, F), and folded into dxp."""
    np.dot(dys, cols.T, product)
    dw_part += product
    if dxp is None:
        return
    np.dot(w_tf, dys, cols)
    for k in range(cols.shape[1] // span):
        if whole_rows:
            _fold_rows(cols, k * span, span, kh, kw, dxp[n + k])
        else:
            _fold_image(cols, k * span, kh, kw, sh, sw, dxp[n + k])


@njit(cache=True)
def _add_parts(dw_parts, dw):
    """dw (F, C, KH, KW) += the sum of the per-chunk parts (chunks, F, C*KH*KW)."""
    dw_ft = dw.reshape(dw.shape[0], -1)
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


@njit(cache=True)
def conv2d_relu_maxpool2d_naive(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code):
    n_img, n_filt, ph, pw = out.shape
    n_chan, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    for n in range(n_img):
        for f in range(n_filt):
            for py in range(ph):
                for px in range(pw):
                    best_at = -1
                    best = b[f]
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
                    _relu_store(best, best_at, out[n, f], code[n, f], py, px)


@njit(cache=True)
def _relu_store(best, best_at, out_plane, code_plane, py, px):
    """Write relu(best) and the window code of pooled pixel (py, px)."""
    if best > 0:
        out_plane[py, px] = best
        code_plane[py, px] = best_at
    else:
        out_plane[py, px] = best if best != best else 0  # NaN stays NaN, as np.maximum(NaN, 0)
        code_plane[py, px] = NO_GRADIENT


@njit(cache=True)
def conv2d_relu_maxpool2d_backward_naive(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db):
    n_img, n_filt, ph, pw = dy.shape
    n_chan, kh, kw = w.shape[1], w.shape[2], w.shape[3]
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
                                if dxp is not None:
                                    dxp[n, c, y * sh + i, x * sw + j] += g * w[f, c, i, j]


@njit(cache=True)
def _relu_max4(v0, v1, v2, v3):
    """ReLU of the maximum of a 2x2 window's values v0..v3 (row-major), and
    the position of its first maximum, or NO_GRADIENT where the ReLU cut it
    or a value is NaN (then the result is NaN). Selects only, no branches,
    so a loop calling it vectorizes."""
    best = v0
    best_at = 0
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
    return (np.nan if holds_nan else (best if passes else 0)), (best_at if passes else NO_GRADIENT)


@njit(cache=True)
def _relu_maxpool_image(conv, b, ow, pkh, pkw, psh, psw, out, code):
    """Pool one image's conv output conv (F, OH*OW) (bias not yet added)
    into out (F, PH, PW) and code, as conv2d_relu_maxpool2d_naive does.
    Free of branches on the values (they would be mispredicted half the
    time): a NaN only sets a flag, and a window holding one is NaN."""
    if pkh == 2 and pkw == 2:  # the usual window, unrolled: selects only, so the loop over px vectorizes
        for f in range(out.shape[0]):
            for py in range(out.shape[1]):
                for px in range(out.shape[2]):
                    at = py * psh * ow + px * psw
                    out[f, py, px], code[f, py, px] = _relu_max4(conv[f, at] + b[f], conv[f, at + 1] + b[f],
                                                                 conv[f, at + ow] + b[f], conv[f, at + ow + 1] + b[f])
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
                code[f, py, px] = best_at if best > 0 else NO_GRADIENT
                if holds_nan:  # the max and its ReLU are NaN, as np.maximum(NaN, 0)
                    out[f, py, px] = np.nan
                    code[f, py, px] = NO_GRADIENT


@njit(cache=True)
def _window_offsets(pkw, row):
    """window_at[code] = the offset from its window's first conv output of
    the one a code names, conv output (y, x) being column y*row + x; 0 for
    NO_GRADIENT and every code past the window (never passed)."""
    window_at = np.empty(NO_GRADIENT + 1, np.intp)
    i, j = 0, 0
    for at in range(NO_GRADIENT):
        window_at[at] = i * row + j
        j += 1
        if j == pkw:
            i, j = i + 1, 0
    window_at[NO_GRADIENT] = 0
    return window_at


@njit(cache=True)
def _unpool_image(dy, code, row, pkw, psh, psw, dconv, db):
    """dconv (F, S) += each pooled gradient dy (F, PH, PW) at the conv
    output its code names (none for NO_GRADIENT), conv output (y, x) being
    column y*row + x, and db (F,) += the sum of those that pass. No branch
    on the code (the ReLU cuts at random): a cut gradient adds 0 at the
    window's first conv output. dconv may be a strided view, e.g. an (S, F)
    array with the filters innermost, transposed, as Winograd's gradient
    transform reads it (the Cython twin's _unpool_strided)."""
    window_at = _window_offsets(pkw, row)
    for f in range(dy.shape[0]):
        total = dy.dtype.type(0)
        for py in range(dy.shape[1]):
            for px in range(dy.shape[2]):
                at = code[f, py, px]
                grad = dy[f, py, px] if at != NO_GRADIENT else dy.dtype.type(0)
                dconv[f, py * psh * row + px * psw + window_at[at]] += grad
                total = total + grad
        db[f] += total


@njit(cache=True)
def _clear_unpooled(code, row, pkw, psh, psw, dconv):
    """Zeros where _unpool_image with this code wrote in dconv (F, S), and
    at the first conv output of the windows it cut: dconv is all zeros
    again if it was before, in a quarter of a memset's writes (2x2 pool)."""
    window_at = _window_offsets(pkw, row)
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


def conv2d_relu_maxpool2d_vectorized(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code):
    # Stride 1: the register-blocked micro-kernel, a chunk of the images (or
    # of one image's filters: _work_split) per thread; by output phases for
    # the usual 2x2 pool at stride 2 over few taps, where pooling would cost
    # more than the conv (conv1 of the MNIST CNN, 9 taps, batch 256: 1.9 ms
    # against 6.3 ms; conv2, 288 taps: 7.6 ms against 6.7 ms, its short
    # phase rows rounded up to whole vectors).
    if sh == 1 and sw == 1 and pkh == pkw == psh == psw == 2 and w.shape[1] * w.shape[2] * w.shape[3] <= FEW_TAPS:
        _phase_pooled_forward(xp, w, b, _filter_rows(w, b, _filters_in_blocks(w))[0], out, code, *_work_split(xp, w))
    elif sh == 1 and sw == 1:
        _tiled_forward(xp, w, b, *_filter_rows(w, b, _filters_in_blocks(w)), pkh, pkw, psh, psw, out, code,
                       *_work_split(xp, w))
    else:
        _fused_strided_forward(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code)


@njit(parallel=True, cache=True)
def _fused_strided_forward(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code):
    n_img, n_filt, ph, pw = out.shape
    n_chan, kh, kw, hp, wp = w.shape[1], w.shape[2], w.shape[3], xp.shape[2], xp.shape[3]
    n_taps = n_chan * kh * kw
    n_quad_taps = n_taps - n_taps % 4
    n_spots = pkh * pkw  # positions in a pool window
    n_quad_spots = (n_spots + 3) // 4 * 4
    tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    images = xp.reshape(n_img, n_chan * hp * wp)
    # Taps first (C*KH*KW, F): the F weights of one tap are one contiguous vector.
    w_tf = np.ascontiguousarray(w.reshape(n_filt, n_taps).T)
    # Per image: each window position's corner in the image and conv outputs
    # (F,), the positions padded to a multiple of four with position 0's
    # corner; the best so far and where; the pooled pixel's values and codes.
    corner = np.zeros((n_img, n_quad_spots + PAD), np.intp)
    acc = np.empty((n_img, n_quad_spots, n_filt + PAD), out.dtype)
    best = np.empty((n_img, n_filt + PAD), out.dtype)
    best_at = np.empty((n_img, n_filt + PAD), np.intc)
    holds_nan = np.empty((n_img, n_filt + PAD), np.intc)
    pooled = np.empty((n_img, n_filt + PAD), out.dtype)
    codes = np.empty((n_img, n_filt + PAD), np.uint8)
    for n in prange(n_img):
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
                    pooled[n, f] = np.nan if holds_nan[n, f] else (best[n, f] if passes else 0)
                    codes[n, f] = best_at[n, f] if passes else NO_GRADIENT
                for f in range(n_filt):
                    out[n, f, py, px] = pooled[n, f]
                    code[n, f, py, px] = codes[n, f]


def conv2d_relu_maxpool2d_backward_vectorized(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db):
    # One chunk of the batch per thread, each with its own dw and db, added
    # at the end. Stride 1: the register-blocked micro-kernel.
    n_chunks = min(numba.get_num_threads(), dy.shape[0])
    if sh == 1 and sw == 1:
        _tiled_backward_call(dy, code, xp, w, pkw, psh, psw, dxp, dw, db, n_chunks)
    else:
        _fused_backward_in_chunks(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks)


@njit(parallel=True, cache=True)
def _fused_backward_in_chunks(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks):
    n_img, n_filt, ph, pw = dy.shape
    n_chan, kh, kw, hp, wp = w.shape[1], w.shape[2], w.shape[3], xp.shape[2], xp.shape[3]
    n_taps = n_chan * kh * kw
    n_spots = pkh * pkw  # positions in a pool window
    n_quad_spots = (n_spots + 3) // 4 * 4
    tap_at = _tap_offsets(n_chan, kh, kw, hp, wp)
    images = xp.reshape(n_img, n_chan * hp * wp)
    if dxp is not None:
        dx_images = dxp.reshape(n_img, n_chan * hp * wp)
    w_ft = w.reshape(n_filt, n_taps)
    # Per chunk: its dw (taps, F) and db (F,); per window position, its corner in the
    # image and the gradients (F,) that go to it, the positions padded to a
    # multiple of four with zero gradients at position 0's corner; the
    # pooled pixel's gradients and codes; one window's input gradient (taps,).
    dw_parts = np.zeros((n_chunks, n_taps + 1, n_filt + PAD), dw.dtype)
    db_parts = np.zeros((n_chunks, n_filt + PAD), dw.dtype)
    grads = np.zeros((n_chunks, n_quad_spots, n_filt + PAD), dw.dtype)
    corner = np.zeros((n_chunks, n_quad_spots + PAD), np.intp)
    pooled_grads = np.empty((n_chunks, n_filt + PAD), dw.dtype)
    pooled_codes = np.empty((n_chunks, n_filt + PAD), np.intc)
    windows = np.empty((n_chunks, n_taps + PAD), dw.dtype)
    dw_ft = dw.reshape(n_filt, n_taps)
    for t in prange(n_chunks):
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
                    if dxp is not None:
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


def _forward_gemm(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code, n_chunks, cache_bytes):
    """The forward pass of the fused op: out and code pooled from the conv
    output; with code None, of the conv: out is the conv output itself."""
    n_taps, n_filt = w.shape[1] * w.shape[2] * w.shape[3], w.shape[0]
    n_pix = ((xp.shape[2] - w.shape[2]) // sh + 1) * ((xp.shape[3] - w.shape[3]) // sw + 1)
    group = _images_per_gemm((n_taps + n_filt) * n_pix * out.itemsize, xp.shape[0], n_chunks, cache_bytes)
    _forward_groups(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code, n_chunks, group)


@njit(parallel=True, cache=True)
def _forward_groups(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code, n_chunks, group):
    n_img, n_filt, kh, kw = xp.shape[0], w.shape[0], w.shape[2], w.shape[3]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    n_taps, n_pix = w.shape[1] * kh * kw, oh * ow
    w_ft = w.reshape(n_filt, n_taps)
    cols = np.empty((n_chunks, n_taps * group * n_pix), out.dtype)
    conv = np.empty((n_chunks, n_filt * group * n_pix), out.dtype)
    for t in prange(n_chunks):
        first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
        for g in range((last - first + group - 1) // group):
            n = first + g * group
            m = min(group, last - n)
            cols_g = cols[t, :n_taps * m * n_pix].reshape(n_taps, m * n_pix)
            conv_g = conv[t, :n_filt * m * n_pix].reshape(n_filt, m * n_pix)
            for k in range(m):
                _unfold_image(xp[n + k], kh, kw, sh, sw, cols_g, k * n_pix)
            # conv (F, m*OH*OW) = w (F, taps) @ cols (taps, m*OH*OW)
            np.dot(w_ft, cols_g, conv_g)
            for k in range(m):
                if code is not None:
                    _relu_maxpool_image(conv_g[:, k * n_pix:(k + 1) * n_pix], b, ow, pkh, pkw,
                                        psh, psw, out[n + k], code[n + k])
                    continue
                for f in range(n_filt):
                    for y in range(oh):
                        for x in range(ow):
                            out[n + k, f, y, x] = conv_g[f, k * n_pix + y * ow + x] + b[f]


def _backward_gemm(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks, cache_bytes):
    """The backward pass of the conv, and of the fused op: there dy is the
    pooled gradient, which code routes back to the conv output, and db is
    the fused op's; with code and db None, dy is the conv output's gradient
    itself."""
    n_taps, n_filt = w.shape[1] * w.shape[2] * w.shape[3], w.shape[0]
    oh, ow = (xp.shape[2] - w.shape[2]) // sh + 1, (xp.shape[3] - w.shape[3]) // sw + 1
    whole_rows, row, span = _columns_per_row(oh, ow, xp.shape[3], sh, sw)
    group = _images_per_gemm((n_taps + n_filt) * span * dw.itemsize, dy.shape[0], n_chunks, cache_bytes)
    _backward_groups(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks, group, whole_rows, row, span)


@njit(parallel=True, cache=True)
def _backward_groups(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks, group, whole_rows, row,
                     span):
    n_img, n_filt, kh, kw = dy.shape[0], w.shape[0], w.shape[2], w.shape[3]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    n_taps = w.shape[1] * kh * kw
    w_tf = np.ascontiguousarray(w.reshape(n_filt, n_taps).T)
    cols = np.empty((n_chunks, n_taps * group * span), dw.dtype)
    dconv = np.empty((n_chunks, n_filt * group * span), dw.dtype)
    dw_parts = np.zeros((n_chunks, n_filt, n_taps), dw.dtype)
    db_parts = np.zeros((n_chunks, n_filt), dw.dtype)
    products = np.empty((n_chunks, n_filt, n_taps), dw.dtype)
    for t in prange(n_chunks):
        first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
        for g in range((last - first + group - 1) // group):
            n = first + g * group
            m = min(group, last - n)
            cols_g = cols[t, :n_taps * m * span].reshape(n_taps, m * span)
            dconv_g = dconv[t, :n_filt * m * span].reshape(n_filt, m * span)
            for k in range(m):
                # dconv (F, S) of image n + k, side by side with the group's others
                for f in range(n_filt):
                    dconv_g[f, k * span:(k + 1) * span] = 0
                    if code is None:
                        for y in range(oh):
                            dconv_g[f, k * span + y * row:k * span + y * row + ow] = dy[n + k, f, y]
                if code is not None:
                    _unpool_image(dy[n + k], code[n + k], row, pkw, psh, psw,
                                  dconv_g[:, k * span:(k + 1) * span], db_parts[t])
                if whole_rows:
                    _unfold_rows(xp[n + k], kh, kw, cols_g, k * span, span)
                else:
                    _unfold_image(xp[n + k], kh, kw, sh, sw, cols_g, k * span)
            _add_gradients(dconv_g, cols_g, whole_rows, span, w_tf, kh, kw, sh, sw, dw_parts[t], products[t], dxp, n)
    _add_parts(dw_parts, dw)
    if db is not None:
        for t in range(n_chunks):
            db += db_parts[t]


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


@njit(cache=True)
def _bt(alpha, s, s0, ss, d, d0, ds):
    """d[r] = sum_i B^T[r, i] s[i]: alpha vectors, s[i] the row s0 + i*ss of
    s (rows, n), d[r] the row d0 + r*ds of d."""
    if alpha == 4:
        for c in range(s.shape[1]):
            d[d0, c] = s[s0, c] - s[s0 + 2 * ss, c]
            d[d0 + ds, c] = s[s0 + ss, c] + s[s0 + 2 * ss, c]
            d[d0 + 2 * ds, c] = s[s0 + 2 * ss, c] - s[s0 + ss, c]
            d[d0 + 3 * ds, c] = s[s0 + ss, c] - s[s0 + 3 * ss, c]
        return
    for c in range(s.shape[1]):
        d[d0, c] = 4 * s[s0, c] - 5 * s[s0 + 2 * ss, c] + s[s0 + 4 * ss, c]
        d[d0 + ds, c] = s[s0 + 3 * ss, c] + s[s0 + 4 * ss, c] - 4 * (s[s0 + ss, c] + s[s0 + 2 * ss, c])
        d[d0 + 2 * ds, c] = s[s0 + 4 * ss, c] - s[s0 + 3 * ss, c] + 4 * (s[s0 + ss, c] - s[s0 + 2 * ss, c])
        d[d0 + 3 * ds, c] = s[s0 + 4 * ss, c] - s[s0 + 2 * ss, c] + 2 * (s[s0 + 3 * ss, c] - s[s0 + ss, c])
        d[d0 + 4 * ds, c] = s[s0 + 4 * ss, c] - s[s0 + 2 * ss, c] + 2 * (s[s0 + ss, c] - s[s0 + 3 * ss, c])
        d[d0 + 5 * ds, c] = 4 * s[s0 + ss, c] - 5 * s[s0 + 3 * ss, c] + s[s0 + 5 * ss, c]


@njit(cache=True)
def _b(alpha, s, s0, ss, d, d0, ds):
    """d[i] += sum_r B^T[r, i] s[r]: the adjoint of _bt."""
    if alpha == 4:
        for c in range(s.shape[1]):
            d[d0, c] += s[s0, c]
            d[d0 + ds, c] += s[s0 + ss, c] - s[s0 + 2 * ss, c] + s[s0 + 3 * ss, c]
            d[d0 + 2 * ds, c] += s[s0 + ss, c] + s[s0 + 2 * ss, c] - s[s0, c]
            d[d0 + 3 * ds, c] -= s[s0 + 3 * ss, c]
        return
    for c in range(s.shape[1]):
        d[d0, c] += 4 * s[s0, c]
        d[d0 + ds, c] += 4 * (s[s0 + 2 * ss, c] - s[s0 + ss, c] + s[s0 + 5 * ss, c]) + 2 * (s[s0 + 4 * ss, c] - s[s0 + 3 * ss, c])
        d[d0 + 2 * ds, c] -= 5 * s[s0, c] + 4 * (s[s0 + ss, c] + s[s0 + 2 * ss, c]) + s[s0 + 3 * ss, c] + s[s0 + 4 * ss, c]
        d[d0 + 3 * ds, c] += s[s0 + ss, c] - s[s0 + 2 * ss, c] + 2 * (s[s0 + 3 * ss, c] - s[s0 + 4 * ss, c]) - 5 * s[s0 + 5 * ss, c]
        d[d0 + 4 * ds, c] += s[s0, c] + s[s0 + ss, c] + s[s0 + 2 * ss, c] + s[s0 + 3 * ss, c] + s[s0 + 4 * ss, c]
        d[d0 + 5 * ds, c] += s[s0 + 5 * ss, c]


@njit(cache=True)
def _at(alpha, s, s0, ss, d, d0, ds):
    """d[i] = sum_r A^T[i, r] s[r]: alpha vectors to m = alpha - 2."""
    if alpha == 4:
        for c in range(s.shape[1]):
            d[d0, c] = s[s0, c] + s[s0 + ss, c] + s[s0 + 2 * ss, c]
            d[d0 + ds, c] = s[s0 + ss, c] - s[s0 + 2 * ss, c] - s[s0 + 3 * ss, c]
        return
    for c in range(s.shape[1]):
        d[d0, c] = s[s0, c] + s[s0 + ss, c] + s[s0 + 2 * ss, c] + s[s0 + 3 * ss, c] + s[s0 + 4 * ss, c]
        d[d0 + ds, c] = s[s0 + ss, c] - s[s0 + 2 * ss, c] + 2 * (s[s0 + 3 * ss, c] - s[s0 + 4 * ss, c])
        d[d0 + 2 * ds, c] = s[s0 + ss, c] + s[s0 + 2 * ss, c] + 4 * (s[s0 + 3 * ss, c] + s[s0 + 4 * ss, c])
        d[d0 + 3 * ds, c] = s[s0 + ss, c] - s[s0 + 2 * ss, c] + 8 * (s[s0 + 3 * ss, c] - s[s0 + 4 * ss, c]) + s[s0 + 5 * ss, c]


@njit(cache=True)
def _a(alpha, s, s0, ss, d, d0, ds):
    """d[r] = sum_i A^T[i, r] s[i]: the adjoint of _at, m vectors to alpha."""
    if alpha == 4:
        for c in range(s.shape[1]):
            d[d0, c] = s[s0, c]
            d[d0 + ds, c] = s[s0, c] + s[s0 + ss, c]
            d[d0 + 2 * ds, c] = s[s0, c] - s[s0 + ss, c]
            d[d0 + 3 * ds, c] = -s[s0 + ss, c]
        return
    for c in range(s.shape[1]):
        d[d0, c] = s[s0, c]
        d[d0 + ds, c] = s[s0, c] + s[s0 + ss, c] + s[s0 + 2 * ss, c] + s[s0 + 3 * ss, c]
        d[d0 + 2 * ds, c] = s[s0, c] - s[s0 + ss, c] + s[s0 + 2 * ss, c] - s[s0 + 3 * ss, c]
        d[d0 + 3 * ds, c] = s[s0, c] + 2 * s[s0 + ss, c] + 4 * s[s0 + 2 * ss, c] + 8 * s[s0 + 3 * ss, c]
        d[d0 + 4 * ds, c] = s[s0, c] - 2 * s[s0 + ss, c] + 4 * s[s0 + 2 * ss, c] - 8 * s[s0 + 3 * ss, c]
        d[d0 + 5 * ds, c] = s[s0 + 3 * ss, c]


@njit(cache=True)
def _divide(d, scale):
    """d /= scale (divided, not multiplied by 1/scale: exact whenever the
    quotient is representable)."""
    d /= scale


@njit(cache=True)
def _filter_transform(wt, g, u, gw, first, end):
    """u (alpha^2, C, F): u[alpha*a + b, c] = (G' w[:, c] G'^T)[a, b], vectors
    over the F filters of wt (C, 3, 3, F), the filters with the filter axis
    last, for the channels c from first to end (each thread its share);
    gw (alpha, 3, F) is scratch for G' w. Given wc (F, 3, 3, C), the
    channels last, it makes (alpha^2, F, C) the same way, vectors over C."""
    n_filt, alpha = wt.shape[3], g.shape[0]
    for c in range(first, end):
        gw[:] = 0
        for a in range(alpha):
            for k in range(3):
                coef = g[a, k]
                if coef != 0:
                    for l in range(3):
                        for f in range(n_filt):
                            gw[a, l, f] += coef * wt[c, k, l, f]
        for a in range(alpha):
            for b in range(alpha):
                u[alpha * a + b, c] = 0
                for l in range(3):
                    coef = g[b, l]
                    if coef != 0:
                        for f in range(n_filt):
                            u[alpha * a + b, c, f] += coef * gw[a, l, f]


@njit(cache=True)
def _filter_gradient(du_parts, c, g, scale, dwt, gd, dw):
    """dwt[c] (3, 3, F) = G'^T dU G' / scale, dU (alpha, alpha) the vectors
    du[:, c] over the F filters, du (alpha^2, C, F) the sum of the threads'
    parts du_parts (T, alpha^2, C, F), summed into du_parts[0] here: the
    adjoint of _filter_transform, for one channel c; then dw[:, c] (F, 3,
    3) += dwt[c]. gd (alpha, 3, F) is scratch for dU G'."""
    n_filt, alpha = du_parts.shape[3], g.shape[0]
    for t in range(1, du_parts.shape[0]):
        for a in range(alpha * alpha):
            for f in range(n_filt):
                du_parts[0, a, c, f] += du_parts[t, a, c, f]
    gd[:] = 0
    for a in range(alpha):
        for b in range(alpha):
            for l in range(3):
                coef = g[b, l]
                if coef != 0:
                    for f in range(n_filt):
                        gd[a, l, f] += coef * du_parts[0, alpha * a + b, c, f]
    dwt[c] = 0
    for k in range(3):
        for a in range(alpha):
            coef = g[a, k]
            if coef != 0:
                for l in range(3):
                    for f in range(n_filt):
                        dwt[c, k, l, f] += coef * gd[a, l, f]
    _divide(dwt[c], scale)
    for k in range(3):
        for l in range(3):
            for f in range(n_filt):
                dw[f, c, k, l] += dwt[c, k, l, f]


CHANNEL_BLOCK = 16


@njit(cache=True)
def _channels_last(image, ph, pw, hwc):
    """hwc (H', W', C) = image (C, H, W) with the channels innermost, from
    row ph and column pw on, zeros around it (the conv's padding, and past
    where a last tile's patch reaches). A row at a time in blocks of
    CHANNEL_BLOCK channels, so each step writes one run of adjacent values
    from rows of the image that stay in L1 (a channel at a time wrote each
    value to another cache line)."""
    n_chan = image.shape[0]
    hwc[:] = 0
    for y in range(image.shape[1]):
        for block in range((n_chan + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
            for x in range(image.shape[2]):
                for c in range(block * CHANNEL_BLOCK, min((block + 1) * CHANNEL_BLOCK, n_chan)):
                    hwc[ph + y, pw + x, c] = image[c, y, x]


@njit(cache=True)
def _interior_channels_first(hwc, ph, pw, image):
    """image (C, H, W) = hwc (H', W', C) from row ph and column pw on (the
    part inside the padding), in blocks of channels as _channels_last."""
    n_chan = image.shape[0]
    for y in range(image.shape[1]):
        for block in range((n_chan + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
            for x in range(image.shape[2]):
                for c in range(block * CHANNEL_BLOCK, min((block + 1) * CHANNEL_BLOCK, n_chan)):
                    image[c, y, x] = hwc[ph + y, pw + x, c]


@njit(cache=True)
def _input_transform(hwc, tiles_h, tiles_w, v, first, bd):
    """v[alpha*a + b, first + ty*TW + tx] = (B^T d B)[a, b] of each patch
    d = hwc[m*ty : m*ty + alpha, m*tx : m*tx + alpha], vectors over the C
    channels (alpha = bd.shape[0], m = alpha - 2); bd (alpha, W', C) is
    scratch for B^T times a row of patches, made for the whole row at once
    (one long vector loop, and the columns two patches share made once)."""
    n_chan, alpha = hwc.shape[2], bd.shape[0]
    m, width, v_step = alpha - 2, bd.shape[1], v.shape[1]
    hwc_lines, bd_lines = hwc.reshape(hwc.shape[0], -1), bd.reshape(alpha, -1)
    bd_rows, v_rows = bd.reshape(-1, n_chan), v.reshape(-1, n_chan)
    for ty in range(tiles_h):
        _bt(alpha, hwc_lines, m * ty, 1, bd_lines, 0, 1)
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _bt(alpha, bd_rows, a * width + m * tx, 1, v_rows, alpha * a * v_step + p, v_step)


@njit(cache=True)
def _patch_gradient(dv, first, tiles_h, tiles_w, scale, hwc, bdv):
    """hwc = the sum over tiles of B dV B^T placed at its patch, divided by
    scale, dV (alpha, alpha) the vectors dv[:, first + ty*TW + tx] over the
    C channels: the adjoint of _input_transform. bdv (alpha, W', C) is
    scratch for a row of patches' dV B^T, summed where they overlap, then
    multiplied by B for the whole row at once."""
    n_chan, alpha = hwc.shape[2], bdv.shape[0]
    m, width, v_step = alpha - 2, bdv.shape[1], dv.shape[1]
    dv_rows, bdv_rows = dv.reshape(-1, n_chan), bdv.reshape(-1, n_chan)
    bdv_lines, hwc_lines = bdv.reshape(alpha, -1), hwc.reshape(hwc.shape[0], -1)
    hwc[:] = 0
    for ty in range(tiles_h):
        bdv[:] = 0
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _b(alpha, dv_rows, alpha * a * v_step + p, v_step, bdv_rows, a * width + m * tx, 1)
        _b(alpha, bdv_lines, 0, 1, hwc_lines, m * ty, 1)
    _divide(hwc, scale)


@njit(cache=True)
def _output_transform(m_e, first, tiles_h, tiles_w, scale, hwf, am):
    """hwf[m*ty + i, m*tx + j] = (A^T M A)[i, j] / scale of each tile's M
    (alpha, alpha), the vectors m_e[:, first + ty*TW + tx] over the F
    filters; am (m, alpha, F) is scratch for A^T M."""
    n_filt, m, alpha = m_e.shape[2], am.shape[0], am.shape[1]
    row, m_step = hwf.shape[1], m_e.shape[1]
    m_rows, am_rows, hwf_rows = m_e.reshape(-1, n_filt), am.reshape(-1, n_filt), hwf.reshape(-1, n_filt)
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for b in range(alpha):
                _at(alpha, m_rows, b * m_step + p, alpha * m_step, am_rows, b, alpha)
            for i in range(m):
                _at(alpha, am_rows, i * alpha, 1, hwf_rows, (m * ty + i) * row + m * tx, 1)
                _divide(hwf[m * ty + i, m * tx:m * tx + m], scale)


@njit(cache=True)
def _gradient_transform(hwf, tiles_h, tiles_w, z, first, ag):
    """z[alpha*a + b, first + ty*TW + tx] = (A dY A^T)[a, b] of each tile's
    output gradient dY = hwf[m*ty : m*ty + m, m*tx : m*tx + m], vectors
    over the F filters: the adjoint of _output_transform. ag (alpha, W, F)
    is scratch for A times a row of tiles, made for the whole row at once."""
    n_filt, alpha = hwf.shape[2], ag.shape[0]
    m, width, z_step = alpha - 2, ag.shape[1], z.shape[1]
    hwf_lines, ag_lines = hwf.reshape(hwf.shape[0], -1), ag.reshape(alpha, -1)
    ag_rows, z_rows = ag.reshape(-1, n_filt), z.reshape(-1, n_filt)
    for ty in range(tiles_h):
        _a(alpha, hwf_lines, m * ty, 1, ag_lines, 0, 1)
        for tx in range(tiles_w):
            p = first + ty * tiles_w + tx
            for a in range(alpha):
                _a(alpha, ag_rows, a * width + m * tx, 1, z_rows, alpha * a * z_step + p, z_step)


@njit(cache=True)
def _add_matrix(source, target):
    """target += source, two (rows, columns) arrays."""
    for i in range(source.shape[0]):
        for j in range(source.shape[1]):
            target[i, j] += source[i, j]


@njit(cache=True)
def _channels_first(hwf, oh, ow, b, rows):
    """rows (F, OH*OW) = the OH x OW part of hwf (H', W', F) with the
    filters first, plus b[f]; in blocks of CHANNEL_BLOCK filters, as
    _channels_last."""
    n_filt = hwf.shape[2]
    for y in range(oh):
        for block in range((n_filt + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
            for x in range(ow):
                for f in range(block * CHANNEL_BLOCK, min((block + 1) * CHANNEL_BLOCK, n_filt)):
                    rows[f, y * ow + x] = hwf[y, x, f] + b[f]


@njit(cache=True)
def _relu_maxpool_filters_last(hwf, b, psh, psw, pooled, pooled_code, out, code):
    """_relu_maxpool_image for a 2x2 window, read straight from hwf (H', W',
    F) plus b[f]: each window's four vectors over the F filters give the
    pooled values and codes in pooled and pooled_code (PH*PW, F), which go
    to out and code (F, PH, PW) in blocks of CHANNEL_BLOCK filters, as in
    _channels_first. Pooled from the filters-first conv output instead, a
    window's loop ran over the PW pooled columns, too few to vectorize."""
    n_filt, n_pw = hwf.shape[2], out.shape[2]
    n_pool = out.shape[1] * n_pw
    for py in range(out.shape[1]):
        for px in range(n_pw):
            p = py * n_pw + px
            top, bottom = hwf[py * psh, px * psw:px * psw + 2], hwf[py * psh + 1, px * psw:px * psw + 2]
            for f in range(n_filt):
                pooled[p, f], pooled_code[p, f] = _relu_max4(top[0, f] + b[f], top[1, f] + b[f], bottom[0, f] + b[f],
                                                             bottom[1, f] + b[f])
    for block in range((n_filt + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK):
        for p in range(n_pool):
            for f in range(block * CHANNEL_BLOCK, min((block + 1) * CHANNEL_BLOCK, n_filt)):
                out[f, p // n_pw, p % n_pw] = pooled[p, f]
                code[f, p // n_pw, p % n_pw] = pooled_code[p, f]


# Every image is copied into a channels-last scratch with zeros around it
# anyway, so the Winograd kernels take the padding themselves: called with
# padding=(ph, pw), xp is the unpadded x (N, C, H, W) and dxp the unpadded
# dx, and fastconv.ops makes no padded copy of x, no zero-filled dxp and no
# crop of it: in cnn-deep's training step at batch 64 (Intel Xeon, 2
# threads) those copies were 0.7 ms of the 1.5 ms ops spent around these
# kernels. With the default (0, 0), xp is padded by the caller as for
# every other kernel (the inference plan's buffers).


def _conv2d_winograd(xp, w, b, sh, sw, out, n_chunks, cache_bytes, padding=(0, 0)):
    _winograd_forward(xp, w, b, sh, sw, 1, 1, 1, 1, out, None, n_chunks, cache_bytes, padding)


def _conv2d_backward_winograd(dy, xp, w, sh, sw, dxp, dw, n_chunks, cache_bytes, padding=(0, 0)):
    _winograd_backward(dy, None, xp, w, sh, sw, 1, 1, 1, 1, dxp, dw, None, n_chunks, cache_bytes, padding)


def _winograd_forward(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code, n_chunks, cache_bytes, padding=(0, 0)):
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
    _winograd_forward_groups(xp, ph, pw, wt, g, u, b, out.dtype.type(scale), pkh, pkw, psh, psw, out, code, n_chunks,
                             group, m, tiles_h, tiles_w)


@njit(parallel=True, cache=True)
def _winograd_forward_groups(xp, ph, pw, wt, g, u, b, scale, pkh, pkw, psh, psw, out, code, n_chunks, group, m,
                             tiles_h, tiles_w):
    n_img, n_e, n_chan, n_filt = xp.shape[0], u.shape[0], u.shape[1], u.shape[2]
    alpha, oh, ow = m + 2, xp.shape[2] + 2 * ph - 2, xp.shape[3] + 2 * pw - 2
    n_tiles = tiles_h * tiles_w
    v = np.empty((n_chunks, n_e, group * n_tiles, n_chan), out.dtype)
    m_e = np.empty((n_chunks, n_e, group * n_tiles, n_filt), out.dtype)
    hwc = np.empty((n_chunks, m * tiles_h + 2, m * tiles_w + 2, n_chan), out.dtype)
    hwf = np.empty((n_chunks, m * tiles_h, m * tiles_w, n_filt), out.dtype)
    # 2x2 windows are pooled from hwf, filters innermost; other windows from
    # the conv output made filters-first in conv
    filters_last = code is not None and pkh == 2 and pkw == 2
    conv = np.empty((n_chunks, n_filt, oh * ow if code is not None and not filters_last else 0), out.dtype)
    no_bias = np.zeros(n_filt, out.dtype)
    bd = np.empty((n_chunks, alpha, m * tiles_w + 2, n_chan), out.dtype)
    am = np.empty((n_chunks, m, alpha, n_filt), out.dtype)
    gw = np.empty((n_chunks, alpha, 3, n_filt), out.dtype)
    n_pool = out.shape[2] * out.shape[3] if filters_last else 0
    pool_values = np.empty((n_chunks, n_pool, n_filt), out.dtype)
    pool_codes = np.empty((n_chunks, n_pool, n_filt), np.uint8)
    for t in prange(n_chunks):
        _filter_transform(wt, g, u, gw[t], t * n_chan // n_chunks, (t + 1) * n_chan // n_chunks)
    for t in prange(n_chunks):
        first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
        for g_at in range((last - first + group - 1) // group):
            n = first + g_at * group
            m_img = min(group, last - n)
            for k in range(m_img):
                _channels_last(xp[n + k], ph, pw, hwc[t])
                _input_transform(hwc[t], tiles_h, tiles_w, v[t], k * n_tiles, bd[t])
            for e in range(n_e):
                # M[e] (m*tiles, F) = V[e] (m*tiles, C) @ U[e] (C, F)
                np.dot(v[t, e, :m_img * n_tiles], u[e], m_e[t, e, :m_img * n_tiles])
            for k in range(m_img):
                _output_transform(m_e[t], k * n_tiles, tiles_h, tiles_w, scale, hwf[t], am[t])
                if code is not None:  # the pooling adds the bias
                    if filters_last:
                        _relu_maxpool_filters_last(hwf[t], b, psh, psw, pool_values[t], pool_codes[t], out[n + k],
                                                   code[n + k])
                    else:
                        _channels_first(hwf[t], oh, ow, no_bias, conv[t])
                        _relu_maxpool_image(conv[t], b, ow, pkh, pkw, psh, psw, out[n + k], code[n + k])
                    continue
                _channels_first(hwf[t], oh, ow, b, out[n + k].reshape(n_filt, oh * ow))


def _winograd_backward(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db, n_chunks, cache_bytes,
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
    _winograd_backward_groups(dy, code, xp, ph, pw, wc, g, ut, dw.dtype.type(scale), pkw, psh, psw, dxp, du, dwt, dw,
                              db, n_chunks, group, m, tiles_h, tiles_w)


@njit(parallel=True, cache=True)
def _winograd_backward_groups(dy, code, xp, ph, pw, wc, g, ut, scale, pkw, psh, psw, dxp, du, dwt, dw, db, n_chunks,
                              group, m, tiles_h, tiles_w):
    n_img, n_e, n_filt, n_chan = xp.shape[0], ut.shape[0], ut.shape[1], ut.shape[2]
    alpha = m + 2
    n_tiles = tiles_h * tiles_w
    v = np.empty((n_chunks, n_e, group * n_tiles, n_chan), du.dtype)
    z = np.empty((n_chunks, n_e, group * n_tiles, n_filt), du.dtype)
    dv = np.empty((n_chunks, n_e, group * n_tiles, n_chan), du.dtype)
    hwc = np.empty((n_chunks, m * tiles_h + 2, m * tiles_w + 2, n_chan), du.dtype)
    hwf = np.empty((n_chunks, m * tiles_h, m * tiles_w, n_filt), du.dtype)
    db_parts = np.zeros((n_chunks, n_filt), du.dtype)
    bd = np.empty((n_chunks, alpha, m * tiles_w + 2, n_chan), du.dtype)
    ag = np.empty((n_chunks, alpha, m * tiles_w, n_filt), du.dtype)
    gw = np.empty((n_chunks, alpha, 3, n_chan), du.dtype)
    gd = np.empty((n_chunks, alpha, 3, n_filt), du.dtype)
    product = np.empty((n_chunks, n_chan, n_filt), du.dtype)  # np.dot has no beta: dU sums go through it
    if dxp is not None:
        for t in prange(n_chunks):
            _filter_transform(wc, g, ut, gw[t], t * n_filt // n_chunks, (t + 1) * n_filt // n_chunks)
    for t in prange(n_chunks):
        first, last = t * n_img // n_chunks, (t + 1) * n_img // n_chunks
        for g_at in range((last - first + group - 1) // group):
            n = first + g_at * group
            m_img = min(group, last - n)
            for k in range(m_img):
                _channels_last(xp[n + k], ph, pw, hwc[t])
                _input_transform(hwc[t], tiles_h, tiles_w, v[t], k * n_tiles, bd[t])
                if code is not None:
                    # routed straight to the filters-innermost layout, seen as (F, H'*W')
                    hwf[t] = 0
                    _unpool_image(dy[n + k], code[n + k], hwf.shape[2], pkw, psh, psw,
                                  hwf[t].reshape(-1, n_filt).T, db_parts[t])
                else:
                    _channels_last(dy[n + k], 0, 0, hwf[t])
                _gradient_transform(hwf[t], tiles_h, tiles_w, z[t], k * n_tiles, ag[t])
            for e in range(n_e):
                # dU[e] (C, F) += V[e]^T (C, m*tiles) @ Z[e] (m*tiles, F)
                if g_at == 0:
                    np.dot(v[t, e, :m_img * n_tiles].T, z[t, e, :m_img * n_tiles], du[t, e])
                else:
                    np.dot(v[t, e, :m_img * n_tiles].T, z[t, e, :m_img * n_tiles], product[t])
                    _add_matrix(product[t], du[t, e])
                if dxp is not None:
                    # dV[e] (m*tiles, C) = Z[e] (m*tiles, F) @ U[e]^T (F, C)
                    np.dot(z[t, e, :m_img * n_tiles], ut[e], dv[t, e, :m_img * n_tiles])
            if dxp is not None:
                for k in range(m_img):
                    _patch_gradient(dv[t], k * n_tiles, tiles_h, tiles_w, scale, hwc[t], bd[t])
                    _interior_channels_first(hwc[t], ph, pw, dxp[n + k])
    for t in prange(n_chunks):
        for c in range(t * n_chan // n_chunks, (t + 1) * n_chan // n_chunks):
            _filter_gradient(du, c, g, scale, dwt, gd[t], dw)
    if db is not None:
        for t in range(n_chunks):
            db += db_parts[t]


# ---------------------------------------------------------- dense products


@njit(parallel=True, cache=True)
def product(a, b, out, n_chunks):
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
    m, n = out.shape
    k = a.shape[1]
    by_depth, by_rows = k >= 2 * max(m, n), m > n
    # thread t > 0's product by K (thread 0 writes out)
    parts = np.empty((n_chunks - 1 if by_depth else 0, m, n), out.dtype)
    for t in prange(n_chunks):
        # np.dot calls BLAS on contiguous arrays only (a block of a is not
        # one when a is F-contiguous, a block of b's columns never is)
        if by_depth:
            first, last = t * k // n_chunks, (t + 1) * k // n_chunks
            part = np.dot(np.ascontiguousarray(a[:, first:last]), np.ascontiguousarray(b[first:last]))
            if t == 0:
                out[:] = part
            else:
                parts[t - 1] = part
        elif by_rows:
            first, last = t * m // n_chunks, (t + 1) * m // n_chunks
            if last > first:
                out[first:last] = np.dot(np.ascontiguousarray(a[first:last]), b)
        else:
            first, last = t * n // n_chunks, (t + 1) * n // n_chunks
            if last > first:
                out[:, first:last] = np.dot(a, np.ascontiguousarray(b[:, first:last]))
    for t in range(parts.shape[0]):
        out += parts[t]


ROW_COLUMNS = 128  # the columns of a block in _add_rows: conv_tile.h's AVX-512 block, 8 vectors of 16 floats


@njit(cache=True)
def _add_rows(x, w, out):
    """out (N,) = the sum over r of x[r] * w[r] for x (R,) and w (R, N)
    (conv_tile.h's fc_add_rows: the columns in blocks, here of ROW_COLUMNS,
    each summed over every row; the sums in memory, not in registers)."""
    n = w.shape[1]
    for j0 in range(0, n, ROW_COLUMNS):
        block = out[j0:min(j0 + ROW_COLUMNS, n)]
        block[:] = 0
        for r in range(w.shape[0]):
            row = w[r, j0:j0 + block.shape[0]]
            for j in range(block.shape[0]):
                block[j] += row[j] * x[r]


@njit(parallel=True, cache=True)
def row_product(a, b, parts, out, n_chunks):
    """out (N,) = a (K,) @ b (K, N), b C-contiguous: a dense layer's product
    for one row (batch 1). n_chunks threads each sum a block of b's rows,
    weighted by a, into its row of parts (n_chunks, N) (_add_rows); out is
    then the rows' sum. A thread reads only its block of b, which stays in
    its core's cache from call to call."""
    k, n = b.shape
    for t in prange(n_chunks):
        first, last = t * k // n_chunks, (t + 1) * k // n_chunks
        _add_rows(a[first:last], b[first:last], parts[t])
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
