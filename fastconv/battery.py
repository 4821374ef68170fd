"""The battery every kernel variant passes, in one place: the test suite
(``tests/test_conv.py``, ``test_pool.py``, ``test_fused.py``) checks the
registry's variants with it, and ``fastconv-check`` a learner's function.

Two layers:

- the pieces the tests have always used: hypothesis strategies of conv,
  pool and fused geometry (odd sizes, stride, padding, one channel, batch
  1, kernels as large as the padded input), the edge cases always tried,
  seeded random inputs, numerical gradients, other memory layouts, pooling
  ties and NaN, and the tolerances;
- on top of them, the same battery as :class:`Case` lists in the
  learner-facing call of each op (plain ints for stride, padding and
  window sizes, see :data:`fastconv.user_variants.SIGNATURES`), stage by
  stage: small teaching cases with values to read, hypothesis shapes,
  numerical gradients, float32, non-contiguous inputs. Each case knows its
  expected result (:meth:`Case.expected`, from the NumPy reference or from
  central differences).

Besides the registry's ops, ``fastconv-check`` grades two exercises with
it: ``out_size(size, kernel, stride, padding)`` (the output-size
arithmetic) and ``im2col(x, kh, kw, stride, padding)`` (the unfold, in the
layout of :mod:`fastconv.kernels`).

Library only: imports hypothesis (strategies), never pytest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from fastconv import op_table, ops
from fastconv.gradcheck import numerical_gradient
from fastconv.shapes import conv_out_size
from fastconv.user_variants import SIGNATURES

REFERENCE = {"backend": "numpy", "algorithm": "reference"}

CONV_RTOL = {np.float32: 1e-4, np.float64: 1e-10}
"""Conv tolerances: ``rtol`` relative to each element, plus the same
``rtol`` times the largest reference magnitude as ``atol`` (sums of
mixed-sign products cancel, so single elements may be far smaller than the
terms they sum)."""
POOL_RTOL = {np.float32: 1e-6, np.float64: 1e-13}
"""Pooling tolerances: max-pool forward selects values (exact); sums
(avg-pool, max-pool backward where windows overlap) differ in rounding only."""
GRADIENT_TOLERANCE = 1e-6
"""Central differences (eps 1e-6, float64) against an analytic gradient."""


def rtol_for(op: str, dtype) -> float:
    """The tolerance of ``op``'s results in ``dtype``."""
    table = POOL_RTOL if op.startswith(("max_pool", "avg_pool")) else CONV_RTOL
    return table[np.dtype(dtype).type]


def close(actual, expected, rtol: float, exact: bool = False) -> bool:
    """Whether ``actual`` equals ``expected`` in shape, dtype and values:
    equal (NaN where NaN) if ``exact``, else within ``rtol`` of each
    element plus ``rtol`` times the largest magnitude."""
    if not isinstance(actual, np.ndarray) or actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    if exact or expected.dtype.kind not in "fc":
        return bool(np.array_equal(actual, expected, equal_nan=expected.dtype.kind in "fc"))
    scale = float(np.max(np.abs(np.nan_to_num(expected)), initial=0.0))
    return bool(np.allclose(actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True))


