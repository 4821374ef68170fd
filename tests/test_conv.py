"""Specification of conv2d and conv2d_backward: every compiled variant in the
registry agrees with the NumPy reference, and every backward pass with
numerical gradients.

Tolerances: ``rtol`` relative to each element, plus the same ``rtol`` times
the largest reference magnitude as ``atol`` (sums of mixed-sign products
cancel, so single elements may be far smaller than the terms they sum).
"""
import functools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fastconv import ops, registry
from fastconv.battery import (CONV_EDGE_CASES, CONV_GRADCHECK_CASES, assert_close, conv_geometries,
                              conv_geometry_case, numerical_gradients, other_layouts, random_case, read_only)
from fastconv.battery import CONV_RTOL as RTOL
from fastconv.battery import conv_small_case as small_case
from kernel_modules import conv_module

pytestmark = pytest.mark.usefixtures("thread_count")

FORWARD = registry.variants("conv2d", include_reference=False)
BACKWARD = registry.variants("conv2d_backward", include_reference=False)

# The MNIST CNN's two conv layers at batch 64: (x shape, w shape).
MNIST_SHAPES = {
    "conv1": ((64, 1, 28, 28), (32, 1, 3, 3)),
    "conv2": ((64, 32, 13, 13), (64, 32, 3, 3)),
}


def refused(algorithm, w_shape, stride) -> bool:
    """Whether ``algorithm`` cannot compute a conv of this geometry (and so
    must refuse it): Winograd is for 3x3 kernels at stride 1."""
    return algorithm == "winograd" and (tuple(w_shape[2:]) != (3, 3) or tuple(stride) != (1, 1))


def reference_forward(x, w, b, stride=1, padding=0):
    return ops.conv2d(x, w, b, stride, padding, backend="numpy", algorithm="reference")


def reference_backward(dy, x, w, stride=1, padding=0):
    return ops.conv2d_backward(dy, x, w, stride, padding, backend="numpy", algorithm="reference")


# ------------------------------------------------------------- MNIST shapes


