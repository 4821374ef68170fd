"""The optimisers' updates as compiled loops: one pass over a parameter
reads p, g and the state and writes them back, where the NumPy expressions
made a temporary array per operation (about ten passes for Adam).

All arrays are C-contiguous, of one dtype, and shaped alike; the scalars
arrive in that dtype, so float32 parameters are updated in float32 as the
NumPy expressions did. Called by :mod:`fastconv.optim`.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def sgd_update(p, g, velocity, lr, momentum, nesterov, weight_decay):
    """v <- momentum * v + g';  p <- p - lr * (g' + momentum * v if nesterov else v),
    g' = g + weight_decay * p; velocity None: p <- p - lr * g'."""
    p, g = p.reshape(-1), g.reshape(-1)
    if velocity is None:
        for i in range(p.size):
            p[i] -= lr * (g[i] + weight_decay * p[i])
        return
    v = velocity.reshape(-1)
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        v[i] = momentum * v[i] + gi
        p[i] -= lr * (gi + momentum * v[i] if nesterov else v[i])


# error_model="numpy": a division by zero gives inf (it cannot happen, eps > 0)
# instead of a Python exception, whose check kept the loop from vectorizing.
@njit(cache=True, error_model="numpy")
def adam_update(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_correction2, weight_decay):
    """m <- m + (1 - b1)(g' - m);  v <- b2 v + (1 - b2) g'^2;
    p <- p - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps), g' = g + weight_decay * p."""
    p, g, m, v = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        mi = m[i] + (1 - beta1) * (gi - m[i])
        vi = beta2 * v[i] + (1 - beta2) * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (np.sqrt(vi) * inv_sqrt_correction2 + eps)