def assert_close(actual, expected, rtol: float, exact: bool = False) -> None:
    """:func:`close`, as an assertion that shows where the values differ."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if exact:
        np.testing.assert_array_equal(actual, expected)
    else:
        scale = float(np.max(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------- conv


def random_case(seed, x_shape, w_shape, out_shape, dtype=np.float64):
    """Standard-normal x, w, b and dy of the given shapes."""
    rng = np.random.default_rng(seed)
    x, w, b, dy = (
        rng.standard_normal(shape).astype(dtype)
        for shape in (x_shape, w_shape, w_shape[:1], out_shape)
    )
    return x, w, b, dy


def conv_out_shape(x_shape, w_shape, stride, padding):
    """(N, F, OH, OW) of a conv; stride and padding as (H, W) pairs."""
    return (x_shape[0], w_shape[0]) + tuple(
        conv_out_size(size, k, s, p) for size, k, s, p in zip(x_shape[2:], w_shape[2:], stride, padding))


@st.composite
def conv_geometries(draw, square=False):
    """(x shape, w shape, stride, padding, with bias): any valid conv, odd
    sizes, 1x1 kernels, kernels as large as the padded input and unequal
    (sh, sw) included; ``square``: one stride and one padding for both
    axes (as a learner's function takes them), as (s, s) and (p, p)."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ph = draw(st.integers(0, 2))
    pw = ph if square else draw(st.integers(0, 2))
    kh, kw = draw(st.integers(1, h + 2 * ph)), draw(st.integers(1, w + 2 * pw))
    sh = draw(st.integers(1, 3))
    sw = sh if square else draw(st.integers(1, 3))
    return (n, c, h, w), (f, c, kh, kw), (sh, sw), (ph, pw), draw(st.booleans())


CONV_EDGE_CASES = [
    ((2, 3, 5, 4), (2, 3, 1, 1), (1, 1), (0, 0), True),
    ((1, 2, 3, 5), (3, 2, 5, 7), (1, 2), (1, 1), False),
    ((3, 1, 9, 8), (4, 1, 2, 3), (3, 2), (0, 1), True),
]
"""Always tried: a 1x1 kernel, a kernel the size of the padded input, and a
strided window that does not reach the last row and column."""


def conv_geometry_case(geometry, seed):
    """Random float64 (x, w, b or None, dy) and the conv arguments of ``geometry``."""
    x_shape, w_shape, stride, padding, with_bias = geometry
    x, w, b, dy = random_case(seed, x_shape, w_shape, conv_out_shape(x_shape, w_shape, stride, padding))
    return x, w, (b if with_bias else None), dy, stride, padding


CONV_GRADCHECK_CASES = [  # (x shape, w shape, stride, padding)
    ((2, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0)),
    ((2, 2, 7, 6), (3, 2, 3, 3), (2, 2), (1, 1)),
    ((1, 3, 6, 7), (2, 3, 2, 3), (2, 1), (2, 0)),
]


def conv_small_case(dtype=np.float64):
    """x (3, 2, 7, 6), w (4, 2, 3, 3), b, dy (3, 4, 5, 4), seeded (3x3 at
    stride 1: every algorithm computes it, Winograd too)."""
    return random_case(3, (3, 2, 7, 6), (4, 2, 3, 3), (3, 4, 5, 4), dtype)


def read_only(*arrays):
    """Read-only copies: with padding 0 ops hands them to the kernel itself."""
    copies = [a.copy() for a in arrays]
    for a in copies:
        a.setflags(write=False)
    return copies


def other_layouts(x, w, b, dy):
    """The same values in non-C-contiguous memory: strided views, Fortran order."""
    arrays = (
        np.repeat(x, 2, axis=3)[:, :, :, ::2],
        np.asfortranarray(w),
        np.repeat(b, 3)[::3],
        np.ascontiguousarray(dy.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
    )
    assert not any(a.flags.c_contiguous for a in arrays)
    return arrays


def numerical_gradients(forward: Callable, inputs, dy):
    """The gradient of ``sum(forward(*inputs) * dy)`` with respect to each
    of ``inputs`` (float64 arrays) by central differences."""
    grads = []
    for k, value in enumerate(inputs):
        def moved(v, k=k):
            return forward(*inputs[:k], v, *inputs[k + 1:])
        grads.append(numerical_gradient(moved, value, dy))
    return grads


# ----------------------------------------------------------------- pool


@st.composite
def pool_geometries(draw, square=False):
    """(x shape, kernel, stride, padding) of any valid pooling: 1x1 and
    whole-input kernels, overlapping windows (stride < kernel), windows that
    skip rows (stride > kernel), unequal pairs, padding up to kernel // 2;
    ``square``: one kernel size, stride and padding for both axes."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh = draw(st.integers(1, min(h, w) if square else h))
    kw = kh if square else draw(st.integers(1, w))
    sh = draw(st.integers(1, 3))
    sw = sh if square else draw(st.integers(1, 3))
    ph = draw(st.integers(0, kh // 2))
    pw = ph if square else draw(st.integers(0, kw // 2))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


POOL_EDGE_CASES = [
    ((2, 3, 7, 9), (2, 2), (2, 2), (1, 0)),
    ((2, 3, 7, 9), (2, 2), (1, 1), (1, 1)),
    ((2, 3, 6, 7), (2, 2), (2, 1), (0, 1)),
    ((2, 3, 7, 6), (2, 2), (1, 2), (1, 0)),
    ((2, 3, 6, 6), (2, 1), (2, 2), (0, 0)),
    ((2, 3, 6, 6), (1, 2), (2, 2), (0, 0)),
    ((1, 2, 5, 6), (5, 6), (1, 2), (2, 3)),
    ((3, 1, 9, 8), (1, 1), (3, 2), (0, 0)),
]
"""Always tried: the 2x2 stride-2 fast path with padding and odd sizes, its
near misses (the same window with stride 1 in one or both directions, and
2x1 / 1x2 windows), a whole-input kernel, and a 1x1 kernel that skips rows
and columns."""


def pool_out_shape(x_shape, kernel, stride, padding):
    """(N, C, OH, OW) of a pooling; kernel, stride and padding as pairs."""
    return tuple(x_shape[:2]) + tuple(
        conv_out_size(size, k, s, p) for size, k, s, p in zip(x_shape[2:], kernel, stride, padding))


def pool_geometry_case(geometry, seed):
    """Standard-normal float64 x and dy for ``geometry``."""
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(pool_out_shape(x_shape, kernel, stride, padding))
    return x, dy


POOL_GRADCHECK_CASES = [  # (x shape, kernel, stride, padding)
    ((2, 2, 6, 7), (2, 2), (2, 2), (0, 0)),
    ((2, 2, 5, 5), (3, 3), (1, 1), (1, 1)),
    ((1, 3, 6, 7), (3, 2), (2, 1), (1, 0)),
]


def distinct_values(shape, rng):
    """Distinct values far apart compared with the finite-difference step,
    so every window's maximum is unique and stays put when perturbed."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01


TIE_GEOMETRIES = [  # (x shape, kernel, stride, padding)
    ((2, 3, 8, 10), (2, 2), (2, 2), (0, 0)),  # the 2x2 stride-2 fast path
    ((2, 3, 7, 9), (3, 3), (1, 1), (0, 0)),  # overlapping windows
    ((1, 2, 7, 8), (3, 2), (2, 1), (0, 0)),  # unequal pairs
]
NAN_GEOMETRIES = TIE_GEOMETRIES + [((2, 2, 7, 7), (3, 3), (2, 2), (1, 1))]


def first_max_gradient(x, dy, kernel, stride):
    """dx of max-pool without padding written out window by window: each
    dy goes to the first maximum in row-major order, summed over windows."""
    (kh, kw), (sh, sw) = kernel, stride
    dx = np.zeros_like(x)
    for n, c, y, x_ in np.ndindex(dy.shape):
        window = x[n, c, y * sh : y * sh + kh, x_ * sw : x_ * sw + kw]
        i, j = divmod(int(np.flatnonzero(window == window.max())[0]), kw)
        dx[n, c, y * sh + i, x_ * sw + j] += dy[n, c, y, x_]
    return dx


def input_with_nans(x_shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    x[rng.random(x_shape) < 0.1] = np.nan
    x[0, 0, :2, :2] = np.nan  # a block of NaN: some windows hold nothing else
    return x


# Negative inputs, so padding with 0 instead of -inf (max) would show: the
# reference pads with ops._pad too, so only numbers worked out by hand can
# catch that. x decreases to the bottom right.
NEGATIVE = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[-1 -2 -3] [-4 -5 -6] [-7 -8 -9]]
DY_2X2 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
PADDED_BY_HAND = {
    # kind, kernel, stride, padding: forward output, dx for DY_2X2 (2x2 outputs only)
    ("max", 2, 2, 1): ([[-1, -2], [-4, -5]], [[1, 2, 0], [3, 4, 0], [0, 0, 0]]),
    ("avg", 2, 2, 1): ([[-1 / 4, -5 / 4], [-11 / 4, -28 / 4]],  # padded zeros count: always / 4
                       [[1 / 4, 2 / 4, 2 / 4], [3 / 4, 4 / 4, 4 / 4], [3 / 4, 4 / 4, 4 / 4]]),
    ("max", 3, 1, 1): ([[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]], None),
    ("avg", 3, 1, 1): (np.array([[-12, -21, -16], [-27, -45, -33], [-24, -39, -28]]) / 9, None),
}


# ---------------------------------------------------------------- fused


@st.composite
def fused_geometries(draw):
    """Conv and pool geometry whose pooled output is not empty: odd sizes
    (the pool drops a last row/column), strides, padding, overlapping pools.
    (x shape, w shape, stride, padding, pool, pool_stride), the last four ints."""
    k = draw(st.integers(1, 3))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    pool = draw(st.integers(1, 3))
    pool_stride = draw(st.integers(1, 3))
    conv_min = pool  # the conv output must hold one pool window
    size_min = (conv_min - 1) * stride + k - 2 * padding
    h = draw(st.integers(max(1, size_min), max(1, size_min) + 6))
    w = draw(st.integers(max(1, size_min), max(1, size_min) + 6))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return (n, c, h, w), (f, c, k, k), stride, padding, pool, pool_stride


def unfused(x, w, b, stride, padding, pool, pool_stride, dy):
    """(y, dx, dw, db) of conv2d -> ReLU -> max_pool2d with the reference
    ops and ReLU's own rule: what the fused op must equal, computed by code
    it shares nothing with."""
    conv = ops.conv2d(x, w, b, stride, padding, **REFERENCE)
    relu = np.maximum(conv, 0)
    y = ops.max_pool2d(relu, pool, pool_stride, **REFERENCE)
    drelu = ops.max_pool2d_backward(dy, relu, pool, pool_stride, **REFERENCE) * (relu > 0)
    dx, dw, db = ops.conv2d_backward(drelu, x, w, stride, padding, **REFERENCE)
    return y, dx, dw, db


# ------------------------------------------------------- the exercises' ops


def out_size_reference(size, kernel, stride=1, padding=0):
    """Window positions along one axis: (size + 2*padding - kernel) // stride + 1."""
    return conv_out_size(size, kernel, stride, padding)


def im2col_reference(x, kh, kw, stride=1, padding=0):
    """cols (C*KH*KW, N*OH*OW) of x (N, C, H, W), zero-padded:
    cols[(c*KH + i)*KW + j, (n*OH + y)*OW + x] = xp[n, c, y*stride + i, x*stride + j]."""
    x = np.asarray(x)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N, C, OH, OW, KH, KW
    n, c, oh, ow = windows.shape[:4]
    return np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * oh * ow))


