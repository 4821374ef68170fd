"""Exercise 3: max pooling, forward and backward.

Write ``max_pool2d(x, kernel_size, stride=None, padding=0)``, the maximum
of each kernel_size x kernel_size window, and
``max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0)``, its
gradient: each dy goes back to the input pixel that was the maximum.

Shapes:
    x  (N, C, H, W); stride None means stride = kernel_size (windows side
    by side); padding adds -inf on each side (at most kernel_size // 2)
    max_pool2d returns y (N, C, OH, OW), OH = (H + 2*padding - kernel_size) // stride + 1
    dy (N, C, OH, OW): the gradient of y
    max_pool2d_backward returns dx (N, C, H, W)

Hint: forward, loop over n, c, i, j and take window.max(). Backward, find
the same window's maximum again (np.argmax of the flattened window gives
the FIRST maximum in row-major order, the convention when several pixels
tie) and add dy there: add (+=), because overlapping windows (stride <
kernel_size) can pick the same pixel. Pad with -np.inf, never zeros, and
cut the padding off dx at the end.

Grade it with:
    fastconv-check max_pool.py:max_pool2d --op max_pool2d
    fastconv-check max_pool.py:max_pool2d_backward --op max_pool2d_backward
"""
import numpy as np


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> y (N, C, OH, OW)."""
    raise NotImplementedError("exercise 3: write max_pool2d (see the instructions at the top of this file)")


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """dy (N, C, OH, OW), x (N, C, H, W) -> dx (N, C, H, W)."""
    raise NotImplementedError("exercise 3: write max_pool2d_backward (see the instructions at the top of this file)")
