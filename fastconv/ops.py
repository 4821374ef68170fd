"""The one public entry to every kernel: validate, coerce, pad, pick, call.

``conv2d_relu_maxpool2d`` is the fused Conv2D -> ReLU -> MaxPool2D chain:
one op, one pass over the conv output, which is never stored.

Every op takes ``backend`` (``"auto"``, ``"numpy"`` for the reference,
``"cython"`` or ``"numba"``) and ``algorithm`` (``"auto"``, ``"naive"``,
``"im2col"``, ``"vectorized"``, ``"gemm"``; ``"reference"`` for numpy).
``auto`` picks the fastest matching variant for the call's shapes, measured once and remembered
(see :mod:`fastconv.autotune`).

Arrays may be any real numeric dtype and layout: they are converted to one
C-contiguous float dtype (float32 if every input is float32 or narrower,
float64 otherwise) before a kernel sees them. Bad shapes and arguments raise
ValueError or TypeError naming the argument and the shapes received.

An empty batch (N = 0) is valid for every op: it returns the empty output,
and zero gradients for the parameters, without calling a kernel.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cache, cached_property, partial
from typing import Callable

import numpy as np

from fastconv import autotune, op_table, registry, threads
from fastconv.kernels import NO_GRADIENT
from fastconv.registry import variants  # noqa: F401  (public API)
from fastconv.shapes import as_pair, conv_out_size

# one function per declared op, named for it, then the rest
__all__ = [*op_table.OPS, "variants", "inapplicable_algorithms", "prepare", "Launch", "batch_norm_kernel",
           "relu", "relu_backward"]


# ---------------------------------------------------------------- validation


def _float_dtype(op, **arrays):
    """The float dtype all of ``arrays`` are computed in (TypeError if any is
    not real-numeric)."""
    for name, a in arrays.items():
        kind = a.dtype.kind
        if kind not in "biuf":
            raise TypeError(f"{op}: {name} must hold real numbers, got dtype {a.dtype}")
    dtype = np.result_type(*arrays.values())
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize <= 4 else np.dtype(np.float64)


def _as_array(op, name, value, ndim, layout):
    try:
        a = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{op}: {name} is not array-like: {exc}") from None
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {a.shape}")
    return a


def _contiguous(dtype, *arrays):
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


@dataclass(frozen=True)
class Geometry:
    """Validated window geometry of one conv or pool call."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out: tuple[int, int]


def _geometry(op, x_shape, kernel, stride, padding) -> Geometry:
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if min(x_shape[2:]) < 1:
        raise ValueError(f"{op}: x must have H, W >= 1, got shape {x_shape}")
    out = []
    for axis, size, k, s, p in zip("HW", x_shape[2:], kernel, stride, padding):
        if k > size + 2 * p:
            raise ValueError(
                f"{op}: kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                f"{x_shape[2] + 2 * padding[0]}x{x_shape[3] + 2 * padding[1]} "
                f"(x {x_shape}, padding {padding})"
            )
        out.append(conv_out_size(size, k, s, p))
    return Geometry(tuple(kernel), stride, padding, tuple(out))


def _check_dy(op, dy, expected):
    if dy.shape != expected:
        raise ValueError(f"{op}: dy must have the output shape {expected}, got {dy.shape}")


def _conv_args(op, x, w, stride, padding):
    x = _as_array(op, "x", x, 4, "(N, C, H, W)")
    w = _as_array(op, "w", w, 4, "(F, C, KH, KW)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"{op}: channel mismatch: x has C={x.shape[1]} but w has C={w.shape[1]} "
            f"(x {x.shape}, w {w.shape})"
        )
    if min(w.shape) < 1 or x.shape[1] < 1:
        raise ValueError(f"{op}: w and x channels must be non-empty (x {x.shape}, w {w.shape})")
    geom = _geometry(op, x.shape, w.shape[2:], stride, padding)
    return x, w, geom


def _pool_args(op, x, kernel_size, stride, padding):
    x = _as_array(op, "x", x, 4, "(N, C, H, W)")
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else stride
    geom = _geometry(op, x.shape, kernel, stride, padding)
    for k, p in zip(geom.kernel, geom.padding):
        if p > k // 2:
            raise ValueError(
                f"{op}: padding must be at most half the kernel size, "
                f"got padding {geom.padding} for kernel_size {geom.kernel}"
            )
    return x, geom


