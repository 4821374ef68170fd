"""The ReLU's forward and backward passes, in Numba; line for line the twin
of ``activation_cython.pyx``.

Every array is flat and C-contiguous, of one float dtype, and split into
n_chunks runs of values, one per thread. NumPy made each pass on one
thread, with a temporary array of booleans in the backward pass: cnn-deep's
ReLU after conv3 (64 x 128 x 7 x 7 values) took 0.20 ms forward and 0.32
ms backward in a training step at batch 64 (Intel Xeon, 2 threads).
"""
from numba import njit, prange


@njit(parallel=True, cache=True)
def relu(x, y, n_chunks):
    """y = max(x, 0), as np.maximum: NaN stays NaN, -0.0 gives 0."""
    n = x.shape[0]
    for t in prange(n_chunks):
        first, end = t * n // n_chunks, (t + 1) * n // n_chunks
        _relu_values(x[first:end], y[first:end])


@njit(parallel=True, cache=True)
def relu_backward(dy, y, dx, n_chunks):
    """dx = dy * (y > 0), the forward output y telling where the ReLU passed."""
    n = dy.shape[0]
    for t in prange(n_chunks):
        first, end = t * n // n_chunks, (t + 1) * n // n_chunks
        _relu_gradient_values(dy[first:end], y[first:end], dx[first:end])


# The loops over one run of values are functions of their own: compiled
# apart from the parallel loop, they vectorize (inside it, the forward pass
# took 0.089 ms for cnn-deep conv3's output, apart 0.023 ms).

@njit(cache=True)
def _relu_values(x, y):
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        y[i] = zero if x[i] <= 0 else x[i]


@njit(cache=True)
def _relu_gradient_values(dy, y, dx):
    zero, one = dy.dtype.type(0), dy.dtype.type(1)
    for i in range(dy.shape[0]):
        dx[i] = dy[i] * (one if y[i] > 0 else zero)
