"""An empty batch (N = 0) is valid input to every op and every variant: the
empty output, zero parameter gradients, and no kernel called (a gemm kernel
would split 0 images into 0 chunks)."""
import numpy as np
import pytest

from fastconv import ops, registry

X = np.zeros((0, 3, 9, 8), np.float32)
W = np.ones((4, 3, 3, 3), np.float32)
B = np.ones(4, np.float32)


def _call(op, variant):
    """The op on an empty batch: (result, expected shapes)."""
    kw = dict(zip(("backend", "algorithm"), variant))
    if op == "conv2d":
        return ops.conv2d(X, W, B, 1, 1, **kw), [(0, 4, 9, 8)]
    if op == "conv2d_backward":
        return ops.conv2d_backward(np.zeros((0, 4, 9, 8), np.float32), X, W, 1, 1, **kw), \
            [(0, 3, 9, 8), (4, 3, 3, 3), (4,)]
    if op in ("max_pool2d", "avg_pool2d"):
        return getattr(ops, op)(X, 2, **kw), [(0, 3, 4, 4)]
    if op in ("max_pool2d_backward", "avg_pool2d_backward"):
        return getattr(ops, op)(np.zeros((0, 3, 4, 4), np.float32), X, 2, **kw), [(0, 3, 9, 8)]
    if op == "conv2d_relu_maxpool2d":
        return ops.conv2d_relu_maxpool2d(X, W, B, 1, 1, 2, **kw), [(0, 4, 4, 4), (0, 4, 4, 4)]
    c = np.ones(3, np.float32)
    if op == "batch_norm":  # in evaluation: training's statistics of no values are NaN (test_batch_norm_ops.py)
        return ops.batch_norm(X, c, c, c, c, training=False, **kw), [(0, 3, 9, 8)]
    if op == "batch_norm_backward":
        return ops.batch_norm_backward(X, X, c, c, c, **kw), [(0, 3, 9, 8), (3,), (3,)]
    code = np.zeros((0, 4, 4, 4), np.uint8)
    return ops.conv2d_relu_maxpool2d_backward(np.zeros((0, 4, 4, 4), np.float32), code, X, W, 1, 1, 2, **kw), \
        [(0, 3, 9, 8), (4, 3, 3, 3), (4,)]


def _every_variant():
    return [(op, v) for op in registry.OPS for v in registry.variants(op) + [("auto", "auto")]]


@pytest.mark.parametrize("op, variant", _every_variant(), ids=lambda v: "/".join(v) if isinstance(v, tuple) else v)
def test_every_variant_returns_the_empty_result_and_zero_gradients(op, variant):
    result, shapes = _call(op, variant)
    arrays = result if isinstance(result, tuple) else (result,)
    assert [a.shape for a in arrays] == shapes
    for a in arrays:
        assert not np.any(a)  # parameter gradients of no images are zero
    assert arrays[0].dtype == np.float32


def test_an_unknown_variant_is_refused_for_an_empty_batch_too():
    with pytest.raises(ValueError, match="no algorithm 'fft'"):
        ops.conv2d(X, W, backend="cython", algorithm="fft")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.max_pool2d(X, 2, backend="cuda")