def _bias(op, b, w):
    """The bias as an (F,) array for filters w (F, C, KH, KW); zeros for None."""
    f = w.shape[0]
    if b is None:
        # bool zeros: the one dtype that never widens the result (float64
        # zeros would turn a float32 call into a float64 one).
        b = np.zeros(f, bool)
    b = _as_array(op, "b", b, 1, "(F,)")
    if b.shape != (f,):
        raise ValueError(f"{op}: b must have shape ({f},) to match w {w.shape}, got {b.shape}")
    return b


def _check_flag(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")


PARALLEL_VALUES = 1 << 16
"""Padding or cropping a batch of fewer values runs on one thread, waking
the others would cost more than the copy; a ReLU of fewer values runs in
NumPy (see relu below)."""


def _pad(a, padding, value):
    """a (N, C, H, W), C-contiguous float, inside a border of ``value``: a new
    (N, C, H + 2*ph, W + 2*pw) array, made by the compiled backend's layout
    kernel (:func:`fastconv.registry.layout_kernels`), or under
    FASTCONV_BACKEND=numpy by one NumPy fill and one copy (np.pad's generic
    path takes ~1.7x as long)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return a
    n, c, h, w = a.shape
    padded = np.empty((n, c, h + 2 * ph, w + 2 * pw), a.dtype)
    backend = registry.helper_backend()
    if backend is None:
        padded.fill(value)
        padded[:, :, ph : ph + h, pw : pw + w] = a
    else:
        registry.layout_kernels(backend)[0](a, padded.dtype.type(value), padded, _chunks(a.size))
    return padded


def _padded_shape(shape, padding):
    """The shape :func:`_pad` gives an (N, C, H, W) array of ``shape``."""
    n, c, h, w = shape
    return n, c, h + 2 * padding[0], w + 2 * padding[1]


def _crop(a, padding):
    """The interior of a padded (N, C, Hp, Wp) array as a new C-contiguous
    (N, C, Hp - 2*ph, Wp - 2*pw) one: :func:`_pad`'s inverse, the same way."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return a
    interior = a[:, :, ph : a.shape[2] - ph, pw : a.shape[3] - pw]
    backend = registry.helper_backend()
    if backend is None:
        return np.ascontiguousarray(interior)
    cropped = np.empty(interior.shape, a.dtype)
    registry.layout_kernels(backend)[1](a, cropped, _chunks(cropped.size))
    return cropped


def _padder(x, padding):
    """A function returning x padded with zeros, made on its first call (a
    kernel that pads itself never needs it)."""
    return cache(lambda: _pad(x, padding, 0))


def _input_gradient(kernel, x, padded, padding, compute_dx, call):
    """dx from a backward kernel: ``call(x_arg, dx_arg, **options)`` runs it
    with the input and its gradient left open. A kernel that pads itself
    (:func:`fastconv.registry.takes_padding`) gets x, a new dx it writes
    whole and ``padding=``; any other gets x padded (``padded()``) and a
    zero-filled padded dx, whose interior is dx. None without compute_dx."""
    if registry.takes_padding(kernel):
        dx = np.empty_like(x) if compute_dx else None
        call(x, dx, padding=padding)
        return dx
    dxp = np.zeros_like(padded()) if compute_dx else None
    call(padded(), dxp)
    return _crop(dxp, padding) if compute_dx else None


def _chunks(n_values):
    return 1 if n_values < PARALLEL_VALUES else threads.num_threads()


def _no_work(*args):
    """The kernel of an empty batch: the outputs ``run`` allocated are
    already right (empty, or zero-filled gradients)."""


WINOGRAD = "winograd"


def inapplicable_algorithms(kernel_size, stride=1) -> dict:
    """``{algorithm: why}`` for the conv algorithms that cannot compute a
    conv with this kernel (KH, KW) and stride (an int or an (H, W) pair):
    Winograd (F(2x2, 3x3) and F(4x4, 3x3)) is for 3x3 kernels at stride 1. Asked for by name
    they are refused with that reason; ``auto`` passes them over."""
    kernel, stride = as_pair(kernel_size, "kernel_size", 1), as_pair(stride, "stride", 1)
    if kernel == (3, 3) and stride == (1, 1):
        return {}
    return {WINOGRAD: f"it computes 3x3 kernels at stride 1 only, got kernel "
                      f"{kernel[0]}x{kernel[1]} at stride {stride}"}


def _inapplicable(geom: Geometry) -> dict:
    return inapplicable_algorithms(geom.kernel, geom.stride)


def _kernel(op, backend, algorithm, key, run, batch, inapplicable=None):
    """The kernel that computes a call: the variant chosen by
    ``backend``/``algorithm`` (``auto`` measured once per ``key`` through
    ``run(kernel)``, among the algorithms that apply), or for an empty
    ``batch`` no kernel at all (the names asked for are still checked).
    ``inapplicable`` maps an algorithm that cannot compute this call to
    why: asked for by name, or through FASTCONV_ALGORITHM, it is refused
    with that reason."""
    inapplicable = inapplicable or {}
    if inapplicable:
        asked = autotune.forced(backend, algorithm, op)[1]
        if asked in inapplicable:
            raise ValueError(f"{op}: algorithm {asked!r} does not apply: {inapplicable[asked]}")
    if batch == 0:
        if backend != "auto" and algorithm != "auto":
            registry.kernel(op, backend, algorithm)
        else:
            autotune.candidates(op, *autotune.forced(backend, algorithm, op))
        return _no_work
    threads.in_this_thread()
    if backend != "auto" and algorithm != "auto":
        return registry.kernel(op, backend, algorithm)
    return autotune.fastest_kernel(op, backend, algorithm, key, run, excluded=tuple(inapplicable))


def _dispatch(op, backend, algorithm, key, run, batch, inapplicable=None):
    """``run(kernel)`` with the kernel :func:`_kernel` picks for the call."""
    return run(_kernel(op, backend, algorithm, key, run, batch, inapplicable))


@dataclass(frozen=True)
class Launch:
    """How a caller that owns its buffers runs one forward op (what
    :mod:`fastconv.plan` does): fill a buffer of ``padded_shape`` with
    ``pad_value`` once, write x into its interior (rows ``padding[0]`` on,
    columns ``padding[1]`` on; the whole buffer when padding is (0, 0)),
    then call ``kernel(xp, *params, *geometry, *outputs)`` with params the
    op's weights (w, b: C-contiguous, of ``dtype``; none for pooling) and
    outputs C-contiguous arrays of ``outputs`` ((shape, dtype) pairs), which
    it fills. The kernel is the one the op itself would call for the same
    arguments (the same ``auto`` choice)."""

    kernel: Callable
    dtype: np.dtype
    padded_shape: tuple[int, ...]
    padding: tuple[int, int]
    pad_value: float
    geometry: tuple[int, ...]
    outputs: tuple[tuple[tuple[int, ...], np.dtype], ...]


@dataclass(frozen=True)
class _Forward:
    """A validated call of a forward window op (conv2d, a pooling op, the
    fused op): its kernel computes ``kernel(xp, *params, *geometry,
    *outputs)`` into new arrays of ``outputs``, xp the input x padded (or
    x itself and ``padding=`` for a kernel that pads itself:
    :func:`fastconv.registry.takes_padding`)."""

    op: str
    backend: str
    algorithm: str
    key: tuple
    x: np.ndarray
    params: tuple
    geometry: tuple
    outputs: tuple
    padding: tuple
    pad_value: float
    inapplicable: dict

    @cached_property
    def xp(self):
        """x padded, made when a kernel first needs it."""
        return _pad(self.x, self.padding, self.pad_value)

    def run(self, kernel):
        outs = tuple(np.empty(shape, dtype) for shape, dtype in self.outputs)
        if registry.takes_padding(kernel):
            kernel(self.x, *self.params, *self.geometry, *outs, padding=self.padding)
        else:
            kernel(self.xp, *self.params, *self.geometry, *outs)
        return outs

    def kernel(self):
        return _kernel(self.op, self.backend, self.algorithm, self.key, self.run, self.x.shape[0],
                       self.inapplicable)

    def __call__(self):
        return self.run(self.kernel())


# ------------------------------------------------------------------- conv2d


def conv2d(x, w, b=None, stride=1, padding=0, *, backend="auto", algorithm="auto"):
    """Cross-correlate a batch of images with a bank of filters.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None; stride >= 1 and
    padding >= 0 (zeros) as an int or an (H, W) pair.
    Returns (N, F, OH, OW) with OH = (H + 2*padding - KH) // stride + 1.
    """
    return _conv2d_call(x, w, b, stride, padding, backend=backend, algorithm=algorithm)()[0]


def _conv2d_call(x, w, b=None, stride=1, padding=0, *, backend="auto", algorithm="auto") -> _Forward:
    op = op_table.CONV2D.name
    x, w, geom = _conv_args(op, x, w, stride, padding)
    b = _bias(op, b, w)
    dtype = _float_dtype(op, x=x, w=w, b=b)
    x, w, b = _contiguous(dtype, x, w, b)
    out_shape = (x.shape[0], w.shape[0]) + geom.out
    key = (_padded_shape(x.shape, geom.padding), w.shape, geom.stride, dtype)
    return _Forward(op, backend, algorithm, key, x, (w, b), geom.stride, ((out_shape, dtype),), geom.padding, 0,
                    _inapplicable(geom))


def conv2d_backward(dy, x, w, stride=1, padding=0, *, compute_dx=True, backend="auto", algorithm="auto"):
    """Gradients of :func:`conv2d` given the upstream gradient ``dy``.

    dy: (N, F, OH, OW), x: (N, C, H, W), w: (F, C, KH, KW), stride and
    padding as in the forward call. Returns (dx, dw, db) with the shapes of
    x, w and (F,); dx is None, and never computed, when ``compute_dx`` is
    false (a first layer, whose input is the data).
    """
    op = op_table.CONV2D_BACKWARD.name
    x, w, geom = _conv_args(op, x, w, stride, padding)
    dy = _as_array(op, "dy", dy, 4, "(N, F, OH, OW)")
    _check_dy(op, dy, (x.shape[0], w.shape[0]) + geom.out)
    _check_flag(op, "compute_dx", compute_dx)
    dtype = _float_dtype(op, dy=dy, x=x, w=w)
    dy, x, w = _contiguous(dtype, dy, x, w)
    padded = _padder(x, geom.padding)

    def run(kernel):
        dw = np.zeros_like(w)
        dx = _input_gradient(kernel, x, padded, geom.padding, compute_dx,
                             lambda x_arg, dx_arg, **options: kernel(dy, x_arg, w, *geom.stride, dx_arg, dw,
                                                                     **options))
        return dx, dw

    # compute_dx is part of the key: without dx another variant may be fastest.
    key = (_padded_shape(x.shape, geom.padding), w.shape, geom.stride, dtype, bool(compute_dx))
    dx, dw = _dispatch(op, backend, algorithm, key, run, x.shape[0], _inapplicable(geom))
    # db: over the images first (whole contiguous planes), then each
    # filter's row of pixels; dy.sum(axis=(0, 2, 3)) took 3.6x as long at
    # cnn-deep conv3's shape (0.21 ms, batch 64), for sums further from the
    # float64 ones.
    db = dy.sum(axis=0).reshape(dy.shape[1], -1).sum(axis=1)
    return dx, dw, db


# ------------------------------------------------------------------ pooling


def _pool_call(op, pad_value, x, kernel_size, stride=None, padding=0, *, backend="auto",
               algorithm="auto") -> _Forward:
    x, geom = _pool_args(op, x, kernel_size, stride, padding)
    dtype = _float_dtype(op, x=x)
    (x,) = _contiguous(dtype, x)
    out_shape = x.shape[:2] + geom.out
    return _Forward(op, backend, algorithm, (_padded_shape(x.shape, geom.padding), geom.kernel, geom.stride, dtype),
                    x, (), geom.kernel + geom.stride, ((out_shape, dtype),), geom.padding, pad_value, {})


def _pool_backward(op, pad_value, dy, x, kernel_size, stride, padding, backend, algorithm):
    x, geom = _pool_args(op, x, kernel_size, stride, padding)
    dy = _as_array(op, "dy", dy, 4, "(N, C, OH, OW)")
    _check_dy(op, dy, x.shape[:2] + geom.out)
    dtype = _float_dtype(op, dy=dy, x=x)
    dy, x = _contiguous(dtype, dy, x)
    xp = _pad(x, geom.padding, pad_value)

    def run(kernel):
        dxp = np.zeros_like(xp)
        kernel(dy, xp, *geom.kernel, *geom.stride, dxp)
        return dxp

    key = (xp.shape, geom.kernel, geom.stride, dtype)
    dxp = _dispatch(op, backend, algorithm, key, run, x.shape[0])
    return _crop(dxp, geom.padding)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, backend="auto", algorithm="auto"):
    """Maximum over each window. x: (N, C, H, W) -> (N, C, OH, OW).

    kernel_size, stride (default: kernel_size) and padding (-inf, at most
    half the kernel) as an int or an (H, W) pair.
    """
    return _pool_call(op_table.MAX_POOL2D.name, -np.inf, x, kernel_size, stride, padding,
                      backend=backend, algorithm=algorithm)()[0]


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, *, backend="auto", algorithm="auto"):
    """Gradient of :func:`max_pool2d`: each dy (N, C, OH, OW) goes to the first
    maximum of its window (row-major, as PyTorch), summed where windows
    overlap. Returns dx with the shape of x (N, C, H, W)."""
    return _pool_backward(
        op_table.MAX_POOL2D_BACKWARD.name, -np.inf, dy, x, kernel_size, stride, padding, backend, algorithm
    )


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, backend="auto", algorithm="auto"):
    """Mean over each window, padded zeros included (PyTorch's default).
    x: (N, C, H, W) -> (N, C, OH, OW)."""
    return _pool_call(op_table.AVG_POOL2D.name, 0, x, kernel_size, stride, padding,
                      backend=backend, algorithm=algorithm)()[0]


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, *, backend="auto", algorithm="auto"):
    """Gradient of :func:`avg_pool2d`: each dy (N, C, OH, OW) spread evenly over
    its window. Returns dx with the shape of x (N, C, H, W)."""
    return _pool_backward(
        op_table.AVG_POOL2D_BACKWARD.name, 0, dy, x, kernel_size, stride, padding, backend, algorithm
    )


