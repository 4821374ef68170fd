/* The body of conv_tile.h for one float type (FC_REAL, its vector FC_VEC of
 * FC_LANES elements, names FC_NAME(...)); conv_tile.h includes it once per
 * type. See conv_tile.h for the algorithm and layouts. */

typedef FC_REAL FC_VEC __attribute__((vector_size(FC_VECTOR_BYTES)));

/* One tile: the FC_TILE_FILTERS filters whose rows start at w (filter f's
 * weight for tap t at w[f*n_taps + t]) at positions q0.. of
 * n_vectors vectors (a constant once inlined, so the accumulators live in
 * registers). memcpy is how C loads and stores a vector at any alignment. */
static inline __attribute__((always_inline)) void FC_NAME(fc_tile)(
    const FC_REAL *image, const FC_REAL *w, const FC_REAL *b, const ptrdiff_t *tap_at,
    ptrdiff_t n_taps, FC_REAL *out, ptrdiff_t row, const int n_vectors)
{
    FC_VEC acc[FC_TILE_FILTERS][FC_TILE_VECTORS];
    FC_VEC in[FC_TILE_VECTORS];
    for (int f = 0; f < FC_TILE_FILTERS; f++)
        for (int v = 0; v < n_vectors; v++)
            acc[f][v] = (FC_VEC){0} + (b ? b[f] : (FC_REAL)0);
    for (ptrdiff_t t = 0; t < n_taps; t++) {
        const FC_REAL *window = image + tap_at[t];
        for (int v = 0; v < n_vectors; v++)
            memcpy(&in[v], window + v * FC_LANES, sizeof(FC_VEC));
        for (int f = 0; f < FC_TILE_FILTERS; f++) {
            FC_REAL weight = w[f * n_taps + t];
            for (int v = 0; v < n_vectors; v++)
                acc[f][v] += in[v] * weight;
        }
    }
    for (int f = 0; f < FC_TILE_FILTERS; f++)
        for (int v = 0; v < n_vectors; v++)
            memcpy(out + f * row + v * FC_LANES, &acc[f][v], sizeof(FC_VEC));
}

/* out (F4, row) = the conv of one image at positions q < n_q (see
 * conv_tile.h), bias b4 added unless it is NULL. */
static void FC_NAME(fc_conv_image)(
    const FC_REAL *image, const FC_REAL *w_rows, const FC_REAL *b4, const ptrdiff_t *tap_at,
    ptrdiff_t n_taps, ptrdiff_t n_filt4, ptrdiff_t n_q, FC_REAL *out, ptrdiff_t row)
{
    ptrdiff_t n_vectors = (n_q + FC_LANES - 1) / FC_LANES;
    for (ptrdiff_t f0 = 0; f0 < n_filt4; f0 += FC_TILE_FILTERS) {
        const FC_REAL *w = w_rows + f0 * n_taps;
        const FC_REAL *b = b4 ? b4 + f0 : NULL;
        for (ptrdiff_t v0 = 0; v0 < n_vectors; v0 += FC_TILE_VECTORS) {
            const FC_REAL *at = image + v0 * FC_LANES;
            FC_REAL *o = out + f0 * row + v0 * FC_LANES;
            ptrdiff_t left = n_vectors - v0;
            switch (left < FC_TILE_VECTORS ? left : FC_TILE_VECTORS) {
            case 1: FC_NAME(fc_tile)(at, w, b, tap_at, n_taps, o, row, 1); break;
            case 2: FC_NAME(fc_tile)(at, w, b, tap_at, n_taps, o, row, 2); break;
#if FC_TILE_VECTORS > 2
            case 3: FC_NAME(fc_tile)(at, w, b, tap_at, n_taps, o, row, 3); break;
#endif
            }
        }
    }
}

/* out[f] += the sum of acc[f]'s lanes, for the FC_TILE_FILTERS vectors
 * of acc (which it overwrites). Folds (FC_FOLD) pair the vectors up and
 * halve each accumulator's lanes, log2 FC_LANES times, a vector without a
 * partner paired with zeros; then lane k of vector i holds accumulator
 * i*FC_LANES + (k with its log2 FC_LANES bits reversed), and the numbers
 * past FC_TILE_FILTERS are those zeros. About 3 instructions a fold, 8
 * folds for AVX-512's 8 accumulators of 16 floats, where adding the lanes
 * one by one took 120 additions and as many lane moves: the whole tile
 * ran 10-12% faster (cnn-deep conv2 and conv3, one group, one core). */
