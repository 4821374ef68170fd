"""The common mistakes of a first convolution or pooling kernel, each
computed from the NumPy reference, so that ``fastconv-check`` can say not
only that a learner's result is wrong but why.

A mistake is diagnosed by what it produces: for a failing case, each
mistake that applies to the op computes what a function making exactly
that mistake would return (the reference with the filter flipped, the
padding left out, each gradient divided by the batch...), and
:func:`diagnose` keeps the mistakes whose result the learner's equals.
Results with several parts (dx, dw, db) are compared part by part: a
mistake explains the learner's result when every part equals either the
correct one or the mistaken one, and at least one equals the mistaken one
only (a function that forgets db but gets dx and dw right).

Two mistakes are not matched by value: an output size off by one is
recognised by the shape (whatever the values), and an input modified in
place by comparing the inputs before and after the call
(:mod:`fastconv.runner` does that).

Library only: the reference ops and NumPy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastconv import battery, op_table
from fastconv.kernels import NO_GRADIENT

CONV, CONV_BACKWARD = op_table.CONV2D.name, op_table.CONV2D_BACKWARD.name
MAX, MAX_BACKWARD = op_table.MAX_POOL2D.name, op_table.MAX_POOL2D_BACKWARD.name
AVG, AVG_BACKWARD = op_table.AVG_POOL2D.name, op_table.AVG_POOL2D_BACKWARD.name
FUSED, FUSED_BACKWARD = op_table.FUSED.name, op_table.FUSED_BACKWARD.name
POOLS = (MAX, AVG)
POOL_BACKWARDS = (MAX_BACKWARD, AVG_BACKWARD)
ref = battery.reference


@dataclass(frozen=True)
class Mistake:
    """One common mistake.

    key: a short name (for tests and scripts); title: the mistake in a few
    words; explanation: what goes wrong and how to put it right, per op
    where it differs (key ``"*"`` for any other op); produce: per op, a
    function of the case's arguments (a namespace named as the op names
    them) returning what a function making the mistake returns (a list of
    candidates, empty where the mistake cannot show, as with a padding of
    0); explains: instead of ``produce``, a test of (case, got, expected).
    """

    key: str
    title: str
    explanation: dict
    produce: dict = field(default_factory=dict)
    explains: Callable | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.produce) if self.explains is None else battery.CHECKED_OPS

    def explain(self, op: str) -> str:
        return self.explanation.get(op, self.explanation.get("*", ""))


# ------------------------------------------------------------ helpers


def _args(case):
    return SimpleNamespace(**dict(zip(case.names, case.args)))


def _flip(w):
    return np.ascontiguousarray(w[:, :, ::-1, ::-1])


def _pad(x, p, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=value)


def _crop(a, p):
    return a[:, :, p : a.shape[2] - p, p : a.shape[3] - p] if p else a


def _windows(xp, k, s, oh, ow):
    """(N, C, OH, OW, K*K) windows of xp at stride s, the first OH x OW."""
    view = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :oh, :ow]
    return view.reshape(view.shape[:4] + (k * k,))


def _first_max(flat):
    return flat.argmax(axis=-1)


def _last_max(flat):
    return flat.shape[-1] - 1 - flat[..., ::-1].argmax(axis=-1)


def _route(dy, xp_shape, k, s, at, overwrite=False, dtype=None):
    """dxp with each dy[n, c, y, x] sent to offset ``at[n, c, y, x]`` (or
    every offset where ``at`` is a (..., K*K) mask) of its window at stride
    s; summed, or assigned in row-major window order if ``overwrite``."""
    dxp = np.zeros(xp_shape, dtype or dy.dtype)
    masks = at if at.ndim == dy.ndim + 1 else (np.arange(k * k) == at[..., None])
    for n, c, y, x in np.ndindex(dy.shape):
        for t in np.flatnonzero(masks[n, c, y, x]):
            r, col = y * s + t // k, x * s + t % k
            if overwrite:
                dxp[n, c, r, col] = dy[n, c, y, x]
            else:
                dxp[n, c, r, col] += dy[n, c, y, x]
    return dxp


def _stride_of(a):
    return a.kernel_size if a.stride is None else a.stride


def _max_backward(a, pick=_first_max, stride=None, overwrite=False, pad_value=-np.inf, crop=True):
    """max_pool2d_backward with the routing, stride and padding given."""
    k, p = a.kernel_size, a.padding
    s = _stride_of(a) if stride is None else stride
    xp = _pad(a.x, p, pad_value)
    flat = _windows(xp, k, s, *a.dy.shape[2:])
    at = pick(flat) if pick is not None else flat == flat.max(axis=-1, keepdims=True)
    dxp = _route(a.dy, xp.shape, k, s, at, overwrite, np.result_type(a.dy, a.x))
    return _crop(dxp, p) if crop else dxp


def _avg_backward(a, stride=None, overwrite=False, divide=True, crop=True):
    k, p = a.kernel_size, a.padding
    s = _stride_of(a) if stride is None else stride
    xp = _pad(a.x, p)
    every = np.ones(a.dy.shape + (k * k,), bool)
    dy = a.dy / (k * k) if divide else a.dy
    dxp = _route(dy, xp.shape, k, s, every, overwrite, np.result_type(a.dy, a.x))
    return _crop(dxp, p) if crop else dxp


def _valid(fn):
    """``fn``'s candidates, none where the mistaken geometry is impossible."""
    def produce(a):
        try:
            return [c for c in fn(a) if c is not None]
        except (ValueError, IndexError):
            return []
    return produce


