/* The register-blocked micro-kernel of the vectorized convolution, written
 * once with GCC/Clang vector extensions: one source that each instruction
 * set build compiles to its own vectors (AVX-512: 16 floats, AVX2: 8,
 * baseline SSE2: 4), with no per-instruction-set intrinsics. Its Numba twin
 * (conv_numba.py, ``_conv_image_tiled``) runs the same algorithm on the same
 * layout in plain loops.
 *
 * The algorithm: a stride-1 convolution of one image computed on "wide
 * rows". Output pixel (y, x) is position q = y*Wp + x of the padded input's
 * plane (Hp, Wp), so the window of pixel q at tap (c, i, j) starts at input
 * element q + (c*Hp + i)*Wp + j: a run of consecutive q reads a run of
 * consecutive inputs for every tap, one vector load. Positions with
 * x >= OW (Wp - OW of each row) are computed and never read; that is the
 * price (conv2 of the MNIST CNN: 13 positions a row for 11 pixels).
 *
 * A tile holds FC_TILE_FILTERS filters times FC_TILE_VECTORS vectors of
 * positions in registers (AVX-512: 8 x 3 = 24 of its 32 registers; 16-register
 * sets: 4 x 2) and runs
 * over every tap: per tap, FC_TILE_VECTORS vector loads of input, one
 * broadcast weight per filter, and FILTERS x VECTORS multiply-adds, with no
 * memory traffic for the accumulators.
 *
 * Layouts (T = C*KH*KW taps, F4 = F rounded up to a multiple of
 * FC_TILE_FILTERS, padded with zero filters; 4 below stands for it):
 *   image  (C*Hp*Wp,) plus reads up to FC_LANES_<type> - 1 elements past
 *          its end (the caller guarantees they are readable);
 *   w_rows (F4, T): filter f's weights in row f, (c, i, j) at tap (c*KH + i)*KW + j:
 *          w (F, C, KH, KW) itself when F is a whole number of tiles (a
 *          tile's FC_TILE_FILTERS rows are read side by side, one weight of
 *          each per tap: its filters' weights were once interleaved in a
 *          copy, which cost a batch-1 call 2-4 us for the MNIST CNN's conv2
 *          and was no faster at batch 64);
 *   b4     (F4,) or NULL for no bias;
 *   tap_at (T,): offset of tap (c, i, j), (c*Hp + i)*Wp + j;
 *   out    (F4, row) with row >= n_q rounded up to whole vectors: out[f, q].
 *
 * The backward pass at stride 1 uses the same wide rows (conv_cython.pyx,
 * "gradient planes"): dx is this forward tile run on the output gradient
 * with the filters flipped and transposed, and dw is a second tile,
 * fc_filter_gradient, that holds FC_TILE_FILTERS filters times up to
 * FC_TILE_VECTORS taps of accumulators (each a vector of positions), runs
 * over the positions of a group of images, and sums each accumulator
 * across its lanes once per group.
 *
 * The dense layers' product of one row (batch 1) by a matrix, fc_add_rows,
 * is a smaller tile of the same kind: FC_ROW_VECTORS vectors of columns in
 * registers over a block of the matrix's rows.
 *
 * The Winograd kernels' changes of layout, an image (C, H, W) to its
 * channels-last copy (H', W', C) and back (fc_change_layout), move blocks of
 * FC_LANES channels by FC_LANES pixels, each transposed in registers
 * (fc_transpose) with the same shuffles as the lane sums' folds. Their
 * Numba twins (conv_numba.py, _channels_last and the like) move the same
 * values in blocks of channels one at a time.
 */
#ifndef FASTCONV_CONV_TILE_H
#define FASTCONV_CONV_TILE_H

#include <stddef.h>
#include <string.h>

/* Tile sizes per vector width (a width, not an instruction set: the code is
 * the same), measured on conv2 of the MNIST CNN, one core of an Intel Xeon,
 * in effective GFLOP/s: with 32 registers (AVX-512) 8 filters x 3 vectors
 * (141; 4 x 6 gave 122: twice the vector loads of input, most of them across
 * two cache lines), with 16 registers 4 x 2 (79; 8 x 1 gave 70, and 4 x 3
 * made GCC 12 spill the accumulators, 5x slower). */