static inline __attribute__((always_inline)) void FC_NAME(fc_add_lane_sums)(FC_VEC *acc, FC_REAL *out)
{
    const FC_VEC zero = {0};
    int n = FC_TILE_FILTERS;
#if FC_LANES >= 16
    for (int i = 0; i < (n + 1) / 2; i++)
        acc[i] = FC_FOLD(acc[2 * i], 2 * i + 1 < n ? acc[2 * i + 1] : zero, 8);
    n = (n + 1) / 2;
#endif
#if FC_LANES >= 8
    for (int i = 0; i < (n + 1) / 2; i++)
        acc[i] = FC_FOLD(acc[2 * i], 2 * i + 1 < n ? acc[2 * i + 1] : zero, 4);
    n = (n + 1) / 2;
#endif
#if FC_LANES >= 4
    for (int i = 0; i < (n + 1) / 2; i++)
        acc[i] = FC_FOLD(acc[2 * i], 2 * i + 1 < n ? acc[2 * i + 1] : zero, 2);
    n = (n + 1) / 2;
#endif
    for (int i = 0; i < (n + 1) / 2; i++)
        acc[i] = FC_FOLD(acc[2 * i], 2 * i + 1 < n ? acc[2 * i + 1] : zero, 1);
    n = (n + 1) / 2;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < FC_LANES; k++) {
            int f = i * FC_LANES, rest = k;
            for (int bit = FC_LANES / 2; bit >= 1; bit /= 2, rest >>= 1)
                f += (rest & 1) * bit;
            if (f < FC_TILE_FILTERS)
                out[f] += acc[i][k];
        }
}

/* One filter-gradient tile: the FC_TILE_FILTERS filters of a block times
 * n_taps taps (at most FC_TILE_VECTORS; a constant once inlined), summed
 * over n_images images and n_vectors vectors of wide positions, the
 * accumulators in registers; then each is summed across its lanes into
 * dw (n_taps, FC_TILE_FILTERS). Per vector of positions: n_taps loads of
 * input, one of output gradient per filter (aligned if dy and plane are:
 * a 64-byte load across two cache lines costs two), FILTERS x n_taps
 * multiply-adds. */
static inline __attribute__((always_inline)) void FC_NAME(fc_gradient_tile)(
    const FC_REAL *image, ptrdiff_t image_step, const FC_REAL *dy, ptrdiff_t dy_step, ptrdiff_t plane,
    ptrdiff_t n_images, const ptrdiff_t *tap_at, ptrdiff_t n_vectors, FC_REAL *dw, const int n_taps)
{
    FC_VEC acc[FC_TILE_VECTORS][FC_TILE_FILTERS];
    FC_VEC in[FC_TILE_VECTORS];
    FC_VEC grad;
    for (int t = 0; t < n_taps; t++)
        for (int f = 0; f < FC_TILE_FILTERS; f++)
            acc[t][f] = (FC_VEC){0};
    for (ptrdiff_t k = 0; k < n_images; k++) {
        const FC_REAL *x = image + k * image_step;
        const FC_REAL *g = dy + k * dy_step;
        for (ptrdiff_t v = 0; v < n_vectors; v++) {
            for (int t = 0; t < n_taps; t++)
                memcpy(&in[t], x + tap_at[t] + v * FC_LANES, sizeof(FC_VEC));
            for (int f = 0; f < FC_TILE_FILTERS; f++) {
                memcpy(&grad, g + f * plane + v * FC_LANES, sizeof(FC_VEC));
                /* grad in a register for its n_taps multiply-adds: GCC 12
                 * otherwise read it from memory in each of them, and the
                 * tile ran at half speed, bound by loads */
                __asm__("" : "+v"(grad));
                for (int t = 0; t < n_taps; t++)
                    acc[t][f] += in[t] * grad;
            }
        }
    }
    for (int t = 0; t < n_taps; t++)
        FC_NAME(fc_add_lane_sums)(acc[t], dw + t * FC_TILE_FILTERS);
}