EXERCISE_OPS = ("out_size", "im2col")
CHECKED_OPS = tuple(SIGNATURES) + EXERCISE_OPS
"""Every op ``fastconv-check`` grades: the registry's ops a learner's
function can implement (:data:`fastconv.user_variants.SIGNATURES`) and the
exercises'."""

ARGUMENTS = {
    "conv2d": ("x", "w", "b", "stride", "padding"),
    "conv2d_backward": ("dy", "x", "w", "stride", "padding"),
    "max_pool2d": ("x", "kernel_size", "stride", "padding"),
    "max_pool2d_backward": ("dy", "x", "kernel_size", "stride", "padding"),
    "avg_pool2d": ("x", "kernel_size", "stride", "padding"),
    "avg_pool2d_backward": ("dy", "x", "kernel_size", "stride", "padding"),
    "conv2d_relu_maxpool2d": ("x", "w", "b", "stride", "padding", "pool_size", "pool_stride"),
    "conv2d_relu_maxpool2d_backward": ("dy", "code", "x", "w", "stride", "padding", "pool_size", "pool_stride"),
    "out_size": ("size", "kernel", "stride", "padding"),
    "im2col": ("x", "kh", "kw", "stride", "padding"),
}
"""The learner-facing arguments of each op, in order."""

RESULTS = {
    "conv2d": ("y",), "conv2d_backward": ("dx", "dw", "db"),
    "max_pool2d": ("y",), "max_pool2d_backward": ("dx",),
    "avg_pool2d": ("y",), "avg_pool2d_backward": ("dx",),
    "conv2d_relu_maxpool2d": ("y", "code"), "conv2d_relu_maxpool2d_backward": ("dx", "dw", "db"),
    "out_size": ("size",), "im2col": ("cols",),
}
"""What each op returns: one result, or a tuple of these."""


