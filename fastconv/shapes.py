"""Output-size and work arithmetic shared by every kernel, layer, benchmark
and teaching tool.

All sizes follow the convention of every framework (and of CS231n):

    out = (in + 2 * padding - kernel) // stride + 1

and a conv costs a multiply and an add per weight per output pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastconv.integers import is_integer, positive_int


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(vertical, horizontal)``.

    Raises TypeError for non-integers (:func:`fastconv.integers.is_integer`:
    bools and floats are not) and ValueError for a value below ``minimum``;
    the message names the argument.
    """
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    for item in items:
        if not is_integer(item):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if item < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def conv_out_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, *, exact: bool = False
) -> int:
    """Number of window positions along one axis.

    ``size`` input length, ``kernel`` window length, ``stride >= 1``,
    ``padding >= 0`` zeros added on each side. Raises ValueError when the
    window does not fit in the padded input, and, with ``exact=True``, when
    the stride does not tile it (the last rows would be silently skipped, as
    every framework does by default).
    """
    positive_int(stride, "stride")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = size + 2 * padding
    if kernel > padded:
        raise ValueError(
            f"kernel {kernel} is larger than the padded input {padded} "
            f"(input {size} + 2 * padding {padding})"
        )
    if exact and (padded - kernel) % stride:
        raise ValueError(
            f"stride {stride} does not tile the padded input {padded} with kernel {kernel}: "
            f"({padded} - {kernel}) % {stride} = {(padded - kernel) % stride} "
            "positions would be skipped"
        )
    return (padded - kernel) // stride + 1


def conv_flops(n: int, f: int, c: int, kh: int, kw: int, oh: int, ow: int) -> int:
    """Floating-point operations of a conv forward pass: x (N, C, H, W)
    with w (F, C, KH, KW) to (N, F, OH, OW), a multiply and an add per
    weight per output pixel: ``2*N*F*C*KH*KW*OH*OW``. Bias additions are not
    counted; a backward pass (dx and dw) costs twice this."""
    return 2 * n * f * c * kh * kw * oh * ow


def dense_flops(n: int, in_features: int, out_features: int) -> int:
    """Floating-point operations of a dense layer, x (N, in) @ w (in, out):
    a 1x1 conv of a 1x1 image, ``2*N*in*out``."""
    return conv_flops(n, out_features, in_features, 1, 1, 1, 1)


@dataclass(frozen=True)
class FieldRow:
    """Geometry after one layer, along one axis.

    ``size``: output length; ``receptive_field``: input pixels one output
    pixel sees; ``jump``: input pixels between neighbouring outputs (the
    product of the strides so far); ``start``: input coordinate of the centre
    of the first output's field (negative when padding reaches outside).
    """

    size: int
    receptive_field: int
    jump: int
    start: float


def receptive_field(windows, input_size: int) -> list[FieldRow]:
    """Receptive field of every layer of a stack of sliding windows.

    ``windows``: per layer a ``(kernel, stride, padding)`` triple along one
    axis; a layer without a window (ReLU, Dropout) is ``(1, 1, 0)``.
    Each layer widens the field by ``(kernel - 1) * jump`` where ``jump`` is
    the stride product of the layers *before* it — a 2x2 pool adds one input
    step of the layer below, it does not double the field.
    """
    size, field, jump, start = input_size, 1, 1, 0.5
    rows = []
    for kernel, stride, padding in windows:
        size = conv_out_size(size, kernel, stride, padding)
        field += (kernel - 1) * jump
        start += ((kernel - 1) / 2 - padding) * jump
        jump *= stride
        rows.append(FieldRow(size, field, jump, start))
    return rows
