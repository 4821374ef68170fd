"""The layout kernels: both twins' pad and crop equal NumPy's for any
shape, border, fill value and thread count; fastconv.ops pads and crops
through the backend FASTCONV_BACKEND names, and through NumPy alone under
FASTCONV_BACKEND=numpy, with the same results."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import ops, registry

VALUES = [0.0, -np.inf, 2.5]
"""Conv and avg-pool pad with zeros, max-pool with -inf."""


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(0, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
       border=st.tuples(st.integers(0, 3), st.integers(0, 3)), value=st.sampled_from(VALUES),
       chunks=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_each_twins_pad_and_crop_equal_numpys(backend, shape, border, value, chunks, dtype, seed):
    """Empty batches, borders of 0 on one side, more threads than planes."""
    pad, crop = registry.layout_kernels(backend)
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    (ph, pw), (n, c, h, w) = border, shape
    expected = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)
    padded = np.full(expected.shape, np.nan, dtype)  # written whole: no NaN may survive
    pad(x, padded.dtype.type(value), padded, chunks)
    np.testing.assert_array_equal(padded, expected)
    cropped = np.full(x.shape, np.nan, dtype)
    crop(expected, cropped, chunks)
    np.testing.assert_array_equal(cropped, x)


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_ops_pad_and_crop_the_same_through_each_backend(backend, monkeypatch):
    """cnn-deep conv3's input at batch 64 (several threads' worth) and a
    small one (one thread); NumPy's own way runs no layout kernel."""
    monkeypatch.setenv("FASTCONV_BACKEND", backend)
    if backend == "numpy":
        monkeypatch.setattr(registry, "layout_kernels", lambda name: pytest.fail(f"{name}'s layout kernel ran"))
    rng = np.random.default_rng(0)
    for shape in [(64, 64, 7, 7), (1, 3, 5, 4)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert x.size >= ops.PARALLEL_VALUES or shape[0] == 1
        for padding, value in [((1, 1), 0.0), ((2, 0), -np.inf)]:
            ph, pw = padding
            padded = ops._pad(x, padding, value)
            np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                                                         constant_values=value))
            cropped = ops._crop(padded, padding)
            assert cropped.flags.c_contiguous and cropped is not padded
            np.testing.assert_array_equal(cropped, x)
        assert ops._pad(x, (0, 0), 0.0) is x and ops._crop(x, (0, 0)) is x


def test_a_padded_conv_gives_the_same_gradients_under_every_backends_padding(monkeypatch):
    """The whole path a layer takes: conv2d_backward with padding 1, its
    padding and cropping by the Cython kernels, then by NumPy alone."""
    rng = np.random.default_rng(1)
    dy, x, w = (rng.standard_normal(s).astype(np.float32) for s in [(8, 6, 9, 9), (8, 4, 9, 9), (6, 4, 3, 3)])
    results = []
    for backend in ["cython", "numpy"]:
        monkeypatch.setenv("FASTCONV_BACKEND", backend)
        results.append(ops.conv2d_backward(dy, x, w, padding=1, algorithm="reference" if backend == "numpy"
                                           else "naive"))
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
