"""Specification of max and avg pooling, forward and backward: every compiled
variant in the registry agrees with the NumPy reference, routes max-pool
gradients to the first maximum of each window, passes numerical gradient
checks, and bad arguments are refused by fastconv.ops.

Max-pool forward selects input values, so it must match the reference
exactly; sums (avg-pool, and max-pool backward where windows overlap) may
differ in rounding only.
"""
import functools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fastconv import ops, registry
from fastconv.battery import (DY_2X2, NAN_GEOMETRIES, NEGATIVE, PADDED_BY_HAND, POOL_EDGE_CASES,
                              POOL_GRADCHECK_CASES, TIE_GEOMETRIES, distinct_values, first_max_gradient,
                              input_with_nans, pool_geometries)
from fastconv.battery import POOL_RTOL as RTOL
from fastconv.battery import assert_close as assert_matches
from fastconv.battery import pool_geometry_case as geometry_case
from fastconv.gradcheck import numerical_gradient

pytestmark = pytest.mark.usefixtures("thread_count")

KINDS = ("max", "avg")
FORWARD_OPS = {"max": ops.max_pool2d, "avg": ops.avg_pool2d}
BACKWARD_OPS = {"max": ops.max_pool2d_backward, "avg": ops.avg_pool2d_backward}
FORWARD = [(kind,) + v for kind in KINDS for v in registry.variants(f"{kind}_pool2d", include_reference=False)]
BACKWARD = [
    (kind,) + v for kind in KINDS for v in registry.variants(f"{kind}_pool2d_backward", include_reference=False)
]
REFERENCE = {"backend": "numpy", "algorithm": "reference"}

# The MNIST CNN's pooling layers at batch 64: 2x2 windows of stride 2 on the
# outputs of conv1 and conv2. 11 is odd: the last row and column are dropped.
MNIST_SHAPES = {"pool1": (64, 32, 26, 26), "pool2": (64, 64, 11, 11)}


def pool(kind, x, kernel_size, stride=None, padding=0, **variant):
    return FORWARD_OPS[kind](x, kernel_size, stride, padding, **(variant or REFERENCE))


def pool_backward(kind, dy, x, kernel_size, stride=None, padding=0, **variant):
    return BACKWARD_OPS[kind](dy, x, kernel_size, stride, padding, **(variant or REFERENCE))


def test_every_compiled_backend_offers_every_pooling_algorithm():
    # Guards the parametrisations below against silently shrinking.
    for kind in KINDS:
        for op in (f"{kind}_pool2d", f"{kind}_pool2d_backward"):
            for backend in registry.COMPILED_BACKENDS:
                found = {a for b, a in registry.variants(op, include_reference=False) if b == backend}
                # gemm and winograd are conv algorithms: a pool has no product to hand to BLAS
                assert found == {"naive", "im2col", "vectorized"}, (op, backend)


# ------------------------------------------------------------- MNIST shapes


