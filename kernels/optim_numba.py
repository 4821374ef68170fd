"""The optimisers' updates as compiled loops: one call updates every
parameter, reading p, g and the state once and writing them back, where
the NumPy expressions made a temporary array per operation (about ten
passes for Adam) and a call per parameter paid Python's overhead each time.

Each argument ``ps, gs, ...`` is a tuple with one flat C-contiguous array
per parameter, all of one float dtype; ``i``-th entries belong together.
The parameters are cut into blocks of at most ``BLOCK`` values, and the
threads share out the blocks, so a large weight matrix is updated by every
thread while the small biases cost nothing extra. The scalars arrive in the
parameters' dtype, so float32 parameters are updated in float32. Called by
:mod:`fastconv.optim`.
"""
import numpy as np
from numba import njit, prange

BLOCK = 16384
"""Values per block: 64 KiB of float32, large enough that a block's loop
runs far longer than it takes to hand it to a thread."""


@njit(cache=True)
def _blocks(ps):
    """(which parameter, first value, end) of every block of every parameter."""
    n_blocks = 0
    for p in ps:
        n_blocks += (p.size + BLOCK - 1) // BLOCK
    blocks = np.empty((n_blocks, 3), np.intp)
    k = 0
    for i in range(len(ps)):
        for start in range(0, ps[i].size, BLOCK):
            blocks[k, 0] = i
            blocks[k, 1] = start
            blocks[k, 2] = min(start + BLOCK, ps[i].size)
            k += 1
    return blocks


@njit(parallel=True, cache=True)
def sgd_update(ps, gs, velocities, lr, momentum, nesterov, weight_decay):
    """v <- momentum * v + g';  p <- p - lr * (g' + momentum * v if nesterov else v),
    g' = g + weight_decay * p; velocities None: p <- p - lr * g'."""
    blocks = _blocks(ps)
    for k in prange(blocks.shape[0]):
        i, start, end = blocks[k, 0], blocks[k, 1], blocks[k, 2]
        if velocities is None:
            _sgd_values(ps[i][start:end], gs[i][start:end], lr, weight_decay)
        else:
            _momentum_values(ps[i][start:end], gs[i][start:end], velocities[i][start:end], lr, momentum,
                             nesterov, weight_decay)


@njit(parallel=True, cache=True)
def adam_update(ps, gs, ms, vs, step_size, beta1, beta2, eps, inv_sqrt_correction2, weight_decay):
    """m <- m + (1 - b1)(g' - m);  v <- b2 v + (1 - b2) g'^2;
    p <- p - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps), g' = g + weight_decay * p."""
    blocks = _blocks(ps)
    for k in prange(blocks.shape[0]):
        i, start, end = blocks[k, 0], blocks[k, 1], blocks[k, 2]
        _adam_values(ps[i][start:end], gs[i][start:end], ms[i][start:end], vs[i][start:end], step_size,
                     beta1, beta2, eps, inv_sqrt_correction2, weight_decay)


# The loops over one block's values are functions of their own: compiled
# apart from the parallel loop's tuple indexing, they vectorize.

@njit(cache=True)
def _sgd_values(p, g, lr, weight_decay):
    for j in range(p.size):
        p[j] -= lr * (g[j] + weight_decay * p[j])


@njit(cache=True)
def _momentum_values(p, g, v, lr, momentum, nesterov, weight_decay):
    for j in range(p.size):
        gj = g[j] + weight_decay * p[j]
        v[j] = momentum * v[j] + gj
        p[j] -= lr * (gj + momentum * v[j] if nesterov else v[j])


# error_model="numpy": a division by zero gives inf (it cannot happen, eps > 0)
# instead of a Python exception, whose check kept the loop from vectorizing.
@njit(cache=True, error_model="numpy")
def _adam_values(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_correction2, weight_decay):
    for j in range(p.size):
        gj = g[j] + weight_decay * p[j]
        mj = m[j] + (1 - beta1) * (gj - m[j])
        vj = beta2 * v[j] + (1 - beta2) * (gj * gj)
        m[j] = mj
        v[j] = vj
        p[j] -= step_size * mj / (np.sqrt(vj) * inv_sqrt_correction2 + eps)
