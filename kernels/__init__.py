"""Compiled kernels (installed as ``fastconv.kernels``). Call them through
:mod:`fastconv.ops`, which validates, pads and allocates; kernels trust their
input and run with bounds checks off.

The contract every backend module implements. All arrays are C-contiguous
and of one float dtype (float32 or float64); ``xp`` is the input *already
padded* by the caller (zeros for conv and avg-pool, -inf for max-pool), so
kernels never see padding (Winograd's may take it themselves: see below);
``sh, sw`` are the strides (>= 1) and ``OH = (Hp - KH) // sh + 1``,
``OW = (Wp - KW) // sw + 1``.

``conv_<backend>`` exports ``KERNELS = {(op, algorithm): fn}`` with

    conv2d(xp, w, b, sh, sw, out)
        xp (N, C, Hp, Wp), w (F, C, KH, KW), b (F,); writes out (N, F, OH, OW)
        (arrives uninitialised).
    conv2d_backward(dy, xp, w, sh, sw, dxp, dw)
        dy (N, F, OH, OW); accumulates dxp (N, C, Hp, Wp) and dw (F, C, KH, KW),
        which arrive zero-filled. dxp may be None: then dx is not wanted and
        the kernel skips all of its work. (db = dy summed over N, OH, OW is
        the caller's.)

Winograd's conv and fused kernels (``fastconv.op_table.PADDING_ALGORITHMS``)
also take the keyword ``padding=(ph, pw)``, default (0, 0): given it, ``xp``
is the unpadded x (N, C, H, W), the kernel places it inside the zero border
itself, and ``dxp`` is the unpadded dx (N, C, H, W). Their backward passes
write dxp whole (it may arrive uninitialised) rather than accumulate.

``im2col_<backend>`` exports the unfold pair that :mod:`.unfold` builds every
op's im2col algorithm from:

    im2col(xp, kh, kw, sh, sw, cols)
        writes cols (C*KH*KW, N*OH*OW): cols[(c*KH + i)*KW + j, (n*OH + y)*OW + x]
        = xp[n, c, y*sh + i, x*sw + j].
    col2im(cols, kh, kw, sh, sw, dxp)
        the adjoint: adds each cols entry into the dxp (N, C, Hp, Wp) position
        it was read from (dxp arrives zero-filled).

``pool_<backend>`` exports ``KERNELS`` with, for ``max_pool2d`` and ``avg_pool2d``,

    <op>(xp, kh, kw, sh, sw, out)                 xp (N, C, Hp, Wp) -> out (N, C, OH, OW)
    <op>_backward(dy, xp, kh, kw, sh, sw, dxp)    accumulates into zero-filled dxp

``conv_<backend>`` also exports the fused conv -> ReLU -> max-pool pair
(pool windows PKH x PKW at strides PSH, PSW over the conv output, no pool
padding):

    conv2d_relu_maxpool2d(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code)
        writes out (N, F, PH, PW) = max_pool(relu(conv2d(xp, w, b))) and
        code (N, F, PH, PW) uint8: the row-major offset i*PKW + j in its pool
        window of the conv output that gets the pooled pixel's gradient (the
        window's first maximum), or NO_GRADIENT where the ReLU cut it (the
        maximum was <= 0, or NaN). The full conv output is never stored.
    conv2d_relu_maxpool2d_backward(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db)
        dy (N, F, PH, PW); accumulates dxp (may be None) and dw as
        conv2d_backward does, for the conv gradient that code routes dy to,
        and db (F,), zero-filled, += that gradient summed per filter (the
        kernel reads dy and code anyway; a NumPy pass for it cost 0.14-0.22
        ms at conv1's shape, batch 64).

``conv_<backend>`` also exports the dense layers' matrix products (called
by :mod:`fastconv.products`, ``product`` with BLAS limited to one thread):

    product(a, b, out, n_chunks)
        writes out (M, N) = a (M, K) @ b (K, N), a and b each C- or
        F-contiguous, out C-contiguous, n_chunks threads each computing a
        block of rows or of columns of out, or, where K is at least twice
        M and N, the product of a block of K (the parts then added).
    row_product(a, b, parts, out, n_chunks)
        writes out (N,) = a (K,) @ b (K, N), b C-contiguous (a dense
        layer's product at batch 1): n_chunks threads each write the sum
        of a block of b's rows, weighted by a, into their row of parts
        (n_chunks, N), which arrives uninitialised; out is their sum.

``layout_<backend>`` exports the copies :mod:`fastconv.ops` pads and crops
with (x (N, C, H, W), xp (N, C, H + 2*ph, W + 2*pw), each C-contiguous;
the planes shared out between n_chunks threads):

    pad(x, value, xp, n_chunks)     writes xp = x inside a border of value
    crop(xp, x, n_chunks)           writes x = the interior of xp

``activation_<backend>`` exports the ReLU :func:`fastconv.ops.relu` and
:func:`fastconv.ops.relu_backward` run (every array flat, C-contiguous, of
one float dtype; runs of values shared out between n_chunks threads):

    relu(x, y, n_chunks)                    writes y = max(x, 0), NaN kept
    relu_backward(dy, y, dx, n_chunks)      writes dx = dy * (y > 0)

``norm_<backend>`` exports ``KERNELS`` with batch normalisation, each
channel c over its N*M values, x viewed as (N, C, M) (M = H*W; 1 for
features (N, C)); gamma, beta, mean, var, dgamma, dbeta (C,):

    batch_norm(x, gamma, beta, mean, var, eps, training, y)
        writes y (N, C, M) = (x - mean[c]) * gamma[c] / sqrt(var[c] + eps) + beta[c]
        (arrives uninitialised). In training the kernel first writes the
        batch's mean and biased variance (divided by N*M) into mean and
        var; otherwise it reads them (the running statistics).
    batch_norm_backward(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta)
        for a training forward that wrote mean and var: writes dbeta (sum
        of dy), dgamma (sum of dy * xhat) and dx (N, C, M), which arrives
        uninitialised; dx may be None: then the kernel skips its work.

    Sums run in float64 whatever the dtype, and everything after them
    reads mean and var as stored, so forward and backward use one
    1 / sqrt(var + eps).

Max-pool routes each gradient to the first maximum of its window in row-major
order (as PyTorch); avg-pool divides by KH*KW (padded zeros count).
"""

NO_GRADIENT = 255
"""The code of a pooled pixel that passes no gradient back (see above)."""
