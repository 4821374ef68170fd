"""Output-size arithmetic shared by every kernel, layer and teaching tool.

All sizes follow the convention of every framework (and of CS231n):

    out = (in + 2 * padding - kernel) // stride + 1
"""
from __future__ import annotations

import numbers


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(vertical, horizontal)``.

    Raises TypeError for non-integers (bools included) and ValueError for a
    value below ``minimum``; the message names the argument.
    """
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if item < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Number of window positions along one axis.

    ``size`` input length, ``kernel`` window length, ``stride >= 1``,
    ``padding >= 0`` zeros added on each side. Raises ValueError when the
    window does not fit in the padded input.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = size + 2 * padding
    if kernel > padded:
        raise ValueError(
            f"kernel {kernel} is larger than the padded input {padded} "
            f"(input {size} + 2 * padding {padding})"
        )
    return (padded - kernel) // stride + 1