# ---------------------------------------------- fused conv -> ReLU -> pool


def _fused_args(op, x, w, stride, padding, pool_size, pool_stride):
    """x, w, the conv's Geometry and the pool's (over the conv output)."""
    x, w, conv = _conv_args(op, x, w, stride, padding)
    pool_kernel = as_pair(pool_size, "pool_size", 1)
    conv_shape = (x.shape[0], w.shape[0]) + conv.out
    pool = _geometry(op, conv_shape, pool_kernel, pool_kernel if pool_stride is None else pool_stride, 0)
    if pool_kernel[0] * pool_kernel[1] > NO_GRADIENT:
        raise ValueError(f"{op}: pool_size {pool_kernel} has more than {NO_GRADIENT} taps")
    return x, w, conv, pool


def conv2d_relu_maxpool2d(x, w, b=None, stride=1, padding=0, pool_size=2, pool_stride=None, *,
                          backend="auto", algorithm="auto"):
    """``max_pool2d(relu(conv2d(x, w, b, stride, padding)), pool_size,
    pool_stride)`` in one pass; the conv output is never stored.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None; stride and padding
    of the conv as in :func:`conv2d`; pool_size and pool_stride (default:
    pool_size) of the max pooling, which has no padding. Returns ``(y,
    code)``: y (N, F, PH, PW) with PH = (OH - pool_size) // pool_stride + 1
    over the conv output size OH, and code (N, F, PH, PW) uint8, what
    :func:`conv2d_relu_maxpool2d_backward` needs: per pooled pixel, the
    offset in its window of the conv output that gets its gradient, or
    ``fastconv.kernels.NO_GRADIENT`` where the ReLU cut it.
    """
    return _fused_call(x, w, b, stride, padding, pool_size, pool_stride, backend=backend, algorithm=algorithm)()