@functools.cache
def mnist_case(layer, dtype):
    """Inputs and reference results of one MNIST layer, computed once."""
    x_shape, w_shape = MNIST_SHAPES[layer]
    out_shape = (x_shape[0], w_shape[0], x_shape[2] - w_shape[2] + 1, x_shape[3] - w_shape[3] + 1)
    x, w, b, dy = random_case(1, x_shape, w_shape, out_shape, dtype)
    return (x, w, b, dy), reference_forward(x, w, b), reference_backward(dy, x, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", sorted(MNIST_SHAPES))
@pytest.mark.parametrize("backend, algorithm", FORWARD)
def test_forward_matches_reference_on_mnist_shapes(backend, algorithm, layer, dtype):
    (x, w, b, _), expected, _ = mnist_case(layer, dtype)
    out = ops.conv2d(x, w, b, backend=backend, algorithm=algorithm)
    assert_close(out, expected, RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", sorted(MNIST_SHAPES))
@pytest.mark.parametrize("backend, algorithm", BACKWARD)
def test_backward_matches_reference_on_mnist_shapes(backend, algorithm, layer, dtype):
    (x, w, _, dy), _, expected = mnist_case(layer, dtype)
    grads = ops.conv2d_backward(dy, x, w, backend=backend, algorithm=algorithm)
    for got, want in zip(grads, expected):
        assert_close(got, want, RTOL[dtype])


# ---------------------------------------------------------- random geometry
# (the strategy, edge cases and case builder of fastconv.battery, which
# fastconv-check runs on a learner's function too)


def random_geometries(test):
    """Run ``test(..., geometry, seed)`` on hypothesis-drawn geometries and on
    every one of the battery's edge cases (a 1x1 kernel, a kernel the size
    of the padded input, a strided window that does not reach the last row
    and column)."""
    test = given(geometry=conv_geometries(), seed=st.integers(0, 2**32 - 1))(test)
    for case in CONV_EDGE_CASES:
        test = example(geometry=case, seed=0)(test)
    return test


geometry_case = conv_geometry_case


@pytest.mark.parametrize("backend, algorithm", FORWARD)
@random_geometries
def test_forward_matches_reference_on_random_geometry(backend, algorithm, geometry, seed):
    x, w, b, _, stride, padding = geometry_case(geometry, seed)
    if refused(algorithm, w.shape, stride):
        with pytest.raises(ValueError, match=f"conv2d: algorithm '{algorithm}' does not apply: it computes 3x3"):
            ops.conv2d(x, w, b, stride, padding, backend=backend, algorithm=algorithm)
        return
    out = ops.conv2d(x, w, b, stride, padding, backend=backend, algorithm=algorithm)
    assert_close(out, reference_forward(x, w, b, stride, padding), RTOL[np.float64])


@pytest.mark.parametrize("backend, algorithm", BACKWARD)
@random_geometries
def test_backward_matches_reference_on_random_geometry(backend, algorithm, geometry, seed):
    x, w, _, dy, stride, padding = geometry_case(geometry, seed)
    if refused(algorithm, w.shape, stride):
        with pytest.raises(ValueError, match=f"conv2d_backward: algorithm '{algorithm}' does not apply"):
            ops.conv2d_backward(dy, x, w, stride, padding, backend=backend, algorithm=algorithm)
        return
    grads = ops.conv2d_backward(dy, x, w, stride, padding, backend=backend, algorithm=algorithm)
    for got, want in zip(grads, reference_backward(dy, x, w, stride, padding)):
        assert_close(got, want, RTOL[np.float64])


# ------------------------------------------------------- without dx

# The reference too: it is the specification of skipping dx.
EVERY_BACKWARD = registry.variants("conv2d_backward")


def assert_same_weight_grads_without_dx(backend, algorithm, dy, x, w, stride=1, padding=0):
    """compute_dx=False gives dx None and the dw, db of a full backward call."""
    options = {"backend": backend, "algorithm": algorithm}
    _, dw, db = ops.conv2d_backward(dy, x, w, stride, padding, **options)
    dx, dw_alone, db_alone = ops.conv2d_backward(dy, x, w, stride, padding, compute_dx=False, **options)
    assert dx is None
    assert_close(dw_alone, dw, RTOL[np.float64])
    assert_close(db_alone, db, RTOL[np.float64])


@pytest.mark.parametrize("backend, algorithm", EVERY_BACKWARD)
def test_backward_without_dx_on_mnist_conv1(backend, algorithm):
    (x, w, _, dy), _, _ = mnist_case("conv1", np.float64)
    assert_same_weight_grads_without_dx(backend, algorithm, dy, x, w)


@pytest.mark.parametrize("backend, algorithm", EVERY_BACKWARD)
@random_geometries
def test_backward_without_dx_on_random_geometry(backend, algorithm, geometry, seed):
    x, w, _, dy, stride, padding = geometry_case(geometry, seed)
    if refused(algorithm, w.shape, stride):
        return  # refused as test_backward_matches_reference_on_random_geometry checks
    assert_same_weight_grads_without_dx(backend, algorithm, dy, x, w, stride, padding)


# ------------------------------------------------------ numerical gradients

@pytest.mark.parametrize("backend, algorithm, x_shape, w_shape, stride, padding", [
    (*variant, *case) for variant in BACKWARD for case in CONV_GRADCHECK_CASES
    if not refused(variant[1], case[1], case[2])])
def test_backward_matches_numerical_gradient(backend, algorithm, x_shape, w_shape, stride, padding):
    out_shape = reference_forward(np.zeros(x_shape), np.zeros(w_shape), None, stride, padding).shape
    x, w, b, dy = random_case(2, x_shape, w_shape, out_shape)

    def forward(x_, w_, b_):
        return ops.conv2d(x_, w_, b_, stride, padding, backend=backend, algorithm=algorithm)

    dx, dw, db = ops.conv2d_backward(dy, x, w, stride, padding, backend=backend, algorithm=algorithm)
    for got, want in zip((dx, dw, db), numerical_gradients(forward, [x, w, b], dy)):
        assert_close(got, want, 1e-6)


# ------------------------------------------------------ layouts and dtypes


@pytest.mark.parametrize("layout", [read_only, other_layouts])
@pytest.mark.parametrize("backend, algorithm", FORWARD)
def test_forward_any_layout(backend, algorithm, layout):
    x, w, b, dy = small_case()
    x_, w_, b_, _ = layout(x, w, b, dy)
    out = ops.conv2d(x_, w_, b_, backend=backend, algorithm=algorithm)
    assert_close(out, reference_forward(x, w, b), RTOL[np.float64])


@pytest.mark.parametrize("layout", [read_only, other_layouts])
@pytest.mark.parametrize("backend, algorithm", BACKWARD)
def test_backward_any_layout(backend, algorithm, layout):
    x, w, b, dy = small_case()
    x_, w_, _, dy_ = layout(x, w, b, dy)
    grads = ops.conv2d_backward(dy_, x_, w_, backend=backend, algorithm=algorithm)
    for got, want in zip(grads, reference_backward(dy, x, w)):
        assert_close(got, want, RTOL[np.float64])


@pytest.mark.parametrize("backend, algorithm", FORWARD)
def test_forward_dtypes(backend, algorithm):
    x, w, b, _ = small_case(np.float32)
    for bias in (None, b):  # an absent bias must not widen float32 either
        assert ops.conv2d(x, w, bias, backend=backend, algorithm=algorithm).dtype == np.float32
    # Any float64 input makes the whole computation float64.
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    for args in ((x, w64, b), (x, w, b64), (x64, w, b)):
        out = ops.conv2d(*args, backend=backend, algorithm=algorithm)
        assert_close(out, reference_forward(x64, w64, b64), RTOL[np.float64])


@pytest.mark.parametrize("backend, algorithm", BACKWARD)
def test_backward_dtypes(backend, algorithm):
    x, w, _, dy = small_case(np.float32)
    grads = ops.conv2d_backward(dy, x, w, backend=backend, algorithm=algorithm)
    assert [g.dtype for g in grads] == [np.float32] * 3
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    for args in ((dy64, x, w), (dy, x64, w), (dy, x, w64)):
        grads = ops.conv2d_backward(*args, backend=backend, algorithm=algorithm)
        for got, want in zip(grads, reference_backward(dy64, x64, w64)):
            assert_close(got, want, RTOL[np.float64])


# ------------------------------------------------------------- winograd

WINOGRAD = [v for v in FORWARD if v[1] == "winograd"]
WINOGRAD_RTOL = {np.float32: 1e-4, np.float64: 1e-10}
"""Winograd's bound, as every variant's: error relative to the largest
reference magnitude (float32: measured on MNIST activations, see
docs/concepts.md, well inside it)."""


@st.composite
def winograd_geometries(draw):
    """3x3 kernels at stride 1, padding 0 or 1 (same-padding), odd and even
    sizes, 1 to 130 channels, batch 1 to 3."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 130)), draw(st.integers(1, 130))
    ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    h, w = draw(st.integers(3 - 2 * ph, 12)), draw(st.integers(3 - 2 * pw, 12))
    return (n, c, h, w), (f, c, 3, 3), (ph, pw), draw(st.sampled_from([np.float32, np.float64]))


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@given(geometry=winograd_geometries(), kernel=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
@example(geometry=((1, 1, 3, 3), (1, 1, 3, 3), (0, 0), np.float64), kernel=3, seed=0)
def test_vectorized_forward_at_stride_one_matches_reference(backend, geometry, kernel, seed):
    """The register-blocked micro-kernel's wide rows: any channel and filter
    count (whole and partial blocks of four), kernels 1 to 4, batch 1 (the
    last image read with room after it), both dtypes."""
    x_shape, w_shape, padding, dtype = geometry
    w_shape = w_shape[:2] + (min(kernel, x_shape[2] + 2 * padding[0]), min(kernel, x_shape[3] + 2 * padding[1]))
    out_shape = reference_forward(np.zeros(x_shape), np.zeros(w_shape), None, 1, padding).shape
    x, w, b, _ = random_case(seed, x_shape, w_shape, out_shape, dtype)
    out = ops.conv2d(x, w, b, 1, padding, backend=backend, algorithm="vectorized")
    exact = [a.astype(np.float64) for a in (x, w, b)]
    assert_close(out, reference_forward(*exact, 1, padding).astype(dtype), 1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@given(geometry=winograd_geometries(), kernel=st.integers(1, 4), compute_dx=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@example(geometry=((1, 1, 3, 3), (1, 1, 3, 3), (0, 0), np.float64), kernel=3, compute_dx=True, seed=0)
# 9 images in chunks of 4 and 5, gradient planes of 136 filters: groups of 3
@example(geometry=((9, 130, 12, 12), (130, 130, 3, 3), (1, 1), np.float32), kernel=3, compute_dx=True, seed=0)
def test_vectorized_backward_at_stride_one_matches_reference(backend, geometry, kernel, compute_dx, seed):
    """The micro-kernel's backward pass (gradient planes, the filter-gradient
    tile, dx as a full convolution): any channel and filter count, kernels
    1 to 4, the batch's last image read from its copy, both dtypes, with
    and without dx."""
    x_shape, w_shape, padding, dtype = geometry
    w_shape = w_shape[:2] + (min(kernel, x_shape[2] + 2 * padding[0]), min(kernel, x_shape[3] + 2 * padding[1]))
    out_shape = reference_forward(np.zeros(x_shape), np.zeros(w_shape), None, 1, padding).shape
    x, w, _, dy = random_case(seed, x_shape, w_shape, out_shape, dtype)
    grads = ops.conv2d_backward(dy, x, w, 1, padding, compute_dx=compute_dx, backend=backend,
                                algorithm="vectorized")
    expected = reference_backward(*(a.astype(np.float64) for a in (dy, x, w)), 1, padding)
    assert (grads[0] is None) == (not compute_dx)
    for got, want in zip(grads, expected):
        if got is not None:
            assert_close(got, want.astype(dtype), 1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("group_bytes", [1, 25_000, 40_000, 10**9])
def test_vectorized_backward_gives_the_same_results_whatever_images_share_a_group(backend, group_bytes,
                                                                                  monkeypatch):
    # 7 images in chunks of 3 and 4 (2 threads); one image's gradient
    # planes and padded input take 7 to 12 kB (4 or 8 planes of 144 to 152
    # float64s, as the build's tile has 4 or 8 filters, and 3 channels of
    # 11 x 10): groups of one image, of two to five, and a whole chunk.
    monkeypatch.setattr(conv_module(backend), "GROUP_BYTES", group_bytes)
    rng = np.random.default_rng(8)
    x, w, dy = rng.standard_normal((7, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((7, 4, 9, 8))
    for compute_dx in (True, False):
        grads = ops.conv2d_backward(dy, x, w, 1, 1, compute_dx=compute_dx, backend=backend, algorithm="vectorized")
        for got, want in zip(grads, reference_backward(dy, x, w, 1, 1)):
            if compute_dx or got is not None:
                assert_close(got, want, 1e-10)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorized_at_stride_one_reads_nothing_of_another_image(backend, dtype):
    # The micro-kernel reads whole vectors, past the end of an image. Images
    # of one value (smaller than a vector): those reads must not reach past
    # the batch. An inf at the start of the second image: the first image's
    # filter gradient, whose reads past its end are multiplied by a zero
    # gradient, must not turn it into NaN in the channel that is finite.
    rng = np.random.default_rng(10)
    tiny = rng.standard_normal((5, 1, 1, 1)).astype(dtype)
    w, dy = rng.standard_normal((1, 1, 1, 1)).astype(dtype), rng.standard_normal((5, 1, 1, 1)).astype(dtype)
    exact = [a.astype(np.float64) for a in (tiny, w, dy)]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(ops.conv2d(tiny, w, None, backend=backend, algorithm="vectorized"),
                 reference_forward(*exact[:2], None).astype(dtype), rtol)
    for got, want in zip(ops.conv2d_backward(dy, tiny, w, backend=backend, algorithm="vectorized"),
                         reference_backward(exact[2], *exact[:2])):
        assert_close(got, want.astype(dtype), rtol)
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    x[1, 0, 0, 0] = np.inf
    w, dy = rng.standard_normal((3, 2, 3, 3)).astype(dtype), rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    _, dw, _ = ops.conv2d_backward(dy, x, w, compute_dx=False, backend=backend, algorithm="vectorized")
    want = reference_backward(*(a.astype(np.float64) for a in (dy, x, w)))[1]
    assert np.all(np.isfinite(dw[:, 1]))
    assert_close(dw[:, 1], want[:, 1].astype(dtype), rtol)


@pytest.mark.parametrize("backend, algorithm", WINOGRAD)
@given(geometry=winograd_geometries(), seed=st.integers(0, 2**32 - 1))
@example(geometry=((1, 1, 3, 3), (1, 1, 3, 3), (0, 0), np.float64), seed=0)  # one tile, half of it outside
@example(geometry=((2, 130, 5, 4), (3, 130, 3, 3), (1, 1), np.float32), seed=0)
def test_winograd_matches_reference_forward_and_backward(backend, algorithm, geometry, seed):
    check_winograd(backend, algorithm, geometry, seed)


def check_winograd(backend, algorithm, geometry, seed):
    x_shape, w_shape, padding, dtype = geometry
    out_shape = reference_forward(np.zeros(x_shape), np.zeros(w_shape), None, 1, padding).shape
    x, w, b, dy = random_case(seed, x_shape, w_shape, out_shape, dtype)
    exact = [a.astype(np.float64) for a in (x, w, b, dy)]
    out = ops.conv2d(x, w, b, 1, padding, backend=backend, algorithm=algorithm)
    assert_close(out, reference_forward(*exact[:3], 1, padding).astype(dtype), WINOGRAD_RTOL[dtype])
    grads = ops.conv2d_backward(dy, x, w, 1, padding, backend=backend, algorithm=algorithm)
    expected = reference_backward(exact[3], *exact[:2], 1, padding)
    for got, want in zip(grads, expected):
        assert_close(got, want.astype(dtype), WINOGRAD_RTOL[dtype])


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("out_size, tile", [((14, 14), 2), ((7, 7), 4), ((11, 11), 4), ((2, 2), 2), ((6, 6), 2),
                                            ((8, 8), 4), ((1, 30), 2)])
def test_winograd_takes_4x4_tiles_where_they_save_a_third_of_the_multiplications(backend, out_size, tile):
    # cnn-deep conv2 (14x14): F(4x4) would need 576 products a channel pair against 784, 0.73: measured
    # slower. conv3 (7x7) and cnn's conv2 (11x11): 0.56.
    assert conv_module(backend)._tile_size(*out_size) == tile


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("tile", [2, 4])
@given(geometry=winograd_geometries(), seed=st.integers(0, 2**32 - 1))
def test_winograd_matches_reference_with_either_tile_size(backend, tile, geometry, seed):
    """Each tile size on every shape, whichever the kernel would choose."""
    module = conv_module(backend)
    choose = module._tile_size
    module._tile_size = lambda oh, ow: tile
    try:
        check_winograd(backend, "winograd", geometry, seed)
    finally:
        module._tile_size = choose


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("padding", [(1, 1), (1, 0), (0, 1)])
def test_winograd_takes_the_padding_itself_as_the_padded_input_would_give(backend, fused, padding, monkeypatch):
    """ops hands Winograd the unpadded x with padding=: no padded copy of x,
    no crop of dx (ops._pad and ops._crop never run), the reference's
    results. The kernel given x padded and no padding (the inference plan's
    way) gives the same values bit for bit; the backward pass writes dx
    whole (it arrives NaN-filled here: no NaN may survive)."""
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((5, 6, 9, 7)), rng.standard_normal((4, 6, 3, 3))
    b, xp = rng.standard_normal(4), np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out_shape = reference_forward(x, w, None, 1, padding).shape
    pool = (2, 2, 2, 2) if fused else ()
    if fused:
        out_shape = out_shape[:2] + (out_shape[2] // 2, out_shape[3] // 2)
    op = "conv2d_relu_maxpool2d" if fused else "conv2d"
    forward, backward = (registry.kernel(name, backend, "winograd") for name in (op, op + "_backward"))
    assert registry.takes_padding(forward) and registry.takes_padding(backward)
    with monkeypatch.context() as no_copies:
        for name in ("_pad", "_crop"):
            no_copies.setattr(ops, name, lambda *args, name=name: pytest.fail(f"ops.{name} ran for Winograd"))
        dy = rng.standard_normal(out_shape)
        if fused:
            out, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, padding, 2, backend=backend, algorithm="winograd")
            got = (out, code) + ops.conv2d_relu_maxpool2d_backward(dy, code, x, w, 1, padding, 2, backend=backend,
                                                                   algorithm="winograd")
        else:
            got = (ops.conv2d(x, w, b, 1, padding, backend=backend, algorithm="winograd"),
                   *ops.conv2d_backward(dy, x, w, 1, padding, backend=backend, algorithm="winograd"))
    if fused:
        want = ops.conv2d_relu_maxpool2d(x, w, b, 1, padding, 2, backend="numpy")
        want += ops.conv2d_relu_maxpool2d_backward(dy, want[1], x, w, 1, padding, 2, backend="numpy")
    else:
        want = (reference_forward(x, w, b, 1, padding), *reference_backward(dy, x, w, 1, padding))
    for g, r in zip(got, want):
        assert_close(g, r, WINOGRAD_RTOL[np.float64])
    outputs = [[np.empty(out_shape)] + ([np.empty(out_shape, np.uint8)] if fused else []) for _ in range(2)]
    forward(x, w, b, 1, 1, *pool, *outputs[0], padding=padding)
    forward(xp, w, b, 1, 1, *pool, *outputs[1])
    for by_kernel, by_caller in zip(*outputs):
        np.testing.assert_array_equal(by_kernel, by_caller)
    code = (outputs[0][1],) if fused else ()
    dy = rng.standard_normal(out_shape)
    grads = [(np.full(shape, np.nan), np.zeros_like(w)) + ((np.zeros(4),) if fused else ())
             for shape in (x.shape, xp.shape)]
    backward(dy, *code, x, w, 1, 1, *pool, *grads[0], padding=padding)
    backward(dy, *code, xp, w, 1, 1, *pool, *grads[1])
    ph, pw = padding
    np.testing.assert_array_equal(grads[0][0], grads[1][0][:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]])
    for by_kernel, by_caller in zip(grads[0][1:], grads[1][1:]):
        np.testing.assert_array_equal(by_kernel, by_caller)
    assert not np.isnan(grads[0][0]).any() and not np.isnan(grads[1][0]).any()


@pytest.mark.parametrize("backend, algorithm", WINOGRAD)
@pytest.mark.parametrize("w_shape, stride", [((2, 1, 5, 5), 1), ((2, 1, 3, 3), 2), ((2, 1, 3, 1), 1)])
def test_winograd_refuses_what_it_cannot_compute_and_auto_passes_it_over(backend, algorithm, w_shape, stride):
    x = np.ones((2, 1, 8, 8), np.float32)
    w = np.ones(w_shape, np.float32)
    with pytest.raises(ValueError, match=r"algorithm 'winograd' does not apply: it computes 3x3 kernels at "
                                         r"stride 1 only, got kernel \d+x\d+ at stride \(\d, \d\)"):
        ops.conv2d(x, w, stride=stride, backend=backend, algorithm=algorithm)
    assert_close(ops.conv2d(x, w, stride=stride, backend=backend), reference_forward(x, w, None, stride), 1e-6)
