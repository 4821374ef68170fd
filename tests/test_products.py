"""fastconv.products: the dense layers' products on the kernels' threads.
Both twins' ``product`` and ``row_product`` equal NumPy's for any shape,
layout and thread count; matmul and product pick the backend FASTCONV_BACKEND names, and
leave small products, one thread and what BLAS cannot take to
blas.matmul; the Dense layer and the plan's dense step go through them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import products, registry, threads
from fastconv.layers import Dense

from test_blas import _operand


def _reference(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def _assert_product(result, a, b):
    tolerance = 1e-5 if a.dtype == np.float32 else 1e-12
    assert result.shape == (a.shape[0], b.shape[1]) and result.dtype == a.dtype
    np.testing.assert_allclose(result, _reference(a, b), rtol=tolerance, atol=tolerance * a.shape[1] * 10)


def _check_product(backend, m, k, n, chunks, dtype, layouts, seed):
    """The backend's product of random (m, k) and (k, n) operands, of the
    layouts ("C" or "F") given, on ``chunks`` threads, against NumPy's."""
    rng = np.random.default_rng(seed)
    a, b = _operand(rng, (m, k), dtype, layouts[0]), _operand(rng, (k, n), dtype, layouts[1])
    out = np.full((m, n), np.nan, dtype)  # written whole: no NaN may survive
    with threads.single_threaded_blas():
        registry.dense_product(backend)(a, b, out, chunks)
    _assert_product(out, a, b)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), chunks=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]), layouts=st.tuples(*[st.sampled_from(["C", "F"])] * 2),
       seed=st.integers(0, 2**16))
def test_each_twins_product_equals_numpys(backend, m, k, n, chunks, dtype, layouts, seed):
    """Rows or columns split between 1-4 threads (more threads than rows
    or columns included), a and b each C-contiguous or transposed."""
    _check_product(backend, m, k, n, chunks, dtype, layouts, seed)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 20), n=st.integers(1, 20), extra=st.integers(0, 100), chunks=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]), layouts=st.tuples(*[st.sampled_from(["C", "F"])] * 2),
       seed=st.integers(0, 2**16))
