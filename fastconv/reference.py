"""Plain NumPy reference for every op: the oracle all kernels are checked against.

Written for clarity, not speed: each op is a loop over the kernel offsets
(conv) or an explicit window view (pool). Inputs are already validated and
padded by :mod:`fastconv.ops`; shapes follow the kernel contract in
:mod:`fastconv.kernels`.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastconv.kernels import NO_GRADIENT


def _window(xp, kh, kw, sh, sw, oh, ow):
    """Views ``xp[:, :, i + sh*y, j + sw*x]`` for each kernel offset (i, j):
    yields ``(i, j, view)`` with view of shape (N, C, OH, OW)."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def conv2d_forward(xp, w, b, sh, sw, out):
    """out[n, f, y, x] = b[f] + sum_{c,i,j} w[f, c, i, j] * xp[n, c, y*sh + i, x*sw + j]

    xp (N, C, Hp, Wp), w (F, C, KH, KW), b (F,), out (N, F, OH, OW).
    """
    _, _, oh, ow = out.shape
    kh, kw = w.shape[2:]
    out[...] = b[None, :, None, None]
    for i, j, view in _window(xp, kh, kw, sh, sw, oh, ow):
        out += np.einsum("nchw,fc->nfhw", view, w[:, :, i, j])


def conv2d_backward(dy, xp, w, sh, sw, dxp, dw):
    """dw[f, c, i, j] = sum_{n,y,x} dy[n, f, y, x] * xp[n, c, y*sh + i, x*sw + j];
    dxp[n, c, y*sh + i, x*sw + j] += sum_f dy[n, f, y, x] * w[f, c, i, j].

    dy (N, F, OH, OW); dxp (N, C, Hp, Wp) and dw (F, C, KH, KW) arrive zeroed;
    dxp None skips dx.
    """
    _, _, oh, ow = dy.shape
    kh, kw = w.shape[2:]
    for i, j, view in _window(xp, kh, kw, sh, sw, oh, ow):
        dw[:, :, i, j] = np.einsum("nfhw,nchw->fc", dy, view)
    if dxp is None:
        return
    for i, j, view in _window(dxp, kh, kw, sh, sw, oh, ow):
        view += np.einsum("nfhw,fc->nchw", dy, w[:, :, i, j])


def _pool_windows(xp, kh, kw, sh, sw):
    """(N, C, OH, OW, KH*KW) view of every pooling window, row-major inside."""
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return windows.reshape(windows.shape[:4] + (kh * kw,))


def max_pool2d_forward(xp, kh, kw, sh, sw, out):
    """out[n, c, y, x] = max of the KHxKW window at (y*sh, x*sw) of xp."""
    out[...] = _pool_windows(xp, kh, kw, sh, sw).max(axis=-1)


def max_pool2d_backward(dy, xp, kh, kw, sh, sw, dxp):
    """Route each dy to its window's first maximum (row-major), accumulating
    where windows overlap. dxp (N, C, Hp, Wp) arrives zeroed."""
    first_max = _pool_windows(xp, kh, kw, sh, sw).argmax(axis=-1)
    n, c, y, x = np.indices(dy.shape)
    rows = y * sh + first_max // kw
    cols = x * sw + first_max % kw
    np.add.at(dxp, (n, c, rows, cols), dy)


def avg_pool2d_forward(xp, kh, kw, sh, sw, out):
    """out[n, c, y, x] = mean of the KHxKW window at (y*sh, x*sw) of xp
    (padded zeros count, as PyTorch's count_include_pad=True)."""
    out[...] = _pool_windows(xp, kh, kw, sh, sw).mean(axis=-1)


def avg_pool2d_backward(dy, xp, kh, kw, sh, sw, dxp):
    """Spread each dy evenly over its window. dxp arrives zeroed."""
    _, _, oh, ow = dy.shape
    share = dy / (kh * kw)
    for _, _, view in _window(dxp, kh, kw, sh, sw, oh, ow):
        view += share


def _conv_out(xp, w, sh, sw):
    """conv2d_forward's output without bias, allocated: (N, F, OH, OW)."""
    kh, kw = w.shape[2:]
    shape = (xp.shape[0], w.shape[0], (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1)
    return np.empty(shape, xp.dtype)


def conv2d_relu_maxpool2d_forward(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code):
    """The unfused chain: conv2d_forward, ReLU, max pooling; code[n, f, y, x]
    is the offset of the window's first maximum, or NO_GRADIENT where the
    pooled value is not > 0 (the ReLU passes no gradient there)."""
    conv = _conv_out(xp, w, sh, sw)
    conv2d_forward(xp, w, b, sh, sw, conv)
    windows = _pool_windows(conv, pkh, pkw, psh, psw)
    out[...] = np.maximum(windows, 0).max(axis=-1)
    code[...] = np.where(out > 0, windows.argmax(axis=-1), NO_GRADIENT)


def conv2d_relu_maxpool2d_backward(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db):
    """Each dy back at the conv output its code names (none for
    NO_GRADIENT), then conv2d_backward; db is that gradient summed."""
    dconv = np.zeros_like(_conv_out(xp, w, sh, sw))
    n, f, y, x = np.nonzero(code != NO_GRADIENT)
    at = code[n, f, y, x].astype(np.intp)
    np.add.at(dconv, (n, f, y * psh + at // pkw, x * psw + at % pkw), dy[n, f, y, x])
    conv2d_backward(dconv, xp, w, sh, sw, dxp, dw)
    db += dconv.sum(axis=(0, 2, 3))


def batch_norm_forward(x, gamma, beta, mean, var, eps, training, y):
    """y = gamma[c] * (x - mean[c]) / sqrt(var[c] + eps) + beta[c] per channel c.

    x, y (N, C, M); gamma, beta, mean, var (C,). In training mean and var
    are first set to the batch's: over the N*M values of each channel, the
    variance biased (divided by N*M), the squares summed about the mean as
    stored. Statistics and scale in float64, as the kernels compute them.
    """
    if training:
        mean[...] = x.mean(axis=(0, 2), dtype=np.float64)
        centred = x - mean[:, None].astype(np.float64)
        var[...] = np.einsum("nci,nci->c", centred, centred) / (x.shape[0] * x.shape[2])
    inv_std = 1 / np.sqrt(var.astype(np.float64) + eps)
    y[...] = (x - mean[:, None]) * (gamma * inv_std).astype(x.dtype)[:, None] + beta[:, None]


def batch_norm_backward(dy, x, gamma, mean, var, eps, dx, dgamma, dbeta):
    """Gradients of a training :func:`batch_norm_forward` whose statistics
    were mean and var: with xhat = (x - mean) * inv_std over each channel's
    N*M values, dbeta = sum dy, dgamma = sum dy * xhat and (unless dx is
    None) dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)):
    the batch mean and variance depend on every input of the channel too.
    In float64, cast to the dtype at the end."""
    count = x.shape[0] * x.shape[2]
    inv_std = 1 / np.sqrt(var.astype(np.float64) + eps)
    xhat = (x - mean[:, None].astype(np.float64)) * inv_std[:, None]
    dy = dy.astype(np.float64)
    sum_dy, sum_dy_xhat = dy.sum(axis=(0, 2)), np.einsum("nci,nci->c", dy, xhat)
    dbeta[...], dgamma[...] = sum_dy, sum_dy_xhat
    if dx is not None:
        dx[...] = (gamma * inv_std)[:, None] * (dy - (sum_dy / count)[:, None]
                                                 - xhat * (sum_dy_xhat / count)[:, None])