def reference(op: str, *args):
    """What ``op`` returns for the learner-facing ``args``: the NumPy
    reference through :mod:`fastconv.ops` (validated like any call)."""
    if op == "out_size":
        return out_size_reference(*args)
    if op == "im2col":
        return im2col_reference(*args)
    return getattr(ops, op)(*args, **REFERENCE)


# -------------------------------------------------- the battery as cases


@dataclass(frozen=True)
class Case:
    """One call of an op in its learner-facing form.

    stage: which part of the battery it belongs to (:data:`STAGES`); label:
    what is special about it, in words; args: the positional arguments;
    gradient_of: for a numerical-gradient case, the forward op whose
    central differences are expected instead of the reference.
    """

    op: str
    stage: str
    label: str
    args: tuple
    gradient_of: str | None = None
    exact: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return ARGUMENTS[self.op]

    @property
    def arrays(self) -> dict:
        """The array arguments by name."""
        return {n: a for n, a in zip(self.names, self.args) if isinstance(a, np.ndarray)}

    @property
    def dtype(self):
        arrays = [a for a in self.arrays.values() if a.dtype.kind == "f"]
        return arrays[0].dtype if arrays else np.dtype(np.float64)

    @property
    def rtol(self) -> float:
        return GRADIENT_TOLERANCE if self.gradient_of else rtol_for(self.op, self.dtype)

    def expected(self):
        """What a correct function returns (a tuple for several results)."""
        if self.gradient_of is None:
            return reference(self.op, *self.args)
        return _numerical_case_gradients(self)