/* dw4 (F4 / FC_TILE_FILTERS, T, FC_TILE_FILTERS) += the filter gradient of
 * n_images images, image k at image + k*image_step (C*Hp*Wp,), its output
 * gradient in wide rows at dy + k*dy_step: filter f's at position q is
 * element f*plane + q, zero at every q >= n_q rounded up to whole vectors
 * and wherever x >= OW (see conv_tile.h). */
static void FC_NAME(fc_filter_gradient)(
    const FC_REAL *image, ptrdiff_t image_step, const FC_REAL *dy, ptrdiff_t dy_step, ptrdiff_t plane,
    ptrdiff_t n_images, const ptrdiff_t *tap_at, ptrdiff_t n_taps, ptrdiff_t n_filt4, ptrdiff_t n_q,
    FC_REAL *dw4)
{
    ptrdiff_t n_vectors = (n_q + FC_LANES - 1) / FC_LANES;
    for (ptrdiff_t f0 = 0; f0 < n_filt4; f0 += FC_TILE_FILTERS) {
        const FC_REAL *g = dy + f0 * plane;
        for (ptrdiff_t t0 = 0; t0 < n_taps; t0 += FC_TILE_VECTORS) {
            FC_REAL *d = dw4 + (f0 * n_taps + t0 * FC_TILE_FILTERS);
            ptrdiff_t left = n_taps - t0;
            switch (left < FC_TILE_VECTORS ? left : FC_TILE_VECTORS) {
            case 1: FC_NAME(fc_gradient_tile)(image, image_step, g, dy_step, plane, n_images, tap_at + t0,
                                              n_vectors, d, 1); break;
            case 2: FC_NAME(fc_gradient_tile)(image, image_step, g, dy_step, plane, n_images, tap_at + t0,
                                              n_vectors, d, 2); break;
#if FC_TILE_VECTORS > 2
            case 3: FC_NAME(fc_gradient_tile)(image, image_step, g, dy_step, plane, n_images, tap_at + t0,
                                              n_vectors, d, 3); break;
#endif
            }
        }
    }
}

/* The dense layers' one-row product (conv_cython.pyx, row_product): out
 * (FC_ROW_VECTORS * n_vectors * FC_LANES columns) = the sum over r <
 * n_rows of x[r] times row r of w (rows n apart), the columns' sums in
 * registers over every row: per row, n_vectors loads and multiply-adds. */
static inline __attribute__((always_inline)) void FC_NAME(fc_row_block)(
    const FC_REAL *x, const FC_REAL *w, ptrdiff_t n_rows, ptrdiff_t n, FC_REAL *out, const int n_vectors)
{
    FC_VEC acc[FC_ROW_VECTORS];
    FC_VEC row;
    for (int v = 0; v < n_vectors; v++)
        acc[v] = (FC_VEC){0};
    for (ptrdiff_t r = 0; r < n_rows; r++)
        for (int v = 0; v < n_vectors; v++) {
            memcpy(&row, w + r * n + v * FC_LANES, sizeof(FC_VEC));
            acc[v] += row * x[r];
        }
    for (int v = 0; v < n_vectors; v++)
        memcpy(out + v * FC_LANES, &acc[v], sizeof(FC_VEC));
}

/* out (n,) = the sum over r < n_rows of x[r] * w[r*n : (r + 1)*n]: the
 * columns in blocks of FC_ROW_VECTORS vectors, then of one vector, then
 * one at a time. */
static void FC_NAME(fc_add_rows)(const FC_REAL *x, const FC_REAL *w, ptrdiff_t n_rows, ptrdiff_t n, FC_REAL *out)
{
    ptrdiff_t j = 0;
    for (; j + FC_ROW_VECTORS * FC_LANES <= n; j += FC_ROW_VECTORS * FC_LANES)
        FC_NAME(fc_row_block)(x, w + j, n_rows, n, out + j, FC_ROW_VECTORS);
    for (; j + FC_LANES <= n; j += FC_LANES)
        FC_NAME(fc_row_block)(x, w + j, n_rows, n, out + j, 1);
    for (; j < n; j++) {
        FC_REAL sum = 0;
        for (ptrdiff_t r = 0; r < n_rows; r++)
            sum += x[r] * w[r * n + j];
        out[j] = sum;
    }
}

