"""Specification of the fused conv2d_relu_maxpool2d op: every variant equals
the unfused chain conv2d -> ReLU -> max_pool2d, forward and every gradient,
and the model runs it wherever that chain appears.

The unfused chain (fastconv.battery.unfused) is built from the reference
ops (NumPy) and ReLU's own rule, so a fused kernel is checked against code
it shares nothing with.
"""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import fusion, models, ops, registry, threads
from fastconv.battery import assert_close, numerical_gradients, unfused
from fastconv.battery import fused_geometries as geometries
from fastconv.kernels import NO_GRADIENT
from fastconv.model import Sequential
from fastconv.layers import Conv2D, Flatten, MaxPool2D, ReLU
from kernel_modules import conv_module

FUSED = registry.variants("conv2d_relu_maxpool2d")
REFERENCE = {"backend": "numpy", "algorithm": "reference"}


def fused(variant, x, w, b, stride, padding, pool, pool_stride, dy, compute_dx=True):
    backend, algorithm = variant
    y, code = ops.conv2d_relu_maxpool2d(x, w, b, stride, padding, pool, pool_stride,
                                        backend=backend, algorithm=algorithm)
    grads = ops.conv2d_relu_maxpool2d_backward(dy, code, x, w, stride, padding, pool, pool_stride,
                                               compute_dx=compute_dx, backend=backend, algorithm=algorithm)
    return (y, code) + grads


def test_every_compiled_backend_has_naive_vectorized_gemm_and_winograd_fused_ops():
    for op in ("conv2d_relu_maxpool2d", "conv2d_relu_maxpool2d_backward"):
        for backend in registry.COMPILED_BACKENDS:
            found = {a for b, a in registry.variants(op, include_reference=False) if b == backend}
            assert found == {"naive", "vectorized", "gemm", "winograd"}, (op, backend)


def refused(variant, k, stride) -> bool:
    """Whether the variant cannot compute a k x k conv at this stride:
    Winograd is for 3x3 kernels at stride 1."""
    return variant[1] == "winograd" and (k != 3 or stride != 1)


@pytest.mark.parametrize("variant", FUSED, ids="/".join)
@given(geometry=geometries(), seed=st.integers(0, 2**16))
def test_fused_equals_unfused_chain_on_random_shapes(variant, geometry, seed):
    x_shape, w_shape, stride, padding, pool, pool_stride = geometry
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    conv = ops.conv2d(x, w, b, stride, padding, **REFERENCE)
    y_ref = ops.max_pool2d(np.maximum(conv, 0), pool, pool_stride, **REFERENCE)
    dy = rng.standard_normal(y_ref.shape)
    expected = unfused(x, w, b, stride, padding, pool, pool_stride, dy)
    if refused(variant, w_shape[2], stride):
        with pytest.raises(ValueError, match="algorithm 'winograd' does not apply: it computes 3x3 kernels"):
            fused(variant, x, w, b, stride, padding, pool, pool_stride, dy)
        return
    y, code, dx, dw, db = fused(variant, x, w, b, stride, padding, pool, pool_stride, dy)
    for got, want in zip((y, dx, dw, db), expected):
        assert_close(got, want, 1e-10)
    assert code.dtype == np.uint8
    assert np.all((code == NO_GRADIENT) == ~(y > 0))


