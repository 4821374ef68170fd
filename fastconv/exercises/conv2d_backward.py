"""Exercise 4: the convolution backward pass.

Write ``conv2d_backward(dy, x, w, stride=1, padding=0)`` returning
``(dx, dw, db)``: the gradients of conv2d's inputs, given dy, the gradient
of its output.

Shapes:
    dy (N, F, OH, OW), x (N, C, H, W), w (F, C, KH, KW)
    returns dx (N, C, H, W), dw (F, C, KH, KW), db (F,)

Each output y[n, f, i, j] was b[f] + sum of w[f] * window, so it sends back
    db[f]     += dy[n, f, i, j]
    dw[f]     += dy[n, f, i, j] * window          (the window of xp it read)
    dx window += dy[n, f, i, j] * w[f]            (into the padded dxp)

Hint: loop over n, f, i, j as in the forward pass, with the same window
slice for xp and for dxp (zeros of xp's shape); at the end cut the padding
off: dx = dxp[:, :, padding : padding + H, padding : padding + W]. Sum
(+=), never average: the loss already divides by the batch size. No flip:
the same w[f] that the forward pass used.

Grade it with:
    fastconv-check conv2d_backward.py:conv2d_backward --op conv2d_backward
"""
import numpy as np


def conv2d_backward(dy, x, w, stride=1, padding=0):
    """dy (N, F, OH, OW), x (N, C, H, W), w (F, C, KH, KW) -> (dx, dw, db)."""
    raise NotImplementedError("exercise 4: write conv2d_backward (see the instructions at the top of this file)")