def _fused_call(x, w, b=None, stride=1, padding=0, pool_size=2, pool_stride=None, *, backend="auto",
                algorithm="auto") -> _Forward:
    op = op_table.FUSED.name
    x, w, conv, pool = _fused_args(op, x, w, stride, padding, pool_size, pool_stride)
    b = _bias(op, b, w)
    dtype = _float_dtype(op, x=x, w=w, b=b)
    x, w, b = _contiguous(dtype, x, w, b)
    out_shape = (x.shape[0], w.shape[0]) + pool.out
    key = (_padded_shape(x.shape, conv.padding), w.shape, conv.stride, pool.kernel, pool.stride, dtype)
    return _Forward(op, backend, algorithm, key, x, (w, b), conv.stride + pool.kernel + pool.stride,
                    ((out_shape, dtype), (out_shape, np.dtype(np.uint8))), conv.padding, 0, _inapplicable(conv))


def conv2d_relu_maxpool2d_backward(dy, code, x, w, stride=1, padding=0, pool_size=2, pool_stride=None,
                                   *, compute_dx=True, backend="auto", algorithm="auto"):
    """Gradients of :func:`conv2d_relu_maxpool2d`: dy (N, F, PH, PW) and the
    code it returned, with the x, w and geometry of the forward call.
    Returns (dx, dw, db) with the shapes of x, w and (F,), equal to the
    backward passes of the unfused chain; dx is None, and never computed,
    when ``compute_dx`` is false.
    """
    op = op_table.FUSED_BACKWARD.name
    x, w, conv, pool = _fused_args(op, x, w, stride, padding, pool_size, pool_stride)
    out_shape = (x.shape[0], w.shape[0]) + pool.out
    dy = _as_array(op, "dy", dy, 4, "(N, F, PH, PW)")
    _check_dy(op, dy, out_shape)
    code = _as_array(op, "code", code, 4, "(N, F, PH, PW)")
    if code.shape != out_shape or code.dtype != np.uint8:
        raise ValueError(f"{op}: code must be uint8 of shape {out_shape}, got {code.dtype} {code.shape}")
    # A code past the window would send a gradient outside the conv output.
    # Plus one in uint8, NO_GRADIENT (255) wraps to 0 and a code c is c + 1:
    # one addition and one maximum (two comparisons, an AND and an any took
    # 3x as long, 0.07 ms a call at cnn-deep's first block).
    taps = pool.kernel[0] * pool.kernel[1]
    if int(np.max(code + np.uint8(1), initial=0)) > taps:
        raise ValueError(f"{op}: code holds offsets past the {pool.kernel} pool window; "
                         "pass the code returned by the forward call")
    _check_flag(op, "compute_dx", compute_dx)
    dtype = _float_dtype(op, dy=dy, x=x, w=w)
    dy, x, w = _contiguous(dtype, dy, x, w)
    (code,) = _contiguous(np.uint8, code)
    padded = _padder(x, conv.padding)
    geometry = conv.stride + pool.kernel + pool.stride

    def run(kernel):
        dw = np.zeros_like(w)
        db = np.zeros(w.shape[0], dtype)
        dx = _input_gradient(kernel, x, padded, conv.padding, compute_dx,
                             lambda x_arg, dx_arg, **options: kernel(dy, code, x_arg, w, *geometry, dx_arg, dw, db,
                                                                     **options))
        return dx, dw, db

    key = (_padded_shape(x.shape, conv.padding), w.shape, conv.stride, pool.kernel, pool.stride, dtype,
           bool(compute_dx))
    return _dispatch(op, backend, algorithm, key, run, x.shape[0], _inapplicable(conv))