def _numerical_case_gradients(case: Case):
    """Central differences of the reference forward op at ``case``."""
    args = dict(zip(case.names, case.args))
    if case.op == "conv2d_backward":
        geometry = (args["stride"], args["padding"])
        b = np.zeros(args["w"].shape[0])
        return tuple(numerical_gradients(lambda x, w, b: reference("conv2d", x, w, b, *geometry),
                                         [args["x"].copy(), args["w"].copy(), b], args["dy"]))
    if case.op == op_table.FUSED_BACKWARD.name:
        geometry = (args["stride"], args["padding"], args["pool_size"], args["pool_stride"])
        b = np.zeros(args["w"].shape[0])  # the bias the code was computed with

        def forward(x, w, b):
            return reference(op_table.FUSED.name, x, w, b, *geometry)[0]

        return tuple(numerical_gradients(forward, [args["x"].copy(), args["w"].copy(), b], args["dy"]))
    geometry = (args["kernel_size"], args["stride"], args["padding"])
    forward = case.gradient_of
    (dx,) = numerical_gradients(lambda x: reference(forward, x, *geometry), [args["x"].copy()], args["dy"])
    return dx


STAGES = ("teaching cases", "hypothesis shapes", "numerical gradients", "float32", "non-contiguous inputs")
"""The battery's stages in the order they run."""


def _grid(shape, values):
    return np.array(values, dtype=np.float64).reshape(shape)


_X3 = _grid((1, 1, 3, 3), range(1, 10))
_X5 = _grid((1, 1, 5, 5), [3, 0, 1, 2, 7, 1, 5, 8, 9, 3, 2, 7, 2, 5, 1, 0, 1, 3, 1, 7, 4, 2, 1, 6, 2])
_W2 = _grid((1, 1, 2, 2), [1, 2, 0, -1])
_SOBEL = _grid((1, 1, 3, 3), [1, 0, -1, 2, 0, -2, 1, 0, -1])
_X2C = _grid((1, 2, 3, 3), [1, 2, 0, 0, 1, 3, 2, 1, 1, 0, 1, 0, 2, 0, 1, 1, 1, 0])
_W2C = _grid((2, 2, 2, 2), [1, 0, 0, 1, 0, 2, 1, 0, 1, 1, 0, 0, -1, 0, 0, 1])