@pytest.mark.parametrize("variant", FUSED, ids="/".join)
def test_ties_go_to_the_first_maximum_and_relu_cuts_non_positive_windows(variant):
    # Small integers make every sum exact (Winograd's halves too): many
    # equal values in a window, many windows whose maximum is 0 or negative.
    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, (2, 2, 10, 10)).astype(np.float64)
    w = rng.integers(-1, 2, (3, 2, 3, 3)).astype(np.float64)
    b = np.array([0.0, -1.0, 1.0])
    dy = rng.integers(1, 5, (2, 3, 4, 4)).astype(np.float64)
    expected = unfused(x, w, b, 1, 0, 2, 2, dy)
    y, code, dx, dw, db = fused(variant, x, w, b, 1, 0, 2, 2, dy)
    assert np.any(code == NO_GRADIENT) and np.any(code != NO_GRADIENT)
    for got, want in zip((y, dx, dw, db), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", FUSED, ids="/".join)
def test_nan_passes_through_and_sends_no_gradient(variant):
    x = np.ones((1, 1, 10, 10))
    x[0, 0, 1, 1] = np.nan
    w, b = np.ones((1, 1, 3, 3)), np.zeros(1)
    y, code, dx, dw, db = fused(variant, x, w, b, 1, 0, 2, 2, np.ones((1, 1, 4, 4)))
    conv = ops.conv2d(x, w, b, **REFERENCE)
    want = ops.max_pool2d(np.maximum(conv, 0), 2, **REFERENCE)
    assert np.isnan(y[0, 0, 0, 0]) and np.all((code == NO_GRADIENT)[np.isnan(y)])
    if variant[1] != "winograd":
        np.testing.assert_array_equal(y, want)
        return
    # Winograd's transforms mix a whole input patch, so a NaN reaches every
    # output of its tile (at most 4x4 conv outputs: here pooled rows and
    # columns 0 and 1), not only those whose window holds it; the rest is exact.
    assert np.all(np.isnan(y)[np.isnan(want)])
    assert not np.isnan(y[..., 2:, :]).any() and not np.isnan(y[..., 2:]).any()
    np.testing.assert_array_equal(y[~np.isnan(y)], want[~np.isnan(y)])


VECTORIZED = [v for v in FUSED if v[1] == "vectorized"]


@st.composite
def stride_one_geometries(draw):
    """What the vectorized forward pass at stride 1 does by output phases (2x2
    pools at stride 2 over up to 32 taps) or by wide rows (more taps, other
    pools): 1 to 40 channels, 1 to 20 filters (whole and partial blocks of
    four), kernels 1 to 4, odd and even sizes, batch 1 to 3, both dtypes."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 40)), draw(st.integers(1, 20))
    k, padding = draw(st.integers(1, 4)), draw(st.integers(0, 1))
    pool, pool_stride = draw(st.sampled_from([(2, 2), (2, 1), (3, 2), (1, 1)]))
    size_min = pool + k - 1 - 2 * padding
    h, w = draw(st.integers(max(1, size_min), size_min + 7)), draw(st.integers(max(1, size_min), size_min + 7))
    return (n, c, h, w), (f, c, k, k), padding, pool, pool_stride, draw(st.sampled_from([np.float32, np.float64]))


@pytest.mark.parametrize("variant", VECTORIZED, ids="/".join)
@given(geometry=stride_one_geometries(), seed=st.integers(0, 2**16))
def test_vectorized_forward_at_stride_one_equals_the_unfused_chain(variant, geometry, seed):
    x_shape, w_shape, padding, pool, pool_stride, dtype = geometry
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    backend, algorithm = variant
    y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, padding, pool, pool_stride, backend=backend, algorithm=algorithm)
    relu = np.maximum(ops.conv2d(x, w, b, 1, padding, **REFERENCE), 0)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert_close(y, ops.max_pool2d(relu, pool, pool_stride, **REFERENCE), rtol)
    # every code names a window position holding the pooled value, or is NO_GRADIENT where it is 0
    image, channel, row, col = np.indices(y.shape)
    taken = code != NO_GRADIENT
    at = np.where(taken, code, 0)
    picked = relu[image, channel, row * pool_stride + at // pool, col * pool_stride + at % pool]
    assert_close(picked[taken], y[taken], rtol)
    assert np.all(y[~taken] == 0)


@pytest.mark.parametrize("variant", VECTORIZED, ids="/".join)
@given(geometry=stride_one_geometries(), compute_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_vectorized_backward_at_stride_one_equals_the_unfused_chain(variant, geometry, compute_dx, seed):
    """The micro-kernel's backward pass with the pooled gradient routed into
    the gradient planes: overlapping and non-overlapping pools, ReLU cuts."""
    x_shape, w_shape, padding, pool, pool_stride, dtype = geometry
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y_shape = ops.conv2d_relu_maxpool2d(x, w, b, 1, padding, pool, pool_stride, **REFERENCE)[0].shape
    dy = rng.standard_normal(y_shape).astype(dtype)
    _, _, dx, dw, db = fused(variant, x, w, b, 1, padding, pool, pool_stride, dy, compute_dx)
    _, *expected = unfused(*(a.astype(np.float64) for a in (x, w, b)), 1, padding, pool, pool_stride,
                           dy.astype(np.float64))
    assert (dx is None) == (not compute_dx)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for got, want in zip((dx, dw, db), expected):
        if got is not None:
            assert_close(got, want.astype(dtype), rtol)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("group_bytes", [1, 25_000, 40_000, 10**9])
@pytest.mark.parametrize("pool, pool_stride", [(2, 2), (3, 2)])
def test_vectorized_backward_clears_the_gradient_planes_between_groups(backend, group_bytes, pool, pool_stride,
                                                                       monkeypatch):
    # A thread's gradient planes are reused by its next group of images,
    # zeroed where the last group's codes wrote. 7 images in chunks of 3
    # and 4 (2 threads), 7 to 12 kB of planes and input per image: groups
    # of one image, of two to five, and a whole chunk.
    module = conv_module(backend)
    monkeypatch.setattr(module, "GROUP_BYTES", group_bytes)
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((7, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y_shape = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, pool, pool_stride, **REFERENCE)[0].shape
    dy = rng.standard_normal(y_shape)
    got = fused((backend, "vectorized"), x, w, b, 1, 1, pool, pool_stride, dy)
    expected = unfused(x, w, b, 1, 1, pool, pool_stride, dy)
    for a, e in zip((got[0],) + got[2:], expected):
        assert_close(a, e, 1e-10)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("n_img, n_threads", [(1, 2), (2, 3), (1, 3)])
@pytest.mark.parametrize("n_chan", [2, 7], ids=["by-phases", "wide-rows"])
def test_vectorized_forward_with_filters_shared_between_threads_equals_the_chain(backend, n_img, n_threads, n_chan,
                                                                               monkeypatch):
    # Fewer images than threads share each image's filters out between the
    # threads (from SPLIT_MACS of work an image; 0 here): one or two images
    # in parts of whole tiles, a part of partial tile (20 filters), both
    # forward paths (18 taps by output phases, 63 by wide rows) and the conv.
    module = conv_module(backend)
    monkeypatch.setattr(module, "SPLIT_MACS", 0)
    rng = np.random.default_rng(n_img * n_chan)
    x, w = rng.standard_normal((n_img, n_chan, 11, 10)), rng.standard_normal((20, n_chan, 3, 3))
    b = rng.standard_normal(20)
    threads.set_num_threads(n_threads)
    try:
        running = numba.get_num_threads() if backend == "numba" else n_threads  # Numba: one a core at most
        if n_img >= running:
            pytest.skip(f"{backend} runs {running} threads here: no fewer images than threads")
        assert module._work_split(np.empty((n_img, n_chan, 13, 12)), w)[1] > 1  # the filters are shared out
        y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, 2, backend=backend, algorithm="vectorized")
        conv = ops.conv2d(x, w, b, 1, 1, backend=backend, algorithm="vectorized")
    finally:
        threads.set_num_threads(None)
    expected = ops.conv2d(x, w, b, 1, 1, **REFERENCE)
    assert_close(conv, expected, 1e-10)
    assert_close(y, ops.max_pool2d(np.maximum(expected, 0), 2, 2, **REFERENCE), 1e-10)
    np.testing.assert_array_equal(code, ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, 2, **REFERENCE)[1])


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_with_either_tile_size_keeps_ties_exact_and_equals_the_chain(backend, tile, monkeypatch):
    # G is kept in integers and the results divided at the end, so small
    # integers give exact sums with F(4x4)'s sixths and 24ths too: equal
    # conv outputs stay equal and the first maximum of a window wins.
    module = conv_module(backend)
    monkeypatch.setattr(module, "_tile_size", lambda oh, ow: tile)
    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, (3, 5, 11, 9)).astype(np.float64)
    w = rng.integers(-1, 2, (4, 5, 3, 3)).astype(np.float64)
    b = np.array([0.0, -1.0, 1.0, 2.0])
    dy = rng.integers(1, 5, (3, 4, 5, 4)).astype(np.float64)
    expected = unfused(x, w, b, 1, 1, 2, 2, dy)
    y, code, dx, dw, db = fused((backend, "winograd"), x, w, b, 1, 1, 2, 2, dy)
    assert np.any(code == NO_GRADIENT) and np.any(code != NO_GRADIENT)
    for got, want in zip((y, dx, dw, db), expected):
        np.testing.assert_array_equal(got, want)
    x32, w32, b32 = (rng.standard_normal(a.shape).astype(np.float32) for a in (x, w, b))
    expected = unfused(*(a.astype(np.float64) for a in (x32, w32, b32)), 1, 1, 2, 2, dy)
    got = fused((backend, "winograd"), x32, w32, b32, 1, 1, 2, 2, dy.astype(np.float32))
    for a, e in zip((got[0],) + got[2:], expected):
        assert_close(a, e.astype(np.float32), 1e-4)


@pytest.mark.parametrize("variant", [v for v in FUSED if v[1] == "winograd"], ids="/".join)
@given(n_filt=st.integers(1, 40), size=st.tuples(st.integers(2, 11), st.integers(2, 11)),
       pool_stride=st.sampled_from([1, 2]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_winograd_pools_2x2_windows_across_filter_blocks_as_the_chain(variant, n_filt, size, pool_stride, dtype,
                                                                      seed):
    # Winograd pools a 2x2 window from its filters-innermost conv output, then
    # moves the pooled values and codes filters-first in blocks of 16 filters:
    # whole and partial blocks, odd sizes (a last row or column no window
    # covers) and overlapping windows.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    w, b = rng.standard_normal((n_filt, 3, 3, 3)).astype(dtype), rng.standard_normal(n_filt).astype(dtype)
    backend, algorithm = variant
    y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, pool_stride, backend=backend, algorithm=algorithm)
    relu = np.maximum(ops.conv2d(x, w, b, 1, 1, **REFERENCE), 0)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert_close(y, ops.max_pool2d(relu, 2, pool_stride, **REFERENCE), rtol)
    image, channel, row, col = np.indices(y.shape)
    taken = code != NO_GRADIENT
    at = np.where(taken, code, 0)
    picked = relu[image, channel, row * pool_stride + at // 2, col * pool_stride + at % 2]
    assert_close(picked[taken], y[taken], rtol)
    assert np.all(y[~taken] == 0)


@pytest.mark.parametrize("variant", [v for v in FUSED if v[0] != "numpy"], ids="/".join)
@pytest.mark.parametrize("layer, x_shape, w_shape", [
    ("conv1", (64, 1, 28, 28), (32, 1, 3, 3)),
    ("conv2", (64, 32, 13, 13), (64, 32, 3, 3)),
])
def test_mnist_shapes_in_float32(variant, layer, x_shape, w_shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    b = rng.standard_normal(w_shape[0], dtype=np.float32)
    dy = rng.standard_normal((64, w_shape[0], (x_shape[2] - 2) // 2, (x_shape[3] - 2) // 2), dtype=np.float32)
    y, code, dx, dw, db = fused(variant, x, w, b, 1, 0, 2, None, dy)
    expected = unfused(x, w, b, 1, 0, 2, None, dy)
    for got, want in zip((y, dx, dw, db), expected):
        assert_close(got, want, 1e-4)


@pytest.mark.parametrize("variant", FUSED, ids="/".join)
def test_gradients_match_central_differences(variant):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    dy = rng.standard_normal((2, 3, 2, 2))
    _, _, dx, dw, db = fused(variant, x, w, b, 1, 0, 2, None, dy)
    backend, algorithm = variant

    def forward(x_, w_, b_):
        return ops.conv2d_relu_maxpool2d(x_, w_, b_, 1, 0, 2, backend=backend, algorithm=algorithm)[0]

    for got, want in zip((dx, dw, db), numerical_gradients(forward, [x, w, b], dy)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_without_dx_the_weight_gradients_are_the_same():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((3, 2, 8, 8)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    dy = rng.standard_normal((3, 4, 3, 3))
    for variant in FUSED:
        full = fused(variant, x, w, b, 1, 0, 2, None, dy)
        no_dx = fused(variant, x, w, b, 1, 0, 2, None, dy, compute_dx=False)
        assert no_dx[2] is None
        np.testing.assert_array_equal(no_dx[3], full[3])


# ----------------------------------------------------------- bad input


def test_bad_arguments_raise_clear_errors():
    x, w = np.zeros((1, 1, 6, 6)), np.zeros((2, 1, 3, 3))
    y, code = ops.conv2d_relu_maxpool2d(x, w, pool_size=2)
    dy = np.zeros_like(y)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d_relu_maxpool2d(x, w, pool_size=5)
    with pytest.raises(ValueError, match="more than 255 taps"):
        ops.conv2d_relu_maxpool2d(np.zeros((1, 1, 20, 20)), np.zeros((1, 1, 1, 1)), pool_size=16)
    with pytest.raises(ValueError, match="code must be uint8"):
        ops.conv2d_relu_maxpool2d_backward(dy, code.astype(np.int64), x, w)
    with pytest.raises(ValueError, match="code must be uint8 of shape"):
        ops.conv2d_relu_maxpool2d_backward(dy, code[:, :, :1], x, w)
    with pytest.raises(ValueError, match="past the"):
        ops.conv2d_relu_maxpool2d_backward(dy, np.full_like(code, 7), x, w)
    for past in (4, NO_GRADIENT - 1):  # the first code past a 2x2 window, the last one before NO_GRADIENT
        one_past = code.copy()
        one_past.flat[-1] = past
        with pytest.raises(ValueError, match="past the"):
            ops.conv2d_relu_maxpool2d_backward(dy, one_past, x, w)
    ops.conv2d_relu_maxpool2d_backward(dy, np.full_like(code, NO_GRADIENT), x, w)  # every window cut: valid
    with pytest.raises(ValueError, match="dy must have the output shape"):
        ops.conv2d_relu_maxpool2d_backward(dy[:, :1], code, x, w)
    with pytest.raises(TypeError, match="compute_dx must be a bool"):
        ops.conv2d_relu_maxpool2d_backward(dy, code, x, w, compute_dx=1)
    with pytest.raises(ValueError, match="no algorithm 'im2col'"):
        ops.conv2d_relu_maxpool2d(x, w, backend="cython", algorithm="im2col")


# ------------------------------------------------------------ the model


def cnn(fuse, **kernels):
    return Sequential(models.cnn(kernels), input_shape=models.INPUT_SHAPE, seed=0, dtype=np.float64, fuse=fuse)


def test_the_cnn_runs_its_two_conv_blocks_fused():
    names = [step.name for step in cnn(True).steps]
    assert names[:2] == ["conv2d+relu+max_pool2d", "conv2d_1+relu_1+max_pool2d_1"]
    assert [step.name for step in cnn(False).steps][:3] == ["conv2d", "relu", "max_pool2d"]


def test_no_fusion_where_the_chain_differs_or_the_kernels_forbid_it():
    conv, relu = Conv2D(1, 2, 3), ReLU()
    assert not fusion.fusible(conv, relu, MaxPool2D(2, padding=1))
    assert not fusion.fusible(conv, ReLU(), Flatten())
    assert not fusion.fusible(Conv2D(1, 2, 3, algorithm="im2col"), relu,
                              MaxPool2D(2, algorithm="im2col"))
    assert fusion.fusible(Conv2D(1, 2, 3, algorithm="gemm"), relu, MaxPool2D(2, algorithm="gemm"))


def test_fused_model_equals_unfused_model_forward_and_gradients():
    rng = np.random.default_rng(5)
    x, dlogits = rng.random((6, 1, 28, 28)), rng.standard_normal((6, 10))
    results = []
    for fuse in (True, False):
        model = cnn(fuse)
        logits = model.forward(x, training=True)
        dx = model.backward(dlogits, input_grad=True)
        results.append((logits, dx, model.grads))
    (logits_f, dx_f, grads_f), (logits_u, dx_u, grads_u) = results
    np.testing.assert_allclose(logits_f, logits_u, rtol=1e-10)
    np.testing.assert_allclose(dx_f, dx_u, rtol=1e-9, atol=1e-12)
    for name in grads_u:
        np.testing.assert_allclose(grads_f[name], grads_u[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_turning_fusion_off_replans():
    model = cnn(True)
    model.fuse = False
    assert len(model.steps) == len(model.layers)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("cache_bytes", [1, 25_000, 40_000, 10**9])
def test_gemm_kernels_give_the_same_results_whatever_images_share_a_gemm(backend, cache_bytes, monkeypatch):
    # 7 images in chunks of 3 and 4 (2 threads); one image's forward
    # buffers take 10,416 bytes (31 rows of 42 float64s): groups of 1, 2, 3
    # and a whole chunk, so groups that divide a chunk, that leave a
    # shorter last group, and as wide as a chunk.
    from fastconv import cpu

    monkeypatch.setattr(cpu, "gemm_group_bytes", lambda: cache_bytes)
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((7, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dy = rng.standard_normal((7, 4, 3, 3))
    got = fused((backend, "gemm"), x, w, b, 1, 0, 2, None, dy)
    expected = unfused(x, w, b, 1, 0, 2, None, dy)
    for a, e in zip((got[0],) + got[2:], expected):
        assert_close(a, e, 1e-10)
    dy_conv = rng.standard_normal((7, 4, 7, 6))
    grads = ops.conv2d_backward(dy_conv, x, w, backend=backend, algorithm="gemm")
    for a, e in zip(grads, ops.conv2d_backward(dy_conv, x, w, **REFERENCE)):
        assert_close(a, e, 1e-10)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("n_chunks", [1, 2, 3, 7])
def test_gemm_kernels_give_the_same_results_however_many_chunks_dispatch_passes(backend, n_chunks):
    # The raw kernel, called as dispatch calls it, with its two scheduling
    # arguments: more chunks than threads and one per image must still
    # cover the batch exactly once.
    from fastconv import threads

    kernel = registry.family_kernels(backend, "conv")[("conv2d", "gemm")].__wrapped__
    while hasattr(kernel, "__wrapped__"):
        kernel = kernel.__wrapped__
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((7, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out = np.empty((7, 4, 7, 6))
    with threads.single_threaded_blas():
        kernel(x, w, b, 1, 1, out, n_chunks, 25_000)
    assert_close(out, ops.conv2d(x, w, b, **REFERENCE), 1e-10)