_FORWARD_CALLS = {
    op_table.CONV2D.name: _conv2d_call,
    op_table.MAX_POOL2D.name: partial(_pool_call, op_table.MAX_POOL2D.name, -np.inf),
    op_table.AVG_POOL2D.name: partial(_pool_call, op_table.AVG_POOL2D.name, 0),
    op_table.FUSED.name: _fused_call,
}


def prepare(op, *args, **kwargs) -> Launch:
    """How to run ``op`` (conv2d, max_pool2d, avg_pool2d or
    conv2d_relu_maxpool2d) called as ``ops.<op>(*args, **kwargs)`` on
    buffers the caller owns: the same validation (the same errors), and
    the kernel that call would run (``auto``: measured once on these
    arrays and remembered, so one choice serves both). See :class:`Launch`;
    what a compiled inference plan (:mod:`fastconv.plan`) is built from."""
    if op not in _FORWARD_CALLS:
        raise ValueError(f"prepare: op must be one of {tuple(_FORWARD_CALLS)}, got {op!r}")
    call = _FORWARD_CALLS[op](*args, **kwargs)
    return Launch(call.kernel(), call.x.dtype, call.key[0], call.padding, call.pad_value, call.geometry,
                  call.outputs)


# --------------------------------------------------------------- batch norm


