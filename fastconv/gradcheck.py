"""Numerical gradients by central differences: the check every backward pass
(kernel or layer) must pass. Work in float64; float32 is too coarse for it."""
from __future__ import annotations

import numpy as np


def numerical_gradient(f, x, dy, eps=1e-6):
    """Gradient of ``sum(f(x) * dy)`` with respect to ``x``, by central
    differences, one element at a time.

    f: function of x (any shape, float64) returning an array shaped like dy.
    Returns an array shaped like x. ``x`` is perturbed in place and restored.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for k in range(flat_x.size):
        saved = flat_x[k]
        flat_x[k] = saved + eps
        up = np.sum(f(x) * dy)
        flat_x[k] = saved - eps
        down = np.sum(f(x) * dy)
        flat_x[k] = saved
        flat_grad[k] = (up - down) / (2 * eps)
    return grad
