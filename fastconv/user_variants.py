"""Your kernel as a variant: a learner's Python (NumPy or Numba) function
registered under a name, dispatched by :mod:`fastconv.ops` like the
built-in kernels, listed by ``ops.variants`` under the backend ``"user"``,
timed by ``fastconv-bench`` and usable by any layer::

    import fastconv
    from fastconv import ops

    @fastconv.register_variant("conv2d", name="mine")
    def conv2d(x, w, b=None, stride=1, padding=0):
        ...                                  # returns y (N, F, OH, OW)

    ops.variants("conv2d")                   # [..., ("user", "mine")]
    ops.conv2d(x, w, b, algorithm="mine")    # or backend="user", algorithm="mine"

A learner's function takes the op's arguments as :mod:`fastconv.ops` names
them, with plain ints for stride, padding and window sizes (see
:data:`SIGNATURES`), and returns what the op returns. The adapter here
turns it into a kernel of the registry's contract (:mod:`fastconv.kernels`):
``ops`` has validated the arguments, converted the arrays to one
C-contiguous float dtype and padded the input, so through ``ops`` the
function receives that padded input with ``padding=0`` (the same result,
by definition of padding); ``fastconv-check`` calls it with the padding
itself, and so checks the learner's padding too. The result is checked
for its shape and cast into the output ``ops`` allocated.

``auto`` never picks a user variant: it runs only when asked for by name
(``algorithm="mine"``) or with ``backend="user"``. A name is per op: a
model that trains with ``algorithm="mine"`` needs the forward op and its
backward (``conv2d`` and ``conv2d_backward``) registered under it.

Library only: this module imports nothing from the registry (which imports
it) and runs no kernels.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fastconv import op_table

BACKEND = "user"
"""The backend name every user variant is listed under."""

SIGNATURES = {
    "conv2d": "f(x, w, b=None, stride=1, padding=0) -> y (N, F, OH, OW)",
    "conv2d_backward": "f(dy, x, w, stride=1, padding=0) -> (dx, dw, db)",
    "max_pool2d": "f(x, kernel_size, stride=None, padding=0) -> y (N, C, OH, OW)",
    "max_pool2d_backward": "f(dy, x, kernel_size, stride=None, padding=0) -> dx (N, C, H, W)",
    "avg_pool2d": "f(x, kernel_size, stride=None, padding=0) -> y (N, C, OH, OW)",
    "avg_pool2d_backward": "f(dy, x, kernel_size, stride=None, padding=0) -> dx (N, C, H, W)",
    "conv2d_relu_maxpool2d": "f(x, w, b=None, stride=1, padding=0, pool_size=2, pool_stride=None) "
                             "-> (y (N, F, PH, PW), code (N, F, PH, PW) uint8)",
    "conv2d_relu_maxpool2d_backward": "f(dy, code, x, w, stride=1, padding=0, pool_size=2, pool_stride=None) "
                                      "-> (dx, dw, db)",
}
"""The learner-facing call of each op a user variant can implement: as
:mod:`fastconv.ops` names the arguments, with one int for each of stride,
padding and window size."""

RESERVED = ("auto", *op_table.ALGORITHMS, "reference")


@dataclass(frozen=True)
class UserVariant:
    op: str
    name: str
    function: Callable


_variants: dict[tuple[str, str], UserVariant] = {}


def register_variant(op: str, function: Callable | None = None, *, name: str | None = None):
    """Register ``function`` as the variant ``name`` (default: the
    function's own name) of ``op``; returns ``function`` unchanged. Without
    ``function``, a decorator::

        @register_variant("max_pool2d", name="mine")
        def max_pool2d(x, kernel_size, stride=None, padding=0): ...

    Registering a name again replaces the function (a notebook cell run
    twice). ValueError for an unknown op, a name of a built-in algorithm or
    a name that is not an identifier; TypeError for a function that is not
    callable.
    """
    op_table.op(op)  # ValueError naming the known ops
    if op not in SIGNATURES:
        raise ValueError(f"register_variant: {op} has no learner-facing signature yet; a user variant can "
                         f"implement {', '.join(SIGNATURES)}")
    if function is None:
        return lambda f: register_variant(op, f, name=name)
    if not callable(function):
        raise TypeError(f"register_variant: {op}: function must be callable, got {function!r}")
    name = getattr(function, "__name__", None) if name is None else name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_variant: {op}: name must be an identifier such as 'mine', got {name!r}")
    if name in RESERVED:
        raise ValueError(f"register_variant: {op}: {name!r} is a built-in algorithm's name; "
                         f"choose another (not one of {RESERVED})")
    _variants[(op, name)] = UserVariant(op, name, function)
    return function


def unregister_variant(op: str, name: str) -> None:
    """Forget one variant (KeyError-free: nothing happens if it is absent)."""
    _variants.pop((op, name), None)


def clear() -> None:
    """Forget every user variant."""
    _variants.clear()


def variants(op: str) -> list[tuple[str, str]]:
    """``[("user", name), ...]`` for ``op``, in the order they were registered."""
    return [(BACKEND, name) for (o, name) in _variants if o == op]


def names() -> dict[str, list[str]]:
    """The names registered for each op (for messages)."""
    found: dict[str, list[str]] = {}
    for op, name in _variants:
        found.setdefault(op, []).append(name)
    return found


def hint(op: str, algorithm: str) -> str:
    """A sentence for the error of an ``algorithm`` no variant of ``op``
    has: which other ops have a user variant of that name, if any."""
    having = [o for o, names_ in names().items() if algorithm in names_]
    if not having:
        return ""
    return (f" (user variants named {algorithm!r} exist for {', '.join(having)}; register {op} under that "
            f"name too: fastconv.register_variant({op!r}, f, name={algorithm!r}), f being "
            f"{SIGNATURES[op]})")


def kernel(op: str, name: str) -> Callable:
    """The registry-contract kernel of the user variant ``name`` of ``op``."""
    try:
        variant = _variants[(op, name)]
    except KeyError:
        raise ValueError(f"backend {BACKEND!r} has no algorithm {name!r} for {op}; "
                         f"choose from {[n for _, n in variants(op)]}") from None
    return _ADAPTERS[op](variant)


# ---------------------------------------------------------------- adapters


def _one(variant, what, pair):
    """The int a learner's function takes for an (H, W) pair."""
    if pair[0] != pair[1]:
        raise ValueError(f"user variant {variant.name!r} of {variant.op} takes one int {what}, "
                         f"got {what} {tuple(pair)} (different along H and W)")
    return int(pair[0])


def _result(variant, what, value, shape):
    """``value`` as an array of ``shape``, or ValueError/TypeError naming
    the variant and what it returned."""
    if not isinstance(value, np.ndarray) and not np.isscalar(value):
        raise TypeError(f"user variant {variant.name!r} of {variant.op} returned {type(value).__name__} "
                        f"for {what}, expected a NumPy array of shape {shape}")
    value = np.asarray(value)
    if value.shape != tuple(shape):
        raise ValueError(f"user variant {variant.name!r} of {variant.op} returned {what} of shape "
                         f"{value.shape}, expected {tuple(shape)}")
    return value


def _parts(variant, value, count, names_):
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise TypeError(f"user variant {variant.name!r} of {variant.op} must return a tuple "
                        f"({', '.join(names_)}), got {type(value).__name__}")
    return value


def _conv2d(v):
    def run(xp, w, b, sh, sw, out):
        out[...] = _result(v, "y", v.function(xp, w, b, _one(v, "stride", (sh, sw)), 0), out.shape)
    return run


def _conv2d_backward(v):
    # db is dy summed, which ops computes itself (the kernel contract has no db).
    def run(dy, xp, w, sh, sw, dxp, dw):
        dx, dw_, _ = _parts(v, v.function(dy, xp, w, _one(v, "stride", (sh, sw)), 0), 3, ("dx", "dw", "db"))
        if dxp is not None:
            dxp += _result(v, "dx", dx, xp.shape)
        dw += _result(v, "dw", dw_, w.shape)
    return run


def _pool(v):
    def run(xp, kh, kw, sh, sw, out):
        y = v.function(xp, _one(v, "kernel_size", (kh, kw)), _one(v, "stride", (sh, sw)), 0)
        out[...] = _result(v, "y", y, out.shape)
    return run


def _pool_backward(v):
    def run(dy, xp, kh, kw, sh, sw, dxp):
        dx = v.function(dy, xp, _one(v, "kernel_size", (kh, kw)), _one(v, "stride", (sh, sw)), 0)
        dxp += _result(v, "dx", dx, xp.shape)
    return run


def _fused(v):
    def run(xp, w, b, sh, sw, pkh, pkw, psh, psw, out, code):
        result = v.function(xp, w, b, _one(v, "stride", (sh, sw)), 0, _one(v, "pool_size", (pkh, pkw)),
                            _one(v, "pool_stride", (psh, psw)))
        y, c = _parts(v, result, 2, ("y", "code"))
        out[...] = _result(v, "y", y, out.shape)
        code[...] = _result(v, "code", c, code.shape)
    return run


def _fused_backward(v):
    def run(dy, code, xp, w, sh, sw, pkh, pkw, psh, psw, dxp, dw, db):
        result = v.function(dy, code, xp, w, _one(v, "stride", (sh, sw)), 0, _one(v, "pool_size", (pkh, pkw)),
                            _one(v, "pool_stride", (psh, psw)))
        dx, dw_, db_ = _parts(v, result, 3, ("dx", "dw", "db"))
        if dxp is not None:
            dxp += _result(v, "dx", dx, xp.shape)
        dw += _result(v, "dw", dw_, w.shape)
        db += _result(v, "db", db_, db.shape)
    return run


_ADAPTERS = {
    op_table.CONV2D.name: _conv2d,
    op_table.CONV2D_BACKWARD.name: _conv2d_backward,
    op_table.MAX_POOL2D.name: _pool,
    op_table.MAX_POOL2D_BACKWARD.name: _pool_backward,
    op_table.AVG_POOL2D.name: _pool,
    op_table.AVG_POOL2D_BACKWARD.name: _pool_backward,
    op_table.FUSED.name: _fused,
    op_table.FUSED_BACKWARD.name: _fused_backward,
}


# ------------------------------------------------------------- loading


class LoadError(Exception):
    """A ``FILE.py:FUNCTION`` that cannot be loaded; the message says why."""


def load_function(target: str) -> Callable:
    """The function ``FUNCTION`` of the Python file ``FILE.py`` named by
    ``target`` (``"FILE.py:FUNCTION"``). The file runs as a module of its
    own, with its folder on ``sys.path`` (so it may import its neighbours).
    LoadError saying what is wrong: no colon, no such file, an error while
    the file runs (with its traceback's last line), no such function."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise LoadError(f"{target!r}: expected FILE.py:FUNCTION, for example my_conv.py:conv2d")
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such file")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = "fastconv_learner_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Numba's cache and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # noqa: BLE001  (a learner's file may raise anything, SystemExit too)
        sys.modules.pop(module_name, None)
        raise LoadError(f"{path} raised {type(error).__name__} while it was loaded: {error}") from error
    function = getattr(module, name, None)
    if function is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise LoadError(f"{path} has no function {name!r}" + (f"; it defines {', '.join(defined)}" if defined else ""))
    if not callable(function):
        raise LoadError(f"{path}: {name} is a {type(function).__name__}, not a function")
    return function
