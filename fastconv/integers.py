"""Integer arguments, checked one way everywhere: what counts as an integer,
and the check for a count (channels, features, threads, epochs, strides).

An integer is a Python or NumPy integer, never a bool (``True`` would pass
as 1 channel) nor a float, however whole (``2.0`` hides a computation that
went wrong). A count is an integer >= 1.
"""
from __future__ import annotations

import numbers


def is_integer(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer (bools are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name: str) -> int:
    """``value`` as an int when it is an integer >= 1; otherwise ValueError
    "<name> must be a positive integer, got <value!r>"."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_int_text(text: str, name: str) -> int:
    """The integer >= 1 written in the str ``text`` (an environment
    variable), as ``int()`` reads it; otherwise ValueError
    "<name> must be a positive integer, got <text!r>"."""
    try:
        return positive_int(int(text), name)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {text!r}") from None