def test_each_twins_product_by_blocks_of_k_equals_numpys(backend, m, n, extra, chunks, dtype, layouts, seed):
    """K at least twice M and N (a dense layer's forward pass): each thread
    multiplies a block of a's columns by b's rows and the parts are added
    (more threads than rows and columns included)."""
    k = 2 * max(m, n) + extra
    _check_product(backend, m, k, n, chunks, dtype, layouts, seed)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 300), n=st.integers(1, 300), chunks=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_each_twins_row_product_equals_numpys(backend, k, n, chunks, dtype, seed):
    """One row by a matrix, its rows split between 1-4 threads (more
    threads than rows included), columns in whole blocks (128 floats in the
    AVX-512 build), single vectors and one by one."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((1, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    out = np.full((1, n), np.nan, dtype)  # written whole: no NaN may survive
    parts = np.full((chunks, n), np.nan, dtype)  # each thread's row written whole before it is read
    registry.row_product(backend)(a[0], b, parts, out[0], chunks)
    _assert_product(out, a, b)


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
@pytest.mark.parametrize("k, n, n_threads, by_row", [(6272, 128, 2, True), (1600, 128, 2, True),
                                                     (6272, 128, 1, False), (800, 128, 2, False)])
def test_one_row_goes_to_the_backends_row_product_from_row_macs(backend, k, n, n_threads, by_row, monkeypatch):
    """Batch 1 (the plan's dense steps, matmul): cnn-deep's and the MNIST
    CNN's first dense layers through the row product of the backend
    FASTCONV_BACKEND names, on 2 threads; BLAS on one thread, under
    ROW_MACS, or with FASTCONV_BACKEND=numpy."""
    monkeypatch.setenv("FASTCONV_BACKEND", backend)
    calls = []
    real = registry.row_product
    monkeypatch.setattr(registry, "row_product", lambda name: calls.append(name) or real(name))
    rng = np.random.default_rng(0)
    a, b = rng.random((1, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    assert (k * n >= products.ROW_MACS) == (k > 800)  # the cases sit on either side of ROW_MACS
    threads.set_num_threads(n_threads)
    try:
        out = np.empty((1, n), np.float32)
        assert products.product(b, 1)(a, out) is out
        _assert_product(out, a, b)
        _assert_product(products.matmul(a, b), a, b)
    finally:
        threads.set_num_threads(None)
    assert calls == ([backend] * 2 if by_row and backend != "numpy" else [])


DENSE_SHAPES = [(64, 6272, 128), (6272, 64, 128), (64, 128, 6272), (3, 600, 900)]
"""cnn-deep's first dense layer at batch 64: forward, weight and input
gradients (split by columns, rows, columns); and a batch smaller than the
threads could split by rows."""


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("m, k, n", DENSE_SHAPES)
def test_matmul_runs_the_asked_backends_product_on_the_dense_shapes(backend, m, k, n, monkeypatch):
    monkeypatch.setenv("FASTCONV_BACKEND", backend)
    calls = []
    real = registry.dense_product
    monkeypatch.setattr(registry, "dense_product", lambda name: calls.append(name) or real(name))
    threads.set_num_threads(2)
    try:
        rng = np.random.default_rng(0)
        for a_layout in ("C", "F"):
            a, b = _operand(rng, (m, k), np.float32, a_layout), _operand(rng, (k, n), np.float32, "C")
            _assert_product(products.matmul(a, b), a, b)
            out = np.empty((m, n), np.float32)
            assert products.product(b, m, a.flags.c_contiguous)(a, out) is out
            _assert_product(out, a, b)
    finally:
        threads.set_num_threads(None)
    assert calls == [backend] * 4


@pytest.mark.parametrize("case", ["small", "one thread", "numpy backend", "ints", "strided", "mixed dtypes"])
def test_matmul_leaves_the_rest_to_blas_matmul(case, monkeypatch):
    """No backend product runs (and the answer is still NumPy's) for a
    product under PARALLEL_MACS, on one thread, with FASTCONV_BACKEND=numpy,
    or for arrays BLAS cannot take as they are."""
    monkeypatch.setattr(registry, "dense_product", lambda name: pytest.fail(f"{name}'s product ran"))
    rng = np.random.default_rng(0)
    big = (128, 128, 128)
    assert np.prod(big) >= products.PARALLEL_MACS
    m, k, n = (8, 16, 8) if case == "small" else big
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    if case == "ints":
        a = (a * 10).astype(np.int64)
    elif case == "strided":
        a = _operand(rng, (m, k), np.float32, "strided")
    elif case == "mixed dtypes":
        b = b.astype(np.float64)
    elif case == "numpy backend":
        monkeypatch.setenv("FASTCONV_BACKEND", "numpy")
    threads.set_num_threads(1 if case == "one thread" else 2)
    try:
        result = products.matmul(a, b)
    finally:
        threads.set_num_threads(None)
    np.testing.assert_allclose(result, _reference(a, b), rtol=1e-5, atol=1e-5 * k * 10)


def test_the_dense_layer_computes_through_the_backends_product(monkeypatch):
    """Forward, weight and input gradient of a Dense layer large enough for
    the shared product, against NumPy's formulas."""
    calls = []
    real = registry.dense_product
    monkeypatch.setattr(registry, "dense_product", lambda name: calls.append(name) or real(name))
    layer = Dense(1500, 700)
    layer.initialize(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((4, 1500)).astype(np.float32), rng.standard_normal((4, 700)).astype(np.float32)
    threads.set_num_threads(2)
    try:
        y = layer.forward(x, training=True)
        dx = layer.backward(dy)
    finally:
        threads.set_num_threads(None)
    w = layer.params["w"]
    np.testing.assert_allclose(y, _reference(x, w) + layer.params["b"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.grads["w"], _reference(x.T, dy), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, _reference(dy, w.T), rtol=1e-5, atol=1e-4)
    assert calls == ["cython"] * 3