#if defined(__AVX512F__)
#define FC_VECTOR_BYTES 64
#define FC_LANES_FLOAT 16
#define FC_LANES_DOUBLE 8
#define FC_TILE_FILTERS 8
#define FC_TILE_VECTORS 3
#elif defined(__AVX__)
#define FC_VECTOR_BYTES 32
#define FC_LANES_FLOAT 8
#define FC_LANES_DOUBLE 4
#define FC_TILE_FILTERS 4
#define FC_TILE_VECTORS 2
#else
#define FC_VECTOR_BYTES 16
#define FC_LANES_FLOAT 4
#define FC_LANES_DOUBLE 2
#define FC_TILE_FILTERS 4
#define FC_TILE_VECTORS 2
#endif

/* The one-row product's accumulators (fc_add_rows): 8 vectors of columns
 * (AVX-512: 128, the MNIST networks' first dense layers whole; AVX2: 64),
 * half or less of the registers. */
#define FC_ROW_VECTORS 8

/* Lane sums by folding (the filter-gradient tile's epilogue): a fold of
 * two vectors a, b whose lanes make blocks of 2h, each block the partial
 * sums of one accumulator, adds each block's halves and interleaves the
 * results: block 2j of the output is a's block j, block 2j + 1 b's, each
 * h lanes. FC_FOLD_AT(l, h) is the lane of (a, b) that lane l of the first
 * addend takes (a's lanes 0..L-1, b's L..2L-1); the second addend takes
 * the lane h further. FC_INDICES lists it for every lane: L (FC_LANES, a
 * literal) constant indices, what __builtin_shufflevector needs (GCC 12
 * and Clang). */
#define FC_FOLD_AT(l, h) \
    ((l) % (2 * (h)) < (h) ? (l) : FC_LANES + (l) - (h))
#define FC_FOLD_HIGH_AT(l, h) (FC_FOLD_AT(l, h) + (h))
#define FC_INDICES_2(M, h) M(0, h), M(1, h)
#define FC_INDICES_4(M, h) FC_INDICES_2(M, h), M(2, h), M(3, h)
#define FC_INDICES_8(M, h) FC_INDICES_4(M, h), M(4, h), M(5, h), M(6, h), M(7, h)
#define FC_INDICES_16(M, h) \
    FC_INDICES_8(M, h), M(8, h), M(9, h), M(10, h), M(11, h), M(12, h), M(13, h), M(14, h), M(15, h)
#define FC_INDICES_OF(lanes, M, h) FC_INDICES_##lanes(M, h)
#define FC_INDICES(lanes, M, h) FC_INDICES_OF(lanes, M, h)
#define FC_FOLD(a, b, h) \
    (__builtin_shufflevector(a, b, FC_INDICES(FC_LANES, FC_FOLD_AT, h)) + \
     __builtin_shufflevector(a, b, FC_INDICES(FC_LANES, FC_FOLD_HIGH_AT, h)))

/* One stage of a transpose in registers (fc_transpose): rows r and r + h,
 * for every r without the bit h, swap their off-diagonal h x h blocks. */
#define FC_SWAP_BLOCKS(rows, h) \
    for (int r = 0; r < FC_LANES; r++) \
        if (!(r & (h))) { \
            FC_VEC a_ = rows[r], b_ = rows[r + (h)]; \
            rows[r] = __builtin_shufflevector(a_, b_, FC_INDICES(FC_LANES, FC_FOLD_AT, h)); \
            rows[r + (h)] = __builtin_shufflevector(a_, b_, FC_INDICES(FC_LANES, FC_FOLD_HIGH_AT, h)); \
        }

#define FC_REAL float
#define FC_VEC fc_vec_float
#define FC_LANES FC_LANES_FLOAT
#define FC_NAME(name) name##_float
#include "conv_tile_body.h"
#undef FC_REAL
#undef FC_VEC
#undef FC_LANES
#undef FC_NAME

#define FC_REAL double
#define FC_VEC fc_vec_double
#define FC_LANES FC_LANES_DOUBLE
#define FC_NAME(name) name##_double
#include "conv_tile_body.h"
#undef FC_REAL
#undef FC_VEC
#undef FC_LANES
#undef FC_NAME

#endif
