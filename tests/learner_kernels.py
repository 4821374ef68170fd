"""Kernels written as a learner writes them: plain loops over NumPy
slices, with the learner-facing signatures of fastconv-check. Called with
``mistake=None`` they are correct; ``mistake="<key>"`` plants one of the
common mistakes of fastconv.mistakes at the place a learner makes it, so
that the tests can check each is diagnosed as itself.
"""
import numpy as np

NO_GRADIENT = 255


def _pad(x, p, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=value)


def _size(size, k, s, p, mistake=None):
    return (size + 2 * p - k) // s + (0 if mistake == "off_by_one" else 1)


def _geometry(stride, padding, mistake):
    return (1 if mistake == "stride_ignored" else stride), (0 if mistake == "padding_ignored" else padding)


def conv2d(x, w, b=None, stride=1, padding=0, *, mistake=None):
    s, p = _geometry(stride, padding, mistake)
    n_img, n_chan, h, wd = x.shape
    n_filt, _, kh, kw = w.shape
    xp = _pad(x, p)
    oh, ow = _size(h, kh, s, p, mistake), _size(wd, kw, s, p, mistake)
    out = np.zeros((n_img, n_filt, oh, ow), dtype=x.dtype)
    for n in range(n_img):
        for f in range(n_filt):
            for y in range(oh):
                for z in range(ow):
                    total = 0.0
                    for c in range(n_chan):
                        window = xp[n, c, y * s:y * s + kh, z * s:z * s + kw]
                        if mistake == "flipped_filter":
                            weights = w[f, c, ::-1, ::-1]
                        elif mistake == "channels_swapped":
                            weights = w[c, f]
                        else:
                            weights = w[f, c]
                        if mistake == "channel_sum_missing":
                            total = np.sum(window * weights)
                        else:
                            total += np.sum(window * weights)
                        if mistake == "bias_per_pixel" and b is not None:
                            total += b[f] * kh * kw
                    if b is not None and mistake not in ("bias_forgotten", "bias_per_pixel"):
                        total += b[f]
                    out[n, f, y, z] = total
    if mistake == "input_modified":
        x[...] = 0
    return out


def conv2d_backward(dy, x, w, stride=1, padding=0, *, mistake=None):
    s = 1 if mistake == "stride_ignored" else stride
    p = padding
    n_img, n_chan, h, wd = x.shape
    n_filt, _, kh, kw = w.shape
    xp = _pad(x, p)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n in range(n_img):
        dw_image = np.zeros_like(w)
        for f in range(n_filt):
            for y in range(dy.shape[2]):
                for z in range(dy.shape[3]):
                    g = dy[n, f, y, z]
                    window = xp[n, :, y * s:y * s + kh, z * s:z * s + kw]
                    weights = w[f, :, ::-1, ::-1] if mistake == "flipped_filter" else w[f]
                    dw_image[f] += g * window
                    if mistake == "channel_sum_missing":
                        if f == n_filt - 1:
                            dxp[n, :, y * s:y * s + kh, z * s:z * s + kw] += g * weights
                    else:
                        dxp[n, :, y * s:y * s + kh, z * s:z * s + kw] += g * weights
        if mistake == "overwritten":
            dw = dw_image
        else:
            dw += dw_image
    if mistake == "flipped_filter":
        dw = dw[:, :, ::-1, ::-1]
    db = dy.sum(axis=(0, 2, 3))
    if mistake == "averaged":
        dw, db = dw / n_img, db / n_img
    if mistake == "overwritten":
        db = dy[-1].sum(axis=(1, 2))
    if mistake == "bias_forgotten":
        db = np.zeros_like(db)
    if mistake == "channels_swapped":
        dw = dw.transpose(1, 0, 2, 3)
    dx = dxp if mistake == "padding_ignored" or p == 0 else dxp[:, :, p:-p, p:-p]
    if mistake == "input_modified":
        dy *= 2
    return dx, dw, db


