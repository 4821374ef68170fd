"""Exercise 1: the convolution forward pass, as plain loops.

Write ``conv2d(x, w, b=None, stride=1, padding=0)``: slide each filter over
each image and, at every position, add up filter times window.

Shapes:
    x  (N, C, H, W)      a batch of N images with C channels
    w  (F, C, KH, KW)    F filters, each C channels deep
    b  (F,) or None      one bias per filter
    returns y (N, F, OH, OW), OH = (H + 2*padding - KH) // stride + 1
    (OW likewise), with
    y[n, f, i, j] = b[f] + sum over c, p, q of
                    w[f, c, p, q] * xp[n, c, i*stride + p, j*stride + q]
    where xp is x with `padding` zeros on each side of H and W.

Hint: pad first (np.pad), allocate y with np.zeros(..., dtype=x.dtype), then
loop over n, f, i, j and take the window xp[n, :, i*stride : i*stride + KH,
j*stride : j*stride + KW]; (window * w[f]).sum() is the whole inner sum.
Do not flip the filter: deep learning's "convolution" is a
cross-correlation. Leave x as it is (no in-place changes).

Grade it with:
    fastconv-check conv2d_naive.py:conv2d --op conv2d
"""
import numpy as np


def conv2d(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) or None -> y (N, F, OH, OW)."""
    raise NotImplementedError("exercise 1: write conv2d (see the instructions at the top of this file)")