def _batch_norm_args(op, x, eps, **per_channel):
    """x and the (C,) arrays ``per_channel`` checked against each other, and
    eps; ValueError or TypeError naming what does not fit."""
    try:
        x = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{op}: x is not array-like: {exc}") from None
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be (N, C) or (N, C, H, W), got shape {x.shape}")
    if x.shape[1] < 1 or min(x.shape[2:], default=1) < 1:
        raise ValueError(f"{op}: x must have C >= 1 and H, W >= 1, got shape {x.shape}")
    arrays = {}
    for name, value in per_channel.items():
        a = _as_array(op, name, value, 1, "(C,)")
        if a.shape != x.shape[1:2]:
            raise ValueError(f"{op}: channel mismatch: x has C={x.shape[1]} but {name} has {a.shape[0]} "
                             f"values (x {x.shape}, {name} {a.shape})")
        arrays[name] = a
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
        raise ValueError(f"{op}: eps must be a number > 0, got {eps!r}")
    return x, arrays, float(eps)


def _as_channels(dtype, x):
    """x (N, C, ...) as a C-contiguous (N, C, M) array, M the product of
    the axes after C (1 for (N, C))."""
    return np.ascontiguousarray(x, dtype).reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, eps=1e-5, *, training=True,
               backend="auto", algorithm="auto"):
    """Batch normalisation: each channel c of x normalised over all its
    values (every axis but C), then scaled and shifted,

        y = gamma[c] * (x - mean[c]) / sqrt(var[c] + eps) + beta[c].

    x: (N, C) or (N, C, H, W) (any (N, C, ...)); gamma, beta: (C,); eps > 0.
    In training (the default) mean and var are the batch's, the variance
    biased (divided by the N*H*W values of a channel); returns ``(y, mean,
    var)``, y with the shape of x and mean, var (C,): what
    :func:`batch_norm_backward` needs and what running statistics move
    towards (the statistics of an empty batch are NaN). With
    ``training=False`` mean and var are ``running_mean`` and
    ``running_var`` (C,), which evaluation needs and training refuses;
    returns y.
    """
    y, mean, var = _batch_norm_call(x, gamma, beta, running_mean, running_var, eps, training, backend, algorithm)()
    return (y, mean, var) if training else y