def _pool_windows(x, kernel_size, stride, padding, pad_value, mistake):
    """(xp, s, oh, ow) as a learner computes them."""
    s = kernel_size if stride is None else stride
    s, p = _geometry(s, padding, mistake)
    xp = _pad(x, p, 0.0 if mistake == "max_padded_with_zeros" else pad_value)
    oh, ow = _size(x.shape[2], kernel_size, s, p, mistake), _size(x.shape[3], kernel_size, s, p, mistake)
    return xp, s, oh, ow


def max_pool2d(x, kernel_size, stride=None, padding=0, *, mistake=None):
    k = kernel_size
    xp, s, oh, ow = _pool_windows(x, k, stride, padding, -np.inf, mistake)
    n_img, n_chan = x.shape[:2]
    out = np.zeros((n_chan, n_img, oh, ow) if mistake == "channels_swapped" else (n_img, n_chan, oh, ow),
                   dtype=x.dtype)
    for n in range(n_img):
        for c in range(n_chan):
            for y in range(oh):
                for z in range(ow):
                    value = xp[n, c, y * s:y * s + k, z * s:z * s + k].max()
                    if mistake == "channels_swapped":
                        out[c, n, y, z] = value
                    else:
                        out[n, c, y, z] = value
    if mistake == "input_modified":
        x[x < 0] = 0
    return out


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, *, mistake=None):
    k = kernel_size
    s = k if stride is None else stride
    s = 1 if mistake == "stride_ignored" else s
    p = padding
    xp = _pad(x, p, 0.0 if mistake == "max_padded_with_zeros" else -np.inf)
    dxp = np.zeros(xp.shape, dtype=np.result_type(dy, x))
    for n, c, y, z in np.ndindex(dy.shape):
        window = xp[n, c, y * s:y * s + k, z * s:z * s + k]
        if mistake == "ties_to_all":
            dxp[n, c, y * s:y * s + k, z * s:z * s + k] += dy[n, c, y, z] * (window == window.max())
            continue
        best = None
        for i in range(k):
            for j in range(k):
                better = window[i, j] >= window.max() if mistake == "ties_to_last" else window[i, j] == window.max()
                if better and (best is None or mistake == "ties_to_last"):
                    best = (i, j)
        if mistake == "overwritten":
            dxp[n, c, y * s + best[0], z * s + best[1]] = dy[n, c, y, z]
        else:
            dxp[n, c, y * s + best[0], z * s + best[1]] += dy[n, c, y, z]
    dx = dxp if mistake == "padding_ignored" or p == 0 else dxp[:, :, p:-p, p:-p]
    if mistake == "channels_swapped":
        dx = dx.transpose(1, 0, 2, 3)
    if mistake == "input_modified":
        x -= x.max()
    return dx


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, mistake=None):
    k = kernel_size
    xp, s, oh, ow = _pool_windows(x, k, stride, padding, 0.0, mistake)
    n_img, n_chan = x.shape[:2]
    out = np.zeros((n_img, n_chan, oh, ow), dtype=x.dtype)
    ones = _pad(np.ones_like(x), padding)
    for n in range(n_img):
        for c in range(n_chan):
            for y in range(oh):
                for z in range(ow):
                    window = xp[n, c, y * s:y * s + k, z * s:z * s + k]
                    if mistake == "avg_divisor":
                        out[n, c, y, z] = window.sum() / ones[n, c, y * s:y * s + k, z * s:z * s + k].sum()
                    else:
                        out[n, c, y, z] = window.mean()
    if mistake == "channels_swapped":
        out = np.ascontiguousarray(out.transpose(1, 0, 2, 3))
    if mistake == "input_modified":
        x /= k * k
    return out


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, *, mistake=None):
    k = kernel_size
    s = k if stride is None else stride
    s = 1 if mistake == "stride_ignored" else s
    p = padding
    dxp = np.zeros(_pad(x, p).shape, dtype=np.result_type(dy, x))
    for n, c, y, z in np.ndindex(dy.shape):
        share = dy[n, c, y, z] if mistake == "avg_divisor" else dy[n, c, y, z] / (k * k)
        if mistake == "overwritten":
            dxp[n, c, y * s:y * s + k, z * s:z * s + k] = share
        else:
            dxp[n, c, y * s:y * s + k, z * s:z * s + k] += share
    dx = dxp if mistake == "padding_ignored" or p == 0 else dxp[:, :, p:-p, p:-p]
    if mistake == "channels_swapped":
        dx = np.ascontiguousarray(dx.transpose(1, 0, 2, 3))
    if mistake == "input_modified":
        dy[...] = 0
    return dx


