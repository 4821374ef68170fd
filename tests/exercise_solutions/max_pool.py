"""Exercise 3, solved."""
import numpy as np


def max_pool2d(x, kernel_size, stride=None, padding=0):
    k, s = kernel_size, kernel_size if stride is None else stride
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    y = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for n, c, i, j in np.ndindex(y.shape):
        y[n, c, i, j] = xp[n, c, i * s:i * s + k, j * s:j * s + k].max()
    return y


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    k, s, p = kernel_size, kernel_size if stride is None else stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    dxp = np.zeros(xp.shape, dtype=np.result_type(dy, x))
    for n, c, i, j in np.ndindex(dy.shape):
        at = np.argmax(xp[n, c, i * s:i * s + k, j * s:j * s + k])
        dxp[n, c, i * s + at // k, j * s + at % k] += dy[n, c, i, j]
    return dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]]