/* rows[i] lane j <-> rows[j] lane i: FC_LANES vectors transposed in
 * registers. Each stage swaps the off-diagonal h x h blocks of every
 * 2h x 2h block, two rows at a time, with the fold's shuffles
 * (conv_tile.h): FC_FOLD_AT keeps a's lane where its block stays and takes
 * b's, h lanes back, where it moves; FC_FOLD_HIGH_AT the other way. */
static inline __attribute__((always_inline)) void FC_NAME(fc_transpose)(FC_VEC *rows)
{
#if FC_LANES >= 16
    FC_SWAP_BLOCKS(rows, 8)
#endif
#if FC_LANES >= 8
    FC_SWAP_BLOCKS(rows, 4)
#endif
#if FC_LANES >= 4
    FC_SWAP_BLOCKS(rows, 2)
#endif
    FC_SWAP_BLOCKS(rows, 1)
}

/* The Winograd kernels' change of layout between an image (C, H, W) and
 * its channels-last copy hwc (H', W', C), pixel (y, x) of the image at
 * (top + y, left + x) of hwc: hwc from the image (to_hwc), or the image
 * from hwc, plus bias[c] on channel c unless bias is NULL. In blocks of
 * FC_LANES channels by FC_LANES pixels of the image's flattened plane (a
 * run across its rows), each a vector load per channel, a transpose in
 * registers and a vector store per pixel (or the other way round); the
 * pixels past the last whole block, and every pixel of a last block of
 * fewer channels, one value at a time. One value at a time throughout,
 * the copy in and the way back took about 6.5% of cnn-deep's fused block
 * 2 backward pass (batch 64). */
static void FC_NAME(fc_change_layout)(
    FC_REAL *image, ptrdiff_t n_chan, ptrdiff_t height, ptrdiff_t width, FC_REAL *hwc,
    ptrdiff_t hwc_width, ptrdiff_t top, ptrdiff_t left, int to_hwc, const FC_REAL *bias)
{
    ptrdiff_t plane = height * width;
    for (ptrdiff_t c0 = 0; c0 < n_chan; c0 += FC_LANES) {
        ptrdiff_t n_block = n_chan - c0 < FC_LANES ? n_chan - c0 : FC_LANES;
        FC_REAL *channels = image + c0 * plane;
        ptrdiff_t p = 0, y = 0, x = 0;
        for (; n_block == FC_LANES && p + FC_LANES <= plane; p += FC_LANES) {
            FC_VEC rows[FC_LANES];
            ptrdiff_t at[FC_LANES];
            for (int j = 0; j < FC_LANES; j++) {
                at[j] = ((top + y) * hwc_width + left + x) * n_chan + c0;
                if (++x == width) {
                    x = 0;
                    y++;
                }
            }
            if (to_hwc) {
                for (int i = 0; i < FC_LANES; i++)
                    memcpy(&rows[i], channels + i * plane + p, sizeof(FC_VEC));
                FC_NAME(fc_transpose)(rows);
                for (int j = 0; j < FC_LANES; j++)
                    memcpy(hwc + at[j], &rows[j], sizeof(FC_VEC));
            } else {
                for (int j = 0; j < FC_LANES; j++)
                    memcpy(&rows[j], hwc + at[j], sizeof(FC_VEC));
                FC_NAME(fc_transpose)(rows);
                for (int i = 0; i < FC_LANES; i++) {
                    if (bias)
                        rows[i] += bias[c0 + i];
                    memcpy(channels + i * plane + p, &rows[i], sizeof(FC_VEC));
                }
            }
        }
        for (; p < plane; p++) {
            FC_REAL *pixel = hwc + ((top + y) * hwc_width + left + x) * n_chan + c0;
            for (ptrdiff_t i = 0; i < n_block; i++) {
                if (to_hwc)
                    pixel[i] = channels[i * plane + p];
                else
                    channels[i * plane + p] = bias ? pixel[i] + bias[c0 + i] : pixel[i];
            }
            if (++x == width) {
                x = 0;
                y++;
            }
        }
    }
}