def conv2d_relu_maxpool2d(x, w, b=None, stride=1, padding=0, pool_size=2, pool_stride=None, *, mistake=None):
    conv_mistake = mistake if mistake not in ("ties_to_last", "relu_missing", "off_by_one", "input_modified",
                                              "channels_swapped") else None
    if mistake == "channels_swapped" and w.shape[0] == w.shape[1]:
        conv_mistake = mistake
    conv = conv2d(x, w, b, stride, padding, mistake=conv_mistake)
    relu = conv if mistake == "relu_missing" else np.maximum(conv, 0)
    k = pool_size
    s = k if pool_stride is None else pool_stride
    n_img, n_filt, oh, ow = relu.shape
    ph, pw = _size(oh, k, s, 0, mistake), _size(ow, k, s, 0, mistake)
    y = np.zeros((n_img, n_filt, ph, pw), dtype=relu.dtype)
    code = np.zeros((n_img, n_filt, ph, pw), dtype=np.uint8)
    for n, f, i, j in np.ndindex(y.shape):
        window = relu[n, f, i * s:i * s + k, j * s:j * s + k].ravel()
        at = len(window) - 1 - int(np.argmax(window[::-1])) if mistake == "ties_to_last" else int(np.argmax(window))
        y[n, f, i, j] = window[at]
        code[n, f, i, j] = at if (window[at] > 0 or mistake == "relu_missing") else NO_GRADIENT
    if mistake == "input_modified":
        np.maximum(x, 0, out=x)
    return y, code


def conv2d_relu_maxpool2d_backward(dy, code, x, w, stride=1, padding=0, pool_size=2, pool_stride=None, *,
                                   mistake=None):
    k = pool_size
    s = k if pool_stride is None else pool_stride
    oh = _size(x.shape[2], w.shape[2], stride, padding)
    ow = _size(x.shape[3], w.shape[3], stride, padding)
    dconv = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=np.result_type(dy, x, w))
    for n, f, i, j in np.ndindex(dy.shape):
        if code[n, f, i, j] != NO_GRADIENT:
            r, c = divmod(int(code[n, f, i, j]), k)
            dconv[n, f, i * s + r, j * s + c] += dy[n, f, i, j]
    dx, dw, db = conv2d_backward(dconv, x, w, stride, padding,
                                 mistake=None if mistake == "input_modified" else mistake)
    if mistake == "input_modified":
        code[...] = 0
    return dx, dw, db


def out_size(size, kernel, stride=1, padding=0, *, mistake=None):
    if mistake == "true_division":
        return (size + 2 * padding - kernel) / stride + 1
    s, p = _geometry(stride, padding, mistake)
    return _size(size, kernel, s, p, mistake)


def im2col(x, kh, kw, stride=1, padding=0, *, mistake=None):
    s, p = _geometry(stride, padding, mistake)
    n_img, n_chan, h, wd = x.shape
    xp = _pad(x, p)
    oh, ow = _size(h, kh, s, p, mistake), _size(wd, kw, s, p, mistake)
    cols = np.zeros((n_chan * kh * kw, n_img * oh * ow), dtype=x.dtype)
    for c in range(n_chan):
        for i in range(kh):
            for j in range(kw):
                row = (i * kw + j) * n_chan + c if mistake == "channels_swapped" else (c * kh + i) * kw + j
                for n in range(n_img):
                    for y in range(oh):
                        for z in range(ow):
                            cols[row, (n * oh + y) * ow + z] = xp[n, c, y * s + i, z * s + j]
    if mistake == "input_modified":
        x += 1
    return cols