def _conv_backward_at(a, w=None, dy=None, x=None, stride=None):
    """conv2d_backward with some arguments replaced; ``stride`` replaces the
    stride of the window positions only (dy keeps its shape)."""
    from fastconv import reference

    dy = a.dy if dy is None else dy
    x = a.x if x is None else x
    w = a.w if w is None else w
    if stride is None:
        return ref(CONV_BACKWARD, dy, x, w, a.stride, a.padding)
    xp = _pad(x, a.padding)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    reference.conv2d_backward(dy, xp, w, stride, stride, dxp, dw)
    return _crop(dxp, a.padding), dw, dy.sum(axis=(0, 2, 3))


def _fused_code(conv, pool, pool_stride, pick, relu=True):
    """(y, code) of max-pooling ``conv`` (after ReLU if ``relu``)."""
    s = pool if pool_stride is None else pool_stride
    activated = np.maximum(conv, 0) if relu else conv
    oh, ow = ((size - pool) // s + 1 for size in conv.shape[2:])
    flat = _windows(activated, pool, s, oh, ow)
    y = flat.max(axis=-1)
    code = pick(flat).astype(np.uint8)
    if relu:
        code = np.where(y > 0, code, NO_GRADIENT).astype(np.uint8)
    return y.astype(conv.dtype), code


def _fused_forward_with(a, x=None, w=None, b="same", stride=None, padding=None):
    return ref(FUSED, a.x if x is None else x, a.w if w is None else w, a.b if b == "same" else b,
               a.stride if stride is None else stride, a.padding if padding is None else padding,
               a.pool_size, a.pool_stride)


def _fused_backward_with(a, w=None, code=None, x=None, padding=None):
    return ref(FUSED_BACKWARD, a.dy, a.code if code is None else code, a.x if x is None else x,
               a.w if w is None else w, a.stride, a.padding if padding is None else padding,
               a.pool_size, a.pool_stride)


def _first(value):
    return value[0] if isinstance(value, tuple) else value


# ------------------------------------------------------------ the catalogue


def _flipped_backward(a):
    dx, dw, db = _conv_backward_at(a, w=_flip(a.w))
    return [(dx, _flip(dw), db)]


def _flipped_fused_backward(a):
    dx, dw, db = _fused_backward_with(a, w=_flip(a.w))
    return [(dx, _flip(dw), db)]


FLIPPED_FILTER = Mistake(
    "flipped_filter", "the filter is flipped: convolution instead of cross-correlation",
    {"*": "Your result equals the one for w turned by 180 degrees (w[:, :, ::-1, ::-1]). What deep learning "
          "calls convolution is a cross-correlation: the filter slides over the image as it is, "
          "out[n, f, y, x] = sum over c, i, j of w[f, c, i, j] * x[n, c, y*stride + i, x*stride + j] "
          "(i and j count up in both, with no kh - 1 - i).",
     CONV_BACKWARD: "Your gradients equal those of a convolution with w turned by 180 degrees. The forward "
                    "pass is a cross-correlation (no flip), so dw[f, c, i, j] = sum of dy[n, f, y, x] * "
                    "x[n, c, y*stride + i, x*stride + j] and dx[n, c, y*stride + i, x*stride + j] += "
                    "dy[n, f, y, x] * w[f, c, i, j]: the same offsets i, j on both sides, no flip."},
    {CONV: lambda a: [ref(CONV, a.x, _flip(a.w), a.b, a.stride, a.padding)],
     CONV_BACKWARD: _flipped_backward,
     FUSED: lambda a: [_fused_forward_with(a, w=_flip(a.w))],
     FUSED_BACKWARD: _flipped_fused_backward},
)


def _off_by_one(case, got, expected) -> bool:
    if case.op == "out_size":
        return isinstance(got, (int, np.integer)) and not isinstance(got, bool) and abs(int(got) - expected) == 1
    g, e = _first(got), _first(expected)
    if not isinstance(g, np.ndarray) or not isinstance(e, np.ndarray) or g.ndim != e.ndim:
        return False
    if case.op == "im2col":
        a = _args(case)
        n, _, oh, ow = battery.conv_out_shape(a.x.shape, (1, 1, a.kh, a.kw), (a.stride,) * 2, (a.padding,) * 2)
        near = {n * (oh + i) * (ow + j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)}
        return g.shape[0] == e.shape[0] and g.shape[1] in near
    if e.ndim != 4 or g.shape[:2] != e.shape[:2] or g.shape == e.shape:
        return False
    return all(abs(gs - es) <= 1 for gs, es in zip(g.shape[2:], e.shape[2:]))


OFF_BY_ONE = Mistake(
    "off_by_one", "the output size is off by one",
    {"*": "Your output has one row or column too many or too few. Along each axis a window fits "
          "(H + 2*padding - KH) // stride + 1 times: the +1 counts the first position, at 0; a loop "
          "`for y in range(OH)` with that OH visits each one.",
     "out_size": "Your answer is one off. A window of size kernel fits (size + 2*padding - kernel) // stride "
                 "+ 1 times: (size + 2*padding - kernel) // stride steps of stride after the first position.",
     FUSED: "Your output has one row or column too many or too few: the conv output is OH = (H + 2*padding - "
            "KH) // stride + 1 rows, and the pooled one (OH - pool_size) // pool_stride + 1."},
    explains=_off_by_one,
)


def _padding_forward(op):
    def produce(a):
        if a.padding == 0:
            return []
        if op == "out_size":
            return [battery.out_size_reference(a.size, a.kernel, a.stride, 0),
                    (a.size + a.padding - a.kernel) // a.stride + 1]  # counted once
        if op == FUSED:
            return [_fused_forward_with(a, padding=0)]
        args = dict(vars(a), padding=0)
        return [ref(op, *(args[n] for n in battery.ARGUMENTS[op]))]
    return _valid(produce)


def _padding_backward(op):
    def produce(a):
        if a.padding == 0:
            return []
        if op == CONV_BACKWARD:
            return [ref(CONV_BACKWARD, a.dy, _pad(a.x, a.padding), a.w, a.stride, 0)]
        if op == FUSED_BACKWARD:
            return [_fused_backward_with(a, x=_pad(a.x, a.padding), padding=0)]
        if op == MAX_BACKWARD:
            return [_max_backward(a, crop=False)]
        return [_avg_backward(a, crop=False)]
    return _valid(produce)


PADDING_IGNORED = Mistake(
    "padding_ignored", "the padding is ignored",
    {"*": "Your result equals the one with padding 0. Pad first: xp = np.pad(x, ((0, 0), (0, 0), (padding, "
          "padding), (padding, padding))) (zeros; -inf for max pooling), then slide the window over xp.",
     "out_size": "Your answer is the one for padding 0, or for padding on one side only: padding adds "
                 "`padding` rows on each side, 2*padding in all: (size + 2*padding - kernel) // stride + 1.",
     CONV_BACKWARD: "Your dx is the gradient of the padded input xp (it has 2*padding more rows and columns): "
                    "the padding is not part of x, so cut it off: dx = dxp[:, :, p:-p, p:-p] (for p > 0).",
     MAX_BACKWARD: "Your dx is the gradient of the padded input (2*padding more rows and columns): cut the "
                   "padding off, dx = dxp[:, :, p:-p, p:-p] (for p > 0).",
     AVG_BACKWARD: "Your dx is the gradient of the padded input (2*padding more rows and columns): cut the "
                   "padding off, dx = dxp[:, :, p:-p, p:-p] (for p > 0).",
     FUSED_BACKWARD: "Your dx is the gradient of the padded input (2*padding more rows and columns): cut the "
                     "padding off, dx = dxp[:, :, p:-p, p:-p] (for p > 0)."},
    {**{op: _padding_forward(op) for op in (CONV, MAX, AVG, FUSED, "im2col", "out_size")},
     **{op: _padding_backward(op) for op in (CONV_BACKWARD, MAX_BACKWARD, AVG_BACKWARD, FUSED_BACKWARD)}},
)


def _stride_produce(op):
    def produce(a):
        if op == "out_size":
            return [] if a.stride == 1 else [battery.out_size_reference(a.size, a.kernel, 1, a.padding)]
        if op in POOLS + POOL_BACKWARDS:
            if _stride_of(a) == 1:
                return []
            if op == MAX_BACKWARD:
                return [_max_backward(a, stride=1)]
            if op == AVG_BACKWARD:
                return [_avg_backward(a, stride=1)]
            return [ref(op, a.x, a.kernel_size, 1, a.padding)]
        if a.stride == 1:
            return []
        if op == CONV_BACKWARD:
            return [_conv_backward_at(a, stride=1)]
        if op == FUSED:
            return [_fused_forward_with(a, stride=1)]
        args = dict(vars(a), stride=1)
        return [ref(op, *(args[n] for n in battery.ARGUMENTS[op]))]
    return _valid(produce)


STRIDE_IGNORED = Mistake(
    "stride_ignored", "the stride is ignored",
    {"*": "Your result equals the one for stride 1. Output pixel (y, x) reads the window whose top-left "
          "corner is (y*stride, x*stride), and there are (H + 2*padding - KH) // stride + 1 of them per column.",
     "out_size": "Your answer is the one for stride 1: the window moves `stride` places at a time, so divide "
                 "the room it has, (size + 2*padding - kernel), by stride (//) before adding 1.",
     MAX: "Your result equals the one for stride 1. The window of output (y, x) starts at (y*stride, "
          "x*stride); and stride=None means stride = kernel_size (windows side by side).",
     AVG: "Your result equals the one for stride 1. The window of output (y, x) starts at (y*stride, "
          "x*stride); and stride=None means stride = kernel_size (windows side by side).",
     CONV_BACKWARD: "Your gradients read and write the window of dy[n, f, y, x] at (y + i, x + j): it is at "
                    "(y*stride + i, x*stride + j), as in the forward pass.",
     MAX_BACKWARD: "Your dx sends each gradient into the window at (y, x) instead of (y*stride, x*stride) "
                   "(stride=None means stride = kernel_size).",
     AVG_BACKWARD: "Your dx spreads each gradient over the window at (y, x) instead of (y*stride, x*stride) "
                   "(stride=None means stride = kernel_size)."},
    {op: _stride_produce(op) for op in (CONV, CONV_BACKWARD, MAX, MAX_BACKWARD, AVG, AVG_BACKWARD, FUSED,
                                        "im2col", "out_size")},
)


def _transposed(value):
    """Every 4-D part with its first two axes swapped."""
    parts = value if isinstance(value, tuple) else (value,)
    swapped = tuple(np.swapaxes(p, 0, 1) if isinstance(p, np.ndarray) and p.ndim == 4 else p for p in parts)
    return swapped if isinstance(value, tuple) else swapped[0]


def _channels_produce(op):
    def produce(a):
        expected = ref(op, *(getattr(a, n) for n in battery.ARGUMENTS[op]))
        found = [_transposed(expected)]
        if op == "im2col":
            k = a.kh * a.kw
            c = expected.shape[0] // k
            found = [expected.T, expected.reshape(c, k, -1).transpose(1, 0, 2).reshape(c * k, -1)]
        elif op in (CONV, FUSED) and a.w.shape[0] == a.w.shape[1]:
            swapped_w = np.ascontiguousarray(a.w.transpose(1, 0, 2, 3))
            found.append(ref(CONV, a.x, swapped_w, a.b, a.stride, a.padding) if op == CONV
                         else _fused_forward_with(a, w=swapped_w))
        elif op == CONV_BACKWARD and a.w.shape[0] == a.w.shape[1]:
            dx, dw, db = _conv_backward_at(a, w=np.ascontiguousarray(a.w.transpose(1, 0, 2, 3)))
            found.append((dx, dw.transpose(1, 0, 2, 3), db))
        return found
    return _valid(produce)


CHANNELS_SWAPPED = Mistake(
    "channels_swapped", "two axes are swapped",
    {"*": "Your result has (or reads) two axes in each other's place. Arrays here are (N, C, H, W): batch, "
          "channels, rows, columns; filters are (F, C, KH, KW): filter f reads input channel c through "
          "w[f, c], and the output is (N, F, OH, OW).",
     "im2col": "Your cols are laid out differently: cols has one row per (c, i, j), row (c*KH + i)*KW + j, "
               "and one column per (n, y, x), column (n*OH + y)*OW + x, so that w.reshape(F, -1) @ cols is "
               "the convolution (before reshaping to (N, F, OH, OW))."},
    {op: _channels_produce(op) for op in (CONV, CONV_BACKWARD, MAX, MAX_BACKWARD, AVG, AVG_BACKWARD, FUSED,
                                          FUSED_BACKWARD, "im2col")},
)


def _channel_sum_produce(op):
    def produce(a):
        if op == CONV_BACKWARD:
            if a.w.shape[0] < 2:
                return []
            found = []
            for keep in (slice(-1, None), slice(0, 1)):
                dx, _, _ = _conv_backward_at(a, w=a.w[keep], dy=np.ascontiguousarray(a.dy[:, keep]))
                _, dw, db = ref(CONV_BACKWARD, a.dy, a.x, a.w, a.stride, a.padding)
                found.append((dx, dw, db))
            return found
        if a.x.shape[1] < 2:
            return []
        found = []
        for keep in (slice(-1, None), slice(0, 1)):
            x, w = np.ascontiguousarray(a.x[:, keep]), np.ascontiguousarray(a.w[:, keep])
            found.append(ref(CONV, x, w, a.b, a.stride, a.padding) if op == CONV
                         else _fused_forward_with(a, x=x, w=w))
        return found
    return _valid(produce)


CHANNEL_SUM_MISSING = Mistake(
    "channel_sum_missing", "the sum over input channels is missing",
    {"*": "Your result equals the one for a single input channel (the first or the last): each output pixel "
          "must add up the products over every input channel c (and every i, j), not keep one channel's "
          "(an `=` where `+=` belongs, or a loop over c outside the sum).",
     CONV_BACKWARD: "Your dx equals the one from a single filter (the first or the last): every filter f read "
                    "x, so dx[n, c, ...] adds dy[n, f, y, x] * w[f, c, i, j] over all filters f."},
    {op: _channel_sum_produce(op) for op in (CONV, CONV_BACKWARD, FUSED)},
)


def _bias_forgotten_produce(op):
    def produce(a):
        if op in (CONV, FUSED):
            if a.b is None or not np.any(a.b):
                return []
            return [ref(CONV, a.x, a.w, None, a.stride, a.padding) if op == CONV
                    else _fused_forward_with(a, b=None)]
        expected = ref(op, *(getattr(a, n) for n in battery.ARGUMENTS[op]))
        return [(expected[0], expected[1], np.zeros_like(expected[2]))] if np.any(expected[2]) else []
    return _valid(produce)


def _bias_per_pixel_produce(op):
    def produce(a):
        if a.b is None or not np.any(a.b):
            return []
        _, c, kh, kw = a.w.shape
        found = []
        for times in sorted({c * kh * kw, kh * kw, c} - {1}):
            b = a.b * times
            found.append(ref(CONV, a.x, a.w, b, a.stride, a.padding) if op == CONV
                         else _fused_forward_with(a, b=b))
        return found
    return _valid(produce)


BIAS_FORGOTTEN = Mistake(
    "bias_forgotten", "the bias is forgotten",
    {"*": "Your result equals the one without the bias: add b[f] once to every output pixel of filter f, "
          "out[n, f, y, x] = b[f] + sum(...). (b may be None: then there is no bias.)",
     CONV_BACKWARD: "Your db is zero: the bias is added to every output pixel, so its gradient is dy summed "
                    "over the batch and the pixels, db = dy.sum(axis=(0, 2, 3)).",
     FUSED_BACKWARD: "Your db is zero: the bias is added to every conv output pixel, so db is the gradient "
                     "that reaches the conv output, summed over the batch and the pixels."},
    {op: _bias_forgotten_produce(op) for op in (CONV, CONV_BACKWARD, FUSED, FUSED_BACKWARD)},
)

BIAS_PER_PIXEL = Mistake(
    "bias_per_pixel", "the bias is added inside the sum",
    {"*": "Your result adds the bias once per product (per input pixel of the window, or per input "
          "channel), not once per output pixel: start each output at b[f] (or add it after the sum), "
          "outside the loops over c, i and j."},
    {op: _bias_per_pixel_produce(op) for op in (CONV, FUSED)},
)


def _ties_produce(op, pick):
    def produce(a):
        if op == MAX_BACKWARD:
            return [_max_backward(a, pick=pick)]
        conv = ref(CONV, a.x, a.w, a.b, a.stride, a.padding)
        return [_fused_code(conv, a.pool_size, a.pool_stride, pick)]
    return _valid(produce)


TIES_TO_LAST = Mistake(
    "ties_to_last", "pooling ties go to the last maximum",
    {"*": "Where a window holds its maximum more than once, your gradient goes to the last of them. The "
          "convention (PyTorch's, and the reference's) is the first in row-major order: compare with > "
          "(not >=) while scanning, or use argmax, which returns the first.",
     FUSED: "Where a pool window holds its maximum more than once, your code names the last of them. The "
            "convention is the first in row-major order: compare with > (not >=), or use argmax."},
    {MAX_BACKWARD: _ties_produce(MAX_BACKWARD, _last_max), FUSED: _ties_produce(FUSED, _last_max)},
)

TIES_TO_ALL = Mistake(
    "ties_to_all", "pooling ties all get the gradient",
    {"*": "Where a window holds its maximum more than once, your gradient goes to every one of them (a mask "
          "x == max): one gradient, counted several times. Send it to the first maximum only (argmax)."},
    {MAX_BACKWARD: _valid(lambda a: [_max_backward(a, pick=None)])},
)


def _averaged_produce(op):
    def produce(a):
        expected = ref(op, *(getattr(a, n) for n in battery.ARGUMENTS[op]))
        dx, dw, db = expected
        n = a.dy.shape[0]
        pixels = n * a.dy.shape[2] * a.dy.shape[3]
        found = []
        if n > 1:
            found.append((dx / n, dw / n, db / n))
        if pixels > 1 and pixels != n:
            found.append((dx, dw / pixels, db / pixels))
        return found
    return _valid(produce)


AVERAGED = Mistake(
    "averaged", "the gradients are averaged instead of summed",
    {"*": "Your gradients equal the correct ones divided by the batch size (or by the number of output "
          "pixels). A weight is used at every pixel of every image, so its gradient is the sum of all those "
          "uses; any averaging belongs to the loss (softmax_cross_entropy divides by N once)."},
    {op: _averaged_produce(op) for op in (CONV_BACKWARD, FUSED_BACKWARD)},
)


def _overwritten_produce(op):
    def produce(a):
        if op == MAX_BACKWARD:
            return [_max_backward(a, overwrite=True)]
        if op == AVG_BACKWARD:
            return [_avg_backward(a, overwrite=True)]
        if a.dy.shape[0] < 2:
            return []
        dx, _, _ = ref(CONV_BACKWARD, a.dy, a.x, a.w, a.stride, a.padding)
        _, dw, db = ref(CONV_BACKWARD, a.dy[-1:], a.x[-1:], a.w, a.stride, a.padding)
        return [(dx, dw, db)]
    return _valid(produce)


OVERWRITTEN = Mistake(
    "overwritten", "the gradients are overwritten instead of summed",
    {"*": "Your dx keeps only the last gradient that reaches each input pixel. Where windows overlap, a "
          "pixel was read by several outputs, and its gradient is the sum of what each sends back: "
          "dx[...] += ..., never dx[...] = ....",
     CONV_BACKWARD: "Your dw and db equal those of the last image alone: each image's gradient must be "
                    "added (dw += ...), not assigned, so that dw is the sum over the whole batch."},
    {op: _overwritten_produce(op) for op in (CONV_BACKWARD, MAX_BACKWARD, AVG_BACKWARD)},
)

INPUT_MODIFIED = Mistake(
    "input_modified", "an input is modified in place",
    {"*": "Your function wrote into an array it was given (an in-place operation such as x += ..., "
          "x[...] = ..., np.maximum(x, 0, out=x), or padding or ReLU applied to the argument itself). The "
          "caller still needs it (the backward pass reads x again): work on a copy, or on new arrays."},
)


def _zero_padded_max(op):
    def produce(a):
        if a.padding == 0 or np.all(a.x >= 0):
            return []
        x0 = _pad(a.x, a.padding)
        if op == MAX:
            return [ref(MAX, x0, a.kernel_size, a.stride, 0)]
        return [_max_backward(a, pad_value=0.0)]
    return _valid(produce)


MAX_PADDED_WITH_ZEROS = Mistake(
    "max_padded_with_zeros", "max pooling pads with zeros",
    {"*": "Your result equals the one with zeros as padding, which win over negative values. Max pooling "
          "pads with -inf, so that the padding is never a window's maximum: np.pad(..., "
          "constant_values=-np.inf)."},
    {op: _zero_padded_max(op) for op in (MAX, MAX_BACKWARD)},
)


def _avg_counts_produce(op):
    def produce(a):
        if op == AVG:
            if a.padding == 0:
                return []
            counts = ref(AVG, np.ones_like(a.x), a.kernel_size, a.stride, a.padding)
            return [ref(AVG, a.x, a.kernel_size, a.stride, a.padding) / counts]
        return [_avg_backward(a, divide=False)]
    return _valid(produce)


AVG_DIVISOR = Mistake(
    "avg_divisor", "the average divides by the wrong count",
    {AVG: "Your result divides each window's sum by the number of real (unpadded) pixels in it. Here, as in "
          "PyTorch by default, padded zeros count: divide by kernel_size**2 everywhere.",
     AVG_BACKWARD: "Your dx is kernel_size**2 times too large: each input pixel of a window gets dy / "
                   "kernel_size**2, because the forward pass divided the window's sum by that."},
    {op: _avg_counts_produce(op) for op in (AVG, AVG_BACKWARD)},
)


def _relu_missing_produce(a):
    conv = ref(CONV, a.x, a.w, a.b, a.stride, a.padding)
    return [_fused_code(conv, a.pool_size, a.pool_stride, _first_max, relu=False)]


RELU_MISSING = Mistake(
    "relu_missing", "the ReLU is missing",
    {"*": "Your result equals max pooling of the conv output without the ReLU: negative maxima stay "
          "negative. Apply max(., 0) before pooling (y = 0 where the window's maximum is <= 0), and put "
          "NO_GRADIENT (255) in code there: the ReLU passes no gradient back."},
    {FUSED: _valid(_relu_missing_produce)},
)


def _true_division(case, got, expected) -> bool:
    if case.op != "out_size" or not isinstance(got, (float, np.floating)):
        return False
    size, kernel, stride, padding = case.args
    room = size + 2 * padding - kernel
    return any(math.isclose(got, v) for v in (room / stride + 1, math.ceil(room / stride) + 1))


TRUE_DIVISION = Mistake(
    "true_division", "division with / instead of //",
    {"*": "Your answer is a fraction (or rounded up): a window position either fits or not, so the count "
          "rounds down. Use integer division, (size + 2*padding - kernel) // stride + 1."},
    explains=_true_division,
)

CATALOGUE = (FLIPPED_FILTER, OFF_BY_ONE, PADDING_IGNORED, STRIDE_IGNORED, CHANNELS_SWAPPED, CHANNEL_SUM_MISSING,
             BIAS_FORGOTTEN, BIAS_PER_PIXEL, TIES_TO_LAST, TIES_TO_ALL, AVERAGED, OVERWRITTEN, INPUT_MODIFIED,
             MAX_PADDED_WITH_ZEROS, AVG_DIVISOR, RELU_MISSING, TRUE_DIVISION)
"""Every mistake :func:`diagnose` knows, the issue's list first."""
BY_KEY = {m.key: m for m in CATALOGUE}


# ------------------------------------------------------------ matching


def _same(got, candidate, rtol) -> bool:
    """Equal shapes and values (any float dtype), NaN where NaN."""
    if isinstance(candidate, np.ndarray):
        if not isinstance(got, np.ndarray) or got.shape != candidate.shape:
            return False
        if got.dtype.kind not in "biuf":
            return False
        c = candidate.astype(np.float64)
        scale = float(np.max(np.abs(np.nan_to_num(c)), initial=0.0))
        return bool(np.allclose(got.astype(np.float64), c, rtol=rtol, atol=rtol * scale + 1e-12, equal_nan=True))
    try:
        return bool(got == candidate) and type(got) is not bool
    except (TypeError, ValueError):
        return False


def explains(candidate, got, expected, rtol) -> bool:
    """Whether a mistake's result ``candidate`` explains ``got``: part by
    part, each equals the expected or the candidate, and one at least the
    candidate only."""
    parts = (candidate, got, expected)
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return False
        parts = (candidate, tuple(got), expected)
    else:
        parts = ((candidate,), (got,), (expected,))
    shown = False
    for m, g, e in zip(*parts):
        right, mistaken = _same(g, e, rtol), _same(g, m, rtol)
        if not (right or mistaken):
            return False
        shown = shown or (mistaken and not right)
    return shown


def diagnose(case, got, expected) -> list[Mistake]:
    """The mistakes that explain ``got`` (what the learner's function
    returned for ``case``) where ``expected`` was right; [] if none does."""
    rtol = max(case.rtol, 1e-6)
    found = []
    for mistake in CATALOGUE:
        if mistake.explains is not None:
            try:
                if mistake.explains(case, got, expected):
                    found.append(mistake)
            except (TypeError, ValueError):
                pass
            continue
        produce = mistake.produce.get(case.op)
        if produce is None:
            continue
        if any(explains(candidate, got, expected, rtol) for candidate in produce(_args(case))):
            found.append(mistake)
    if len(found) > 1 and OFF_BY_ONE in found:  # a mistake that gives the very values says more than a size
        found.remove(OFF_BY_ONE)
    return found
