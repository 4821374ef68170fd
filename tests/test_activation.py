"""The ReLU kernels: both twins' relu and relu_backward equal NumPy's
np.maximum(x, 0) and dy * (y > 0) exactly, NaN, infinities and -0.0
included, for any size and thread count; fastconv.ops.relu and
relu_backward run them (NumPy alone under FASTCONV_BACKEND=numpy) and
refuse gradients of another shape."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import ops, registry
from fastconv.layers import ReLU

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0]


def _values(rng, size, dtype):
    """Normal values with every special value planted at random places."""
    x = rng.standard_normal(size).astype(dtype)
    for value in SPECIAL:
        x[rng.integers(0, size, size // 8 + 1) if size else []] = value
    return x


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 300), chunks=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_each_twins_relu_equals_numpys(backend, size, chunks, dtype, seed):
    relu, relu_backward = registry.relu_kernels(backend)
    rng = np.random.default_rng(seed)
    x, dy = _values(rng, size, dtype), _values(rng, size, dtype)
    expected = np.maximum(x, 0)
    y = np.full(size, 7.0, dtype)  # written whole: no 7 may survive
    relu(x, y, chunks)
    np.testing.assert_array_equal(y, expected)
    assert not np.signbit(y).any()  # -0.0 gives 0.0, as np.maximum
    dx = np.full(size, 7.0, dtype)
    relu_backward(dy, y, dx, chunks)
    with np.errstate(invalid="ignore"):  # inf * 0
        np.testing.assert_array_equal(dx, dy * (expected > 0))


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_ops_relu_the_same_through_each_backend(backend, monkeypatch):
    """cnn-deep's ReLU after conv3 at batch 64 (several threads' worth)
    through the backend's kernel (none under FASTCONV_BACKEND=numpy); a
    small one and arrays the kernels do not take (ints, a strided view)
    through NumPy."""
    monkeypatch.setenv("FASTCONV_BACKEND", backend)
    ran = []
    kernels = registry.relu_kernels
    monkeypatch.setattr(registry, "relu_kernels", lambda name: ran.append(name) or kernels(name))
    rng = np.random.default_rng(0)
    large = _values(rng, 64 * 128 * 7 * 7, np.float32).reshape(64, 128, 7, 7)
    for x in [large, _values(rng, 30, np.float64), np.arange(-3, 4),
              _values(rng, 40, np.float32).reshape(8, 5)[:, ::2]]:
        ran.clear()
        y = ops.relu(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        dy = rng.standard_normal(x.shape).astype(x.dtype)
        np.testing.assert_array_equal(ops.relu_backward(dy, y), dy * (y > 0))
        assert ran == ([backend] * 2 if x is large and backend != "numpy" else [])


def test_relu_backward_refuses_a_gradient_of_another_shape():
    with pytest.raises(ValueError, match=r"relu_backward: dy has shape \(2, 3\), the forward output y \(3, 2\)"):
        ops.relu_backward(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))


def test_the_relu_layer_passes_and_cuts_as_before():
    layer = ReLU()
    x = np.array([[-1.0, 0.0, 2.0, np.nan]], np.float32)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 2.0, np.nan]])
    np.testing.assert_array_equal(layer.backward(np.full_like(x, 3.0)), [[0.0, 0.0, 3.0, 0.0]])
