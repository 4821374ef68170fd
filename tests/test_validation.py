"""Bad input to conv2d and conv2d_backward: one clear exception per failure
mode, raised by the validation in fastconv.ops before any kernel runs.

Every call names the NumPy reference as its backend so that, were a check
missing, the test would fail with a wrong or absent exception rather than
hand bad shapes to a compiled kernel.
"""
import numpy as np
import pytest

from fastconv import ops

X = np.zeros((2, 3, 6, 6))  # (N, C, H, W)
W = np.zeros((4, 3, 3, 3))  # (F, C, KH, KW)
DY = np.zeros((2, 4, 4, 4))  # (N, F, OH, OW) for stride 1, padding 0
REFERENCE = {"backend": "numpy", "algorithm": "reference"}


def forward(x=X, w=W, stride=1, padding=0, **options):
    return ops.conv2d(x, w, None, stride, padding, **(REFERENCE | options))


def backward(x=X, w=W, stride=1, padding=0, dy=DY, **options):
    return ops.conv2d_backward(dy, x, w, stride, padding, **(REFERENCE | options))


both_ops = pytest.mark.parametrize("op", [forward, backward])


def test_valid_calls_pass():
    # The baseline every failure below departs from in one argument.
    assert forward().shape == DY.shape
    assert [g.shape for g in backward()] == [X.shape, W.shape, (4,)]


@both_ops
@pytest.mark.parametrize("name, kwargs", [("x", {"x": X[0]}), ("w", {"w": W[None]})])
def test_wrong_ndim(op, name, kwargs):
    with pytest.raises(ValueError, match=rf"{name} must be 4-D .* got shape"):
        op(**kwargs)


def test_dy_wrong_ndim():
    with pytest.raises(ValueError, match=r"dy must be 4-D \(N, F, OH, OW\), got shape \(2, 4, 16\)"):
        backward(dy=DY.reshape(2, 4, 16))


@both_ops
def test_channel_mismatch(op):
    with pytest.raises(ValueError, match=r"channel mismatch: x has C=3 but w has C=2"):
        op(w=np.zeros((4, 2, 3, 3)))


@both_ops
@pytest.mark.parametrize(
    "w_shape, padding, message",
    [
        ((4, 3, 7, 3), 0, r"kernel 7x3 is larger than the padded input 6x6"),
        ((4, 3, 3, 9), 1, r"kernel 3x9 is larger than the padded input 8x8"),
        ((4, 3, 8, 3), (0, 1), r"kernel 8x3 is larger than the padded input 6x8"),
    ],
)
def test_kernel_larger_than_padded_input(op, w_shape, padding, message):
    with pytest.raises(ValueError, match=message):
        op(w=np.zeros(w_shape), padding=padding)


@both_ops
@pytest.mark.parametrize("stride", [0, -1, (1, 0), (-2, 1)])
def test_stride_below_one(op, stride):
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        op(stride=stride)


@both_ops
@pytest.mark.parametrize("padding", [-1, (0, -2)])
def test_negative_padding(op, padding):
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        op(padding=padding)


@both_ops
@pytest.mark.parametrize("stride", [1.5, True, "2", (1, 2, 3)])
def test_stride_not_int_or_pair(op, stride):
    with pytest.raises((TypeError, ValueError), match=r"stride must be an int or a pair of ints"):
        op(stride=stride)


@both_ops
@pytest.mark.parametrize(
    "bad",
    [
        np.full(X.shape, "a"),
        X.astype(np.complex128),
        X.astype(object),
    ],
    ids=["str", "complex", "object"],
)
def test_non_numeric_x(op, bad):
    with pytest.raises(TypeError, match=rf"x must hold real numbers, got dtype {bad.dtype}"):
        op(x=bad)


@both_ops
def test_non_numeric_w(op):
    with pytest.raises(TypeError, match=r"w must hold real numbers, got dtype complex64"):
        op(w=W.astype(np.complex64))


def test_non_numeric_dy():
    with pytest.raises(TypeError, match=r"dy must hold real numbers, got dtype <U1"):
        backward(dy=np.full(DY.shape, "a"))


def test_non_numeric_bias():
    with pytest.raises(TypeError, match=r"b must hold real numbers, got dtype complex128"):
        ops.conv2d(X, W, np.zeros(4, complex), **REFERENCE)


@both_ops
def test_ragged_input(op):
    with pytest.raises(TypeError, match=r"x is not array-like"):
        op(x=[[[[0.0, 1.0], [2.0]]]])


@pytest.mark.parametrize(
    "b, message",
    [
        (np.zeros(3), r"b must have shape \(4,\) to match w \(4, 3, 3, 3\), got \(3,\)"),
        (np.zeros((4, 1)), r"b must be 1-D \(F,\), got shape \(4, 1\)"),
        (1.0, r"b must be 1-D \(F,\), got shape \(\)"),
    ],
)
def test_bad_bias_shape(b, message):
    with pytest.raises(ValueError, match=message):
        ops.conv2d(X, W, b, **REFERENCE)


@pytest.mark.parametrize("compute_dx", ["no", 1, None])
def test_compute_dx_not_bool(compute_dx):
    with pytest.raises(TypeError, match=rf"compute_dx must be a bool, got {compute_dx!r}"):
        backward(compute_dx=compute_dx)


@pytest.mark.parametrize("dy_shape", [(2, 4, 4, 5), (2, 3, 4, 4), (1, 4, 4, 4)])
def test_dy_shape_mismatch(dy_shape):
    with pytest.raises(ValueError, match=r"dy must have the output shape \(2, 4, 4, 4\)"):
        backward(dy=np.zeros(dy_shape))


@both_ops
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": np.zeros((2, 3, 0, 6))}, r"x must have H, W >= 1"),
        ({"w": np.zeros((0, 3, 3, 3))}, r"must be non-empty"),
        ({"x": np.zeros((2, 0, 6, 6)), "w": np.zeros((4, 0, 3, 3))}, r"must be non-empty"),
    ],
)
def test_empty_dimensions(op, kwargs, message):
    with pytest.raises(ValueError, match=message):
        op(**kwargs)


@both_ops
@pytest.mark.parametrize("algorithm", ["auto", "naive", "reference"])
def test_unknown_backend(op, algorithm):
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'"):
        op(backend="cuda", algorithm=algorithm)


@both_ops
@pytest.mark.parametrize(
    "backend, message",
    [
        ("cython", r"backend 'cython' has no algorithm 'fft'"),
        ("numba", r"backend 'numba' has no algorithm 'fft'"),
        ("numpy", r"backend 'numpy' has no algorithm 'fft'"),
        ("auto", r"no variant of conv2d(_backward)? matches backend='auto', algorithm='fft'"),
    ],
)
def test_unknown_algorithm(op, backend, message):
    with pytest.raises(ValueError, match=message):
        op(backend=backend, algorithm="fft")
