"""Exercise 5, solved."""
import numpy as np


def im2col(x, kh, kw, stride=1, padding=0):
    n, c, h, wd = x.shape
    s = stride
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - kh) // s + 1, (wd + 2 * padding - kw) // s + 1
    cols = np.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for ch in range(c):
        for p in range(kh):
            for q in range(kw):
                cols[(ch * kh + p) * kw + q] = xp[:, ch, p:p + s * oh:s, q:q + s * ow:s].ravel()
    return cols


def conv2d(x, w, b=None, stride=1, padding=0):
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = w.reshape(f, -1) @ im2col(x, kh, kw, stride, padding)
    y = y.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)
    if b is not None:
        y = y + b.reshape(1, f, 1, 1)
    return np.ascontiguousarray(y, dtype=np.result_type(x, w))
