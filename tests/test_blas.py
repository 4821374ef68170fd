"""fastconv.kernels.blas.matmul: NumPy's product, through SciPy's BLAS, written
where asked; the import order it exists for, measured by what OpenBLAS
read."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import threads
from fastconv.kernels import blas


def _operand(rng, shape, dtype, layout):
    """An array of ``shape`` in ``layout``: "C", "F" (a transposed view of
    a C array) or "strided" (every other column of a wider one)."""
    if layout == "F":
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dtype)).T
    if layout == "strided":
        return rng.standard_normal((shape[0], 2 * shape[1])).astype(dtype)[:, ::2]
    return rng.standard_normal(shape).astype(dtype)


@given(m=st.integers(0, 70), k=st.integers(0, 70), n=st.integers(0, 70),
       dtype=st.sampled_from([np.float32, np.float64]),
       layouts=st.tuples(*[st.sampled_from(["C", "F", "strided"])] * 2), seed=st.integers(0, 2**16))
def test_matmul_equals_numpy_for_any_layout(m, k, n, dtype, layouts, seed):
    rng = np.random.default_rng(seed)
    a, b = _operand(rng, (m, k), dtype, layouts[0]), _operand(rng, (k, n), dtype, layouts[1])
    product = blas.matmul(a, b)
    assert product.shape == (m, n) and product.dtype == dtype and product.flags.c_contiguous
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(product, a.astype(np.float64) @ b.astype(np.float64),
                               rtol=tolerance, atol=tolerance * max(k, 1) * 10)


def test_matmul_writes_into_out_through_blas():
    rng = np.random.default_rng(0)
    x, w = rng.random((5, 7), dtype=np.float32), rng.random((7, 3), dtype=np.float32)
    out = np.full((5, 3), np.nan, np.float32)  # BLAS with beta 0 never reads it
    assert blas.matmul(x, w, out) is out
    np.testing.assert_allclose(out, x @ w, rtol=1e-6)
    for a, b in [(x.T, out), (out, w.T)]:  # the dense layer's two gradients
        np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-6)
    row = np.full((1, 3), np.nan, np.float32)  # one image: the matrix-vector product
    assert blas.matmul(x[:1], w, row) is row
    np.testing.assert_allclose(row, x[:1] @ w, rtol=1e-6)
    np.testing.assert_allclose(blas.matmul(out[:1], w.T), out[:1] @ w.T, rtol=1e-6)  # w.T: F-contiguous


def test_matmul_leaves_other_cases_to_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3))
    ints = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(blas.matmul(x.astype(np.float32), ints), x.astype(np.float32) @ ints)
    with pytest.raises(ValueError, match="mismatch"):
        blas.matmul(x, x)
    out = np.empty((4, 4), np.float32)  # another dtype than the product's
    blas.matmul(x, x.T, out)
    np.testing.assert_allclose(out, x @ x.T, rtol=1e-6)


IDLE_PROBE = """
import numpy as np, time
import fastconv
from fastconv import threads
from fastconv.kernels import blas
threads.set_num_threads(2)
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
def idle_cpu_seconds(product):
    product(a, a)
    start = time.process_time()
    time.sleep(0.05)
    return time.process_time() - start
print(idle_cpu_seconds(blas.matmul), idle_cpu_seconds(np.matmul))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="BLAS threads need two cores")
def test_blas_threads_sleep_after_a_product_when_numpy_came_first():
    """The reason the module exists: in a program that imported NumPy
    before fastconv, the threads of NumPy's OpenBLAS spin (CPU time while
    the program sleeps) after a product, those behind blas.matmul do not."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    result = subprocess.run([sys.executable, "-c", IDLE_PROBE], capture_output=True, text=True, check=True, env=env)
    ours, numpys = map(float, result.stdout.split())
    assert numpys > 0.02, f"NumPy's OpenBLAS no longer spins ({numpys:.3f} s): is this module still needed?"
    assert ours < 0.01, f"the BLAS behind fastconv.kernels.blas spun for {ours:.3f} s of CPU while idle"