def batch_norm_kernel(x, gamma, beta, running_mean, running_var, eps=1e-5, *, backend="auto", algorithm="auto"):
    """The kernel an evaluation :func:`batch_norm` of these arguments runs
    (the same validation and errors; ``auto``: measured once on them and
    remembered, so one choice serves both), for a caller that owns its
    buffers (:mod:`fastconv.plan`): ``kernel(x3, gamma, beta, mean, var,
    eps, False, y3)`` with x3 and y3 (N, C, M) views of x and its output
    (M the product of the axes after C; y3 may be x3 itself) and (C,)
    arrays, all C-contiguous in the dtype of x; it reads mean and var."""
    call = _batch_norm_call(x, gamma, beta, running_mean, running_var, eps, False, backend, algorithm)
    return _kernel(*call.args)


@dataclass(frozen=True)
class _BatchNormCall:
    """A validated :func:`batch_norm` call: ``args`` for :func:`_kernel` and
    :func:`_dispatch` (op, backend, algorithm, key, run, batch); calling it
    runs it."""

    args: tuple

    def __call__(self):
        return _dispatch(*self.args)


def _batch_norm_call(x, gamma, beta, running_mean, running_var, eps, training, backend, algorithm):
    op = op_table.BATCH_NORM.name
    _check_flag(op, "training", training)
    running = {"running_mean": running_mean, "running_var": running_var}
    given = [name for name, value in running.items() if value is not None]
    if training and given:
        raise ValueError(f"{op}: training normalises with the batch's statistics and returns them; "
                         f"{' and '.join(given)} are for evaluation (training=False)")
    if not training and len(given) < 2:
        raise ValueError(f"{op}: evaluation (training=False) needs running_mean and running_var")
    x, arrays, eps = _batch_norm_args(op, x, eps, gamma=gamma, beta=beta, **({} if training else running))
    dtype = _float_dtype(op, x=x, **arrays)
    x3 = _as_channels(dtype, x)
    gamma, beta = _contiguous(dtype, arrays["gamma"], arrays["beta"])

    def run(kernel):
        y = np.empty_like(x3)
        if training:  # the kernel writes the batch's statistics over the NaN of no values
            mean, var = np.full(len(gamma), np.nan, dtype), np.full(len(gamma), np.nan, dtype)
        else:  # copies: the caller's arrays are never handed to a kernel that could write them
            mean, var = (np.array(arrays[name], dtype) for name in running)
        kernel(x3, gamma, beta, mean, var, eps, training, y)
        return y.reshape(x.shape), mean, var

    return _BatchNormCall((op, backend, algorithm, (x3.shape, dtype, training), run, x.shape[0]))