@functools.cache
def mnist_case(kind, layer, dtype):
    """x, dy and the reference output and dx of one MNIST pooling layer."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(MNIST_SHAPES[layer]).astype(dtype)
    out = pool(kind, x, 2)
    dy = rng.standard_normal(out.shape).astype(dtype)
    return x, dy, out, pool_backward(kind, dy, x, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", sorted(MNIST_SHAPES))
@pytest.mark.parametrize("kind, backend, algorithm", FORWARD)
def test_forward_matches_reference_on_mnist_shapes(kind, backend, algorithm, layer, dtype):
    x, _, expected, _ = mnist_case(kind, layer, dtype)
    out = pool(kind, x, 2, backend=backend, algorithm=algorithm)
    assert_matches(out, expected, RTOL[dtype], exact=kind == "max")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", sorted(MNIST_SHAPES))
@pytest.mark.parametrize("kind, backend, algorithm", BACKWARD)
def test_backward_matches_reference_on_mnist_shapes(kind, backend, algorithm, layer, dtype):
    x, dy, _, expected = mnist_case(kind, layer, dtype)
    dx = pool_backward(kind, dy, x, 2, backend=backend, algorithm=algorithm)
    assert_matches(dx, expected, RTOL[dtype])


@pytest.mark.parametrize("kind, backend, algorithm", FORWARD)
def test_odd_size_drops_last_row_and_column(kind, backend, algorithm):
    x, _, _, _ = mnist_case(kind, "pool2", np.float64)
    loud = x.copy()
    loud[:, :, -1, :] = 1e6
    loud[:, :, :, -1] = 1e6
    out = pool(kind, loud, 2, backend=backend, algorithm=algorithm)
    assert out.shape == (64, 64, 5, 5)
    assert_matches(out, pool(kind, x[:, :, :10, :10], 2), RTOL[np.float64])


@pytest.mark.parametrize("kind, backend, algorithm", BACKWARD)
def test_odd_size_gives_no_gradient_to_dropped_row_and_column(kind, backend, algorithm):
    x, dy, _, _ = mnist_case(kind, "pool2", np.float64)
    dx = pool_backward(kind, dy, x, 2, backend=backend, algorithm=algorithm)
    assert not dx[:, :, -1, :].any() and not dx[:, :, :, -1].any()
    assert dx[:, :, :-1, :-1].any()


# ------------------------------------------------- padding, computed by hand

# NEGATIVE and PADDED_BY_HAND (fastconv.battery): negative inputs, so that
# padding with 0 instead of -inf (max) would show; the reference pads with
# ops._pad too, so only numbers worked out by hand can catch that.
EVERY_FORWARD = [(kind,) + v for kind in KINDS for v in registry.variants(f"{kind}_pool2d")]
EVERY_BACKWARD = [(kind,) + v for kind in KINDS for v in registry.variants(f"{kind}_pool2d_backward")]


@pytest.mark.parametrize("kind, backend, algorithm", EVERY_FORWARD)
def test_padded_pooling_of_negative_inputs_by_hand(kind, backend, algorithm):
    for (case_kind, kernel, stride, padding), (expected, _) in PADDED_BY_HAND.items():
        if case_kind == kind:
            out = pool(kind, NEGATIVE, kernel, stride, padding, backend=backend, algorithm=algorithm)
            np.testing.assert_allclose(out[0, 0], expected, rtol=1e-14, err_msg=f"{kind} {kernel}/{stride}/{padding}")


@pytest.mark.parametrize("kind, backend, algorithm", EVERY_BACKWARD)
def test_padded_pooling_gradient_of_negative_inputs_by_hand(kind, backend, algorithm):
    expected = PADDED_BY_HAND[(kind, 2, 2, 1)][1]
    dx = pool_backward(kind, DY_2X2, NEGATIVE, 2, 2, 1, backend=backend, algorithm=algorithm)
    np.testing.assert_allclose(dx[0, 0], expected, rtol=1e-14)


def test_runs_at_the_requested_thread_count(thread_count):
    import numba

    assert numba.get_num_threads() == min(thread_count, numba.config.NUMBA_NUM_THREADS)


# ---------------------------------------------------------- random geometry


# The strategy, edge cases and case builder are fastconv.battery's, which
# fastconv-check runs on a learner's function too. Edge cases: the 2x2
# stride-2 fast path with padding and odd sizes, its near misses, a
# whole-input kernel, and a 1x1 kernel that skips rows and columns.


def with_edge_cases(test):
    for geometry in POOL_EDGE_CASES:
        test = example(geometry=geometry, seed=0)(test)
    return test


@pytest.mark.parametrize("kind, backend, algorithm", FORWARD)
@given(geometry=pool_geometries(), seed=st.integers(0, 2**32 - 1))
@with_edge_cases
def test_forward_matches_reference_on_random_geometry(kind, backend, algorithm, geometry, seed):
    x, _ = geometry_case(geometry, seed)
    _, kernel, stride, padding = geometry
    out = pool(kind, x, kernel, stride, padding, backend=backend, algorithm=algorithm)
    expected = pool(kind, x, kernel, stride, padding)
    assert_matches(out, expected, RTOL[np.float64], exact=kind == "max")


@pytest.mark.parametrize("kind, backend, algorithm", BACKWARD)
@given(geometry=pool_geometries(), seed=st.integers(0, 2**32 - 1))
@with_edge_cases
def test_backward_matches_reference_on_random_geometry(kind, backend, algorithm, geometry, seed):
    x, dy = geometry_case(geometry, seed)
    _, kernel, stride, padding = geometry
    dx = pool_backward(kind, dy, x, kernel, stride, padding, backend=backend, algorithm=algorithm)
    expected = pool_backward(kind, dy, x, kernel, stride, padding)
    assert_matches(dx, expected, RTOL[np.float64])


# ----------------------------------------------------- ties and NaN in max

MAX_BACKWARD = [(b, a) for kind, b, a in BACKWARD if kind == "max"]
MAX_FORWARD = [(b, a) for kind, b, a in FORWARD if kind == "max"]
@pytest.mark.parametrize("geometry", TIE_GEOMETRIES)
@pytest.mark.parametrize("backend, algorithm", MAX_BACKWARD)
def test_all_equal_input_routes_each_gradient_to_window_top_left(backend, algorithm, geometry):
    x_shape, kernel, stride, _ = geometry
    x = np.full(x_shape, 0.5)
    dy = np.random.default_rng(0).standard_normal(pool("max", x, kernel, stride).shape)
    dx = pool_backward("max", dy, x, kernel, stride, backend=backend, algorithm=algorithm)
    expected = np.zeros_like(x)
    for n, c, y, x_ in np.ndindex(dy.shape):
        expected[n, c, y * stride[0], x_ * stride[1]] += dy[n, c, y, x_]
    assert_matches(dx, expected, RTOL[np.float64])
    assert_matches(dx, pool_backward("max", dy, x, kernel, stride), RTOL[np.float64])


@pytest.mark.parametrize("geometry", TIE_GEOMETRIES)
@pytest.mark.parametrize("backend, algorithm", MAX_BACKWARD)
def test_repeated_maxima_route_to_the_first(backend, algorithm, geometry):
    x_shape, kernel, stride, _ = geometry
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, x_shape).astype(np.float64)  # most windows hold ties
    dy = rng.standard_normal(pool("max", x, kernel, stride).shape)
    dx = pool_backward("max", dy, x, kernel, stride, backend=backend, algorithm=algorithm)
    assert_matches(dx, first_max_gradient(x, dy, kernel, stride), RTOL[np.float64])
    assert_matches(dx, pool_backward("max", dy, x, kernel, stride), RTOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend, algorithm", MAX_BACKWARD)
def test_every_tie_pattern_of_a_2x2_window(backend, algorithm, dtype):
    # One 2x2 window per pattern in {0, 1, 2}^4, side by side in a 2-row
    # input: every way a, b, c, d can tie is routed to its first maximum.
    patterns = np.array(np.meshgrid(*[np.arange(3)] * 4, indexing="ij")).reshape(4, -1).T
    x = np.empty((1, 1, 2, 2 * len(patterns)), dtype)
    x[0, 0, 0, 0::2], x[0, 0, 0, 1::2] = patterns[:, 0], patterns[:, 1]
    x[0, 0, 1, 0::2], x[0, 0, 1, 1::2] = patterns[:, 2], patterns[:, 3]
    dy = np.arange(1, len(patterns) + 1, dtype=dtype).reshape(1, 1, 1, -1)
    dx = pool_backward("max", dy, x, 2, backend=backend, algorithm=algorithm)
    first = patterns.argmax(axis=1)  # argmax returns the first of equal maxima
    expected = np.zeros_like(x)
    expected[0, 0, first // 2, 2 * np.arange(len(patterns)) + first % 2] = dy.ravel()
    assert_matches(dx, expected, RTOL[dtype], exact=True)


@pytest.mark.parametrize("geometry", NAN_GEOMETRIES)
@pytest.mark.parametrize("backend, algorithm", MAX_FORWARD)
def test_nan_propagates_through_max(backend, algorithm, geometry):
    x_shape, kernel, stride, padding = geometry
    x = input_with_nans(x_shape, 2)
    out = pool("max", x, kernel, stride, padding, backend=backend, algorithm=algorithm)
    expected = pool("max", x, kernel, stride, padding)
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    assert_matches(out, expected, RTOL[np.float64], exact=True)


@pytest.mark.parametrize("geometry", NAN_GEOMETRIES)
@pytest.mark.parametrize("backend, algorithm", MAX_BACKWARD)
def test_nan_takes_the_gradient_of_its_window(backend, algorithm, geometry):
    x_shape, kernel, stride, padding = geometry
    x = input_with_nans(x_shape, 3)
    dy = np.random.default_rng(4).standard_normal(pool("max", x, kernel, stride, padding).shape)
    dx = pool_backward("max", dy, x, kernel, stride, padding, backend=backend, algorithm=algorithm)
    assert_matches(dx, pool_backward("max", dy, x, kernel, stride, padding), RTOL[np.float64])


# ------------------------------------------------------ numerical gradients

@pytest.mark.parametrize("geometry", POOL_GRADCHECK_CASES)
@pytest.mark.parametrize("kind, backend, algorithm", BACKWARD)
def test_backward_matches_numerical_gradient(kind, backend, algorithm, geometry):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(5)
    x = distinct_values(x_shape, rng)  # every window's maximum unique, and it stays put when nudged
    variant = {"backend": backend, "algorithm": algorithm}
    dy = rng.standard_normal(pool(kind, x, kernel, stride, padding).shape)
    dx = pool_backward(kind, dy, x, kernel, stride, padding, **variant)
    expected = numerical_gradient(lambda v: pool(kind, v, kernel, stride, padding, **variant), x, dy)
    np.testing.assert_allclose(dx, expected, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- bad input

X = np.zeros((2, 3, 6, 6))  # (N, C, H, W)
DY = np.zeros((2, 3, 3, 3))  # (N, C, OH, OW) for 2x2 windows of stride 2


def forward_call(kind, x=X, kernel_size=2, stride=None, padding=0):
    return pool(kind, x, kernel_size, stride, padding)


def backward_call(kind, x=X, kernel_size=2, stride=None, padding=0, dy=DY):
    return pool_backward(kind, dy, x, kernel_size, stride, padding)


every_call = pytest.mark.parametrize(
    "call, kind", [(c, k) for c in (forward_call, backward_call) for k in KINDS]
)


@every_call
def test_valid_call_passes(call, kind):
    # The baseline every failure below departs from in one argument.
    assert call(kind).shape == (DY.shape if call is forward_call else X.shape)


@every_call
@pytest.mark.parametrize("x", [X[0], X[None]])
def test_x_of_wrong_ndim(call, kind, x):
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape"):
        call(kind, x=x)


@pytest.mark.parametrize("kind", KINDS)
def test_dy_of_wrong_ndim(kind):
    with pytest.raises(ValueError, match=r"dy must be 4-D \(N, C, OH, OW\), got shape \(2, 3, 9\)"):
        backward_call(kind, dy=DY.reshape(2, 3, 9))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dy_shape", [(2, 3, 2, 3), (1, 3, 3, 3), (2, 4, 3, 3)])
def test_dy_of_wrong_shape(kind, dy_shape):
    with pytest.raises(ValueError, match=r"dy must have the output shape \(2, 3, 3, 3\), got"):
        backward_call(kind, dy=np.zeros(dy_shape))


@every_call
@pytest.mark.parametrize("kernel_size", [0, (2, 0), -1])
def test_kernel_size_below_one(call, kind, kernel_size):
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1"):
        call(kind, kernel_size=kernel_size)


@every_call
@pytest.mark.parametrize("kernel_size", [2.0, (2, "2"), True])
def test_kernel_size_not_int(call, kind, kernel_size):
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints"):
        call(kind, kernel_size=kernel_size)


@every_call
@pytest.mark.parametrize("stride", [0, (1, 0), -2])
def test_stride_below_one(call, kind, stride):
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        call(kind, stride=stride)


@every_call
@pytest.mark.parametrize("padding", [-1, (0, -1)])
def test_negative_padding(call, kind, padding):
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        call(kind, padding=padding)


@every_call
@pytest.mark.parametrize("kernel_size, padding", [(2, 2), (3, (0, 2)), ((4, 1), (3, 0))])
def test_padding_over_half_the_kernel(call, kind, kernel_size, padding):
    with pytest.raises(ValueError, match=r"padding must be at most half the kernel size"):
        call(kind, kernel_size=kernel_size, padding=padding)


@every_call
@pytest.mark.parametrize(
    "kernel_size, padding, message",
    [
        (7, 0, r"kernel 7x7 is larger than the padded input 6x6"),
        ((3, 9), (1, 1), r"kernel 3x9 is larger than the padded input 8x8"),
    ],
)
def test_kernel_larger_than_padded_input(call, kind, kernel_size, padding, message):
    with pytest.raises(ValueError, match=message):
        call(kind, kernel_size=kernel_size, padding=padding)


@every_call
def test_empty_image(call, kind):
    with pytest.raises(ValueError, match=r"x must have H, W >= 1, got shape \(2, 3, 0, 6\)"):
        call(kind, x=np.zeros((2, 3, 0, 6)))


@every_call
@pytest.mark.parametrize("dtype", [complex, object, str])
def test_x_not_real_numbers(call, kind, dtype):
    with pytest.raises(TypeError, match=r"x must hold real numbers, got dtype"):
        call(kind, x=X.astype(dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_dy_not_real_numbers(kind):
    with pytest.raises(TypeError, match=r"dy must hold real numbers, got dtype complex128"):
        backward_call(kind, dy=DY.astype(complex))


@every_call
def test_ragged_x(call, kind):
    with pytest.raises(TypeError, match=r"x is not array-like"):
        call(kind, x=[[[[0.0, 1.0], [2.0]]]])