def _batch_case(seed=5):
    """A batch of two, three channels, 4x5 images: small integer values."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (2, 3, 4, 5)).astype(np.float64)
    w = rng.integers(-1, 2, (2, 3, 3, 3)).astype(np.float64)
    return x, w, np.array([1.0, -1.0])


def _conv_teaching():
    """(label, x, w, b, stride, padding), smallest first; each adds one thing."""
    x5, w5, b5 = _batch_case()
    return [
        ("one 3x3 image, one 2x2 filter", _X3, _W2, np.array([1.0]), 1, 0),
        ("padding 1", _X3, _W2, np.array([1.0]), 1, 1),
        ("stride 2 over a 5x5 image, a 3x3 filter", _X5, _SOBEL, np.array([0.5]), 2, 0),
        ("two channels in, two filters", _X2C, _W2C, np.array([1.0, -2.0]), 1, 0),
        ("a batch of two 4x5 images, three channels, stride 2 and padding 1", x5, w5, b5, 2, 1),
        ("a filter as large as the image, no bias", _X3, _grid((1, 1, 3, 3), [1, -1, 0, 2, 0, 1, 0, 0, -1]),
         None, 1, 0),
    ]


def _dy_for(shape, seed=11):
    rng = np.random.default_rng(seed)
    return rng.integers(-2, 4, shape).astype(np.float64)


_POOL_X = _grid((1, 1, 4, 4), [1, 5, 2, 0, 3, 2, 7, 4, 0, 6, 1, 2, 8, 1, 3, 5])
_TIES = _grid((1, 1, 4, 4), [2, 2, 1, 3, 1, 0, 3, 0, 4, 1, 0, 0, 2, 4, 0, 0])
_ODD = _grid((1, 1, 5, 5), [4, 1, 0, 2, 9, 3, 2, 5, 1, 9, 0, 7, 1, 6, 9, 2, 3, 8, 0, 9, 9, 9, 9, 9, 9])


def _pool_teaching(kind):
    """(label, x, kernel_size, stride, padding), smallest first."""
    rng = np.random.default_rng(3)
    batch = rng.permutation(2 * 3 * 4 * 4).reshape(2, 3, 4, 4).astype(np.float64)
    cases = [
        ("one 4x4 image, 2x2 windows", _POOL_X, 2, None, 0),
        ("overlapping 3x3 windows, stride 1", _POOL_X, 3, 1, 0),
        ("a 5x5 image: the last row and column fit no window", _ODD, 2, None, 0),
        ("negative values, padding 1", NEGATIVE, 2, 2, 1),
        ("a batch of two, three channels", batch, 2, None, 0),
        ("a window as large as the image", _X3, 3, None, 0),
    ]
    if kind == "max":
        cases.insert(1, ("ties: several maxima in a window", _TIES, 2, None, 0))
        cases.insert(3, ("ties in overlapping windows", _TIES, 3, 1, 0))
    return cases


_FUSED_X = _grid((1, 1, 5, 5), [1, -2, 0, 3, 1, 2, 1, -1, 0, 2, -3, 0, 2, 1, -1, 1, 2, -2, 0, 3, 0, 1, 1, -1, 2])


def _fused_teaching():
    """(label, x, w, b, stride, padding, pool_size, pool_stride)."""
    x5, w5, b5 = _batch_case(6)
    return [
        ("one 5x5 image, one 2x2 filter, 2x2 pooling", _FUSED_X, _W2, np.array([0.0]), 1, 0, 2, None),
        ("a bias that makes some windows negative", _FUSED_X, _W2, np.array([-2.0]), 1, 0, 2, None),
        ("padding 1", _FUSED_X, _W2, np.array([1.0]), 1, 1, 2, None),
        ("conv stride 2, a 3x3 filter", _X5, _SOBEL, np.array([0.5]), 2, 0, 2, None),
        ("two channels in, two filters", _X2C, _W2C, np.array([1.0, -2.0]), 1, 0, 2, 1),
        ("a batch of two, three channels, 3x3 pooling at stride 2", x5, w5, b5, 1, 1, 3, 2),
        ("ties: equal values in a pool window", np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), None, 1, 0, 2, 1),
    ]


def _out_size_teaching():
    return [
        ("a 3-wide window over 5, stride 1", (5, 3, 1, 0)),
        ("padding 1 keeps the size", (5, 3, 1, 1)),
        ("stride 2", (7, 3, 2, 0)),
        ("the first conv of the MNIST CNN", (28, 3, 1, 0)),
        ("its pooling: 2x2 windows, stride 2", (26, 2, 2, 0)),
        ("an odd size: the last row fits no window", (11, 2, 2, 0)),
        ("stride 2 and padding 1", (6, 3, 2, 1)),
        ("a window as large as the input", (3, 3, 1, 0)),
    ]


def teaching_cases(op: str) -> list[Case]:
    """Small fixed cases with values to read, smallest first, each adding
    one thing (padding, stride, channels, a batch, ties...), so that the
    first one a function fails says what it gets wrong."""
    stage = STAGES[0]
    if op == "out_size":
        return [Case(op, stage, label, args) for label, args in _out_size_teaching()]
    if op in ("conv2d", "conv2d_backward", "im2col"):
        cases = []
        for label, x, w, b, stride, padding in _conv_teaching():
            if op == "conv2d":
                args = (x, w, b, stride, padding)
            elif op == "im2col":
                args = (x, *w.shape[2:], stride, padding)
            else:
                shape = conv_out_shape(x.shape, w.shape, (stride,) * 2, (padding,) * 2)
                args = (_dy_for(shape), x, w, stride, padding)
                label = label.replace(", no bias", "")
            cases.append(Case(op, stage, label, args))
        return cases
    if op in ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"):
        kind = op[:3]
        cases = []
        for label, x, k, s, p in _pool_teaching(kind):
            if op.endswith("backward"):
                shape = pool_out_shape(x.shape, (k, k), (s or k,) * 2, (p, p))
                args = (_dy_for(shape), x, k, s, p)
            else:
                args = (x, k, s, p)
            cases.append(Case(op, stage, label, args, exact=op == "max_pool2d"))
        return cases
    if op in (op_table.FUSED.name, op_table.FUSED_BACKWARD.name):
        cases = []
        for label, x, w, b, s, p, pool, pool_stride in _fused_teaching():
            if op == op_table.FUSED.name:
                args = (x, w, b, s, p, pool, pool_stride)
            else:
                y, code = reference(op_table.FUSED.name, x, w, b, s, p, pool, pool_stride)
                args = (_dy_for(y.shape), code, x, w, s, p, pool, pool_stride)
            cases.append(Case(op, stage, label, args))
        return cases
    raise ValueError(f"no teaching cases for {op!r}; choose from {CHECKED_OPS}")


def _label_conv(x_shape, w_shape, stride, padding, b):
    n, c, h, w = x_shape
    return (f"{n} image{'s' * (n > 1)} of {c} channel{'s' * (c > 1)}, {h}x{w}, {w_shape[0]} filter"
            f"{'s' * (w_shape[0] > 1)} of {w_shape[2]}x{w_shape[3]}, stride {stride}, padding {padding}"
            + ("" if b is not None else ", no bias"))


def conv_case(op: str, geometry, seed: int, stage: str = STAGES[1]) -> Case:
    """The case of a square ``geometry`` (from ``conv_geometries(square=True)``)
    for conv2d, conv2d_backward or im2col."""
    x, w, b, dy, stride, padding = conv_geometry_case(geometry, seed)
    s, p = stride[0], padding[0]
    label = _label_conv(x.shape, w.shape, s, p, b)
    if op == "conv2d":
        return Case(op, stage, label, (x, w, b, s, p))
    if op == "im2col":
        return Case(op, stage, label.split(", no bias")[0], (x, *w.shape[2:], s, p))
    return Case(op, stage, label.split(", no bias")[0], (dy, x, w, s, p))


def pool_case(op: str, geometry, seed: int, ties: bool = False, stage: str = STAGES[1]) -> Case:
    """The case of a square ``geometry`` (from ``pool_geometries(square=True)``);
    ``ties``: small integers, so windows hold equal values."""
    x, dy = pool_geometry_case(geometry, seed)
    if ties:
        x = np.floor(x * 1.5)
    x_shape, (k, _), (s, _), (p, _) = geometry
    n, c, h, w = x_shape
    label = (f"{n} image{'s' * (n > 1)} of {c} channel{'s' * (c > 1)}, {h}x{w}, {k}x{k} windows, stride {s}, "
             f"padding {p}" + (", with ties" if ties else ""))
    args = (dy, x, k, s, p) if op.endswith("backward") else (x, k, s, p)
    return Case(op, stage, label, args, exact=op == "max_pool2d")


def fused_case(op: str, geometry, seed: int, stage: str = STAGES[1]) -> Case:
    """The case of a fused ``geometry`` (from :func:`fused_geometries`)."""
    x_shape, w_shape, s, p, pool, pool_stride = geometry
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    label = _label_conv(x_shape, w_shape, s, p, b) + f", {pool}x{pool} pooling at stride {pool_stride}"
    if op == op_table.FUSED.name:
        return Case(op, stage, label, (x, w, b, s, p, pool, pool_stride))
    y, code = reference(op_table.FUSED.name, x, w, b, s, p, pool, pool_stride)
    return Case(op, stage, label, (rng.standard_normal(y.shape), code, x, w, s, p, pool, pool_stride))


@st.composite
def _out_size_args(draw):
    size, padding = draw(st.integers(1, 30)), draw(st.integers(0, 3))
    kernel = draw(st.integers(1, size + 2 * padding))
    return size, kernel, draw(st.integers(1, 5)), padding


def hypothesis_cases(op: str):
    """A hypothesis strategy of :class:`Case` for ``op``: random geometry
    from the strategies above (square, as a learner's function takes it)
    and a seed for the values; hypothesis shrinks a failure to a small one."""
    seeds = st.integers(0, 2**16)
    if op == "out_size":
        return _out_size_args().map(lambda args: Case(op, STAGES[1], "", args))
    if op in ("conv2d", "conv2d_backward", "im2col"):
        return st.builds(lambda g, seed: conv_case(op, g, seed), conv_geometries(square=True), seeds)
    if op in op_table.OPS and op_table.OPS[op].family == "pool":
        ties = st.booleans() if op.startswith("max") else st.just(False)
        return st.builds(lambda g, seed, t: pool_case(op, g, seed, t), pool_geometries(square=True), seeds, ties)
    if op in (op_table.FUSED.name, op_table.FUSED_BACKWARD.name):
        return st.builds(lambda g, seed: fused_case(op, g, seed), fused_geometries(), seeds)
    raise ValueError(f"no hypothesis cases for {op!r}; choose from {CHECKED_OPS}")


def _square(cases):
    return [c for c in cases if all(len(set(pair)) == 1 for pair in c[2:4])]


def edge_cases(op: str) -> list[Case]:
    """The edge cases always tried, those a learner's square-geometry
    function can take (tried with the hypothesis shapes)."""
    stage = STAGES[1]
    if op in ("conv2d", "conv2d_backward", "im2col"):
        return [conv_case(op, g, 0, stage) for g in _square(CONV_EDGE_CASES)]
    if op in op_table.OPS and op_table.OPS[op].family == "pool":
        square = [g for g in _square(POOL_EDGE_CASES) if g[1][0] == g[1][1]]
        return [pool_case(op, g, 0, stage=stage) for g in square]
    return []


def gradient_cases(op: str) -> list[Case]:
    """Backward ops: cases whose expected gradients are central differences
    of the reference forward op (float64), on the tests' square geometries."""
    stage = STAGES[2]
    if op == "conv2d_backward":
        cases = []
        for x_shape, w_shape, stride, padding in _square(CONV_GRADCHECK_CASES):
            x, w, _, dy = random_case(2, x_shape, w_shape, conv_out_shape(x_shape, w_shape, stride, padding))
            cases.append(Case(op, stage, _label_conv(x_shape, w_shape, stride[0], padding[0], True),
                              (dy, x, w, stride[0], padding[0]), gradient_of="conv2d"))
        return cases
    if op == op_table.FUSED_BACKWARD.name:
        rng = np.random.default_rng(3)
        x, w = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((3, 2, 3, 3))
        _, code = reference(op_table.FUSED.name, x, w, None, 1, 0, 2, None)
        dy = rng.standard_normal(code.shape)
        return [Case(op, stage, _label_conv(x.shape, w.shape, 1, 0, None) + ", 2x2 pooling",
                     (dy, code, x, w, 1, 0, 2, None), gradient_of=op_table.FUSED.name)]
    if op in ("max_pool2d_backward", "avg_pool2d_backward"):
        cases = []
        for x_shape, kernel, stride, padding in POOL_GRADCHECK_CASES:
            if len({*kernel}) > 1 or len({*stride}) > 1 or len({*padding}) > 1:
                continue
            rng = np.random.default_rng(5)
            x = distinct_values(x_shape, rng)
            dy = rng.standard_normal(pool_out_shape(x_shape, kernel, stride, padding))
            label = f"x {x_shape}, {kernel[0]}x{kernel[0]} windows, stride {stride[0]}, padding {padding[0]}"
            cases.append(Case(op, stage, label, (dy, x, kernel[0], stride[0], padding[0]),
                              gradient_of=op.removesuffix("_backward")))
        return cases
    return []


def float32_cases(op: str) -> list[Case]:
    """The last teaching case (the largest) in float32: a float32 result,
    within the float32 tolerance."""
    if op == "out_size":
        return []
    last = teaching_cases(op)[-2]  # the batch
    args = tuple(a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                 for a in last.args)
    return [Case(op, STAGES[3], last.label + ", in float32", args, exact=last.exact)]


def layout_cases(op: str) -> list[Case]:
    """The batch teaching case again, to be passed with every array
    argument a non-contiguous view (strided or Fortran order; whoever calls
    the function makes the views, :func:`fastconv.runner.non_contiguous`,
    as they do not survive being sent to another process): the result must
    not change."""
    if op == "out_size":
        return []
    last = teaching_cases(op)[-2]
    return [Case(op, STAGES[4], last.label + ", every array a non-contiguous view", last.args, exact=last.exact)]


def fixed_cases(op: str) -> dict[str, list[Case]]:
    """Every stage's fixed cases, by stage (the hypothesis stage: its edge
    cases; its random ones come from :func:`hypothesis_cases`)."""
    return {
        STAGES[0]: teaching_cases(op),
        STAGES[1]: edge_cases(op),
        STAGES[2]: gradient_cases(op),
        STAGES[3]: float32_cases(op),
        STAGES[4]: layout_cases(op),
    }