def batch_norm_backward(dy, x, gamma, mean, var, eps=1e-5, *, compute_dx=True, backend="auto", algorithm="auto"):
    """Gradients of a training :func:`batch_norm`: dy with the shape of x,
    the x, gamma and eps of that call and the mean and var it returned.
    Returns (dx, dgamma, dbeta) with the shapes of x, (C,) and (C,);
    with xhat = (x - mean) / sqrt(var + eps) and the means over each
    channel's values,

        dbeta = sum dy,  dgamma = sum dy * xhat,
        dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))

    (the batch's mean and variance depend on every input of the channel
    too); dx is None, and never computed, when ``compute_dx`` is false.
    """
    op = op_table.BATCH_NORM_BACKWARD.name
    x, arrays, eps = _batch_norm_args(op, x, eps, gamma=gamma, mean=mean, var=var)
    dy = np.asarray(dy)
    _check_dy(op, dy, x.shape)
    _check_flag(op, "compute_dx", compute_dx)
    dtype = _float_dtype(op, dy=dy, x=x, **arrays)
    dy3, x3 = _as_channels(dtype, dy), _as_channels(dtype, x)
    gamma, mean, var = _contiguous(dtype, *arrays.values())

    def run(kernel):
        dx = np.empty_like(x3) if compute_dx else None
        dgamma, dbeta = np.zeros_like(gamma), np.zeros_like(gamma)
        kernel(dy3, x3, gamma, mean, var, eps, dx, dgamma, dbeta)
        return dx, dgamma, dbeta

    key = (x3.shape, dtype, bool(compute_dx))
    dx, dgamma, dbeta = _dispatch(op, backend, algorithm, key, run, x.shape[0])
    return (dx.reshape(x.shape) if compute_dx else None), dgamma, dbeta


# ---------------------------------------------------------------- ReLU
# Not an op of the table (one way to compute it, nothing to choose): the
# compiled backend's helper runs it on the threads; NumPy under
# FASTCONV_BACKEND=numpy, for arrays the helper does not take, and for fewer
# than PARALLEL_VALUES values (a dense layer's 64 x 128: 0.016 ms a pass in
# NumPy, 0.026-0.032 ms through the kernel's set-up, in a training step).

def _relu_kernels(*arrays):
    """The helper's (relu, relu_backward) if it takes these arrays (one
    float dtype, C-contiguous) and they are large enough, else None."""
    dtype = arrays[0].dtype
    if arrays[0].size < PARALLEL_VALUES or dtype not in registry.HELPER_DTYPES or not all(
            a.dtype == dtype and a.flags.c_contiguous for a in arrays):
        return None
    backend = registry.helper_backend()
    return None if backend is None else registry.relu_kernels(backend)


def relu(x):
    """max(x, 0) elementwise, as ``np.maximum(x, 0)`` (NaN stays NaN): x of
    any shape; a new array like it."""
    x = np.asarray(x)
    kernels = _relu_kernels(x)
    if kernels is None:
        return np.maximum(x, 0)
    y = np.empty_like(x)
    kernels[0](x.reshape(-1), y.reshape(-1), _chunks(x.size))
    return y


def relu_backward(dy, y):
    """The input gradient of :func:`relu`, ``dy * (y > 0)``, from the
    upstream gradient dy and the forward output y (one shape)."""
    dy, y = np.asarray(dy), np.asarray(y)
    if dy.shape != y.shape:
        raise ValueError(f"relu_backward: dy has shape {dy.shape}, the forward output y {y.shape}")
    kernels = _relu_kernels(dy, y)
    if kernels is None:
        return dy * (y > 0)
    dx = np.empty_like(dy)
    kernels[1](dy.reshape(-1), y.reshape(-1), dx.reshape(-1), _chunks(dy.size))
    return dx
