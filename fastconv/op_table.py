"""Every op declared once: its name, the kernel family it belongs to, the
kernel's arguments, its backward partner, its NumPy reference and the
compiled algorithms every compiled backend must provide, as ATen's
``native_functions.yaml`` declares each op once for every backend.

:mod:`fastconv.registry` checks each backend's ``KERNELS`` table against
these declarations when it loads the backend: a key naming an op or an
algorithm not declared here (a misspelling) or a declared variant that is
missing is an error naming the keys, never a variant silently absent from
dispatch and from every test and benchmark that iterates over the registry.
The kernel contract behind ``kernel_args`` is written out in
:mod:`fastconv.kernels`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fastconv import reference

ALGORITHMS = ("naive", "im2col", "vectorized", "gemm", "winograd")
"""Every compiled algorithm, in the order tables and reports list them."""

SCHEDULED_ALGORITHMS = ("gemm", "winograd")
"""Algorithms whose kernels take two trailing arguments after the
contract's: ``n_chunks`` (how many threads share the batch) and
``cache_bytes`` (the cache one thread's working set should fit in), and call
BLAS from their own threads. Dispatch passes both and runs them with BLAS
single-threaded (:func:`fastconv.registry.kernel`), so a kernel never asks
the package how many threads or how much cache there is."""

PADDING_ALGORITHMS = ("winograd",)
"""Algorithms whose conv and fused kernels also take the keyword
``padding=(ph, pw)`` (default (0, 0)): given it, ``xp`` is the unpadded x
(N, C, H, W) and ``dxp`` the unpadded dx, which the backward pass writes
whole, and the kernel places x inside the zero border itself (Winograd
copies each image into a bordered scratch anyway). :mod:`fastconv.ops`
calls them so, with no padded copy of x, no zero-filled dxp and no crop;
a caller that owns a padded buffer (the inference plan) leaves it out."""


@dataclass(frozen=True)
class Op:
    """One op's declaration.

    name: as :mod:`fastconv.ops` calls it; family: the kernel modules that
    hold it (``"conv"``: ``conv_<backend>``, ``"pool"``: ``pool_<backend>``,
    ``"norm"``: ``norm_<backend>``);
    kernel_args: the kernel's arguments (see :mod:`fastconv.kernels`);
    backward: the op computing its gradients (None for a backward op);
    reference: the NumPy kernel every variant is checked against;
    algorithms: what each compiled backend implements.
    """

    name: str
    family: str
    kernel_args: tuple[str, ...]
    backward: str | None
    reference: Callable
    algorithms: tuple[str, ...] = ALGORITHMS

    @property
    def is_backward(self) -> bool:
        return self.backward is None


def _pool_ops(kind: str, forward: Callable, backward: Callable) -> tuple[Op, Op]:
    """The forward and backward declarations of a pooling op."""
    return (
        Op(kind, "pool", ("xp", "kh", "kw", "sh", "sw", "out"), f"{kind}_backward", forward,
           _POOL_ALGORITHMS),
        Op(f"{kind}_backward", "pool", ("dy", "xp", "kh", "kw", "sh", "sw", "dxp"), None, backward,
           _POOL_ALGORITHMS),
    )


_POOL_ALGORITHMS = ("naive", "im2col", "vectorized")  # pooling multiplies nothing: no GEMM
_FUSED_ALGORITHMS = ("naive", "vectorized", "gemm", "winograd")  # im2col's unfold has no fused form
_NORM_ALGORITHMS = ("naive", "vectorized")  # per-channel sums: no window to unfold, no product to multiply

_DECLARED = (
    Op("conv2d", "conv", ("xp", "w", "b", "sh", "sw", "out"), "conv2d_backward", reference.conv2d_forward),
    Op("conv2d_backward", "conv", ("dy", "xp", "w", "sh", "sw", "dxp", "dw"), None, reference.conv2d_backward),
    *_pool_ops("max_pool2d", reference.max_pool2d_forward, reference.max_pool2d_backward),
    *_pool_ops("avg_pool2d", reference.avg_pool2d_forward, reference.avg_pool2d_backward),
    Op("conv2d_relu_maxpool2d", "conv",
       ("xp", "w", "b", "sh", "sw", "pkh", "pkw", "psh", "psw", "out", "code"),
       "conv2d_relu_maxpool2d_backward", reference.conv2d_relu_maxpool2d_forward, _FUSED_ALGORITHMS),
    Op("conv2d_relu_maxpool2d_backward", "conv",
       ("dy", "code", "xp", "w", "sh", "sw", "pkh", "pkw", "psh", "psw", "dxp", "dw", "db"),
       None, reference.conv2d_relu_maxpool2d_backward, _FUSED_ALGORITHMS),
    Op("batch_norm", "norm", ("x", "gamma", "beta", "mean", "var", "eps", "training", "y"),
       "batch_norm_backward", reference.batch_norm_forward, _NORM_ALGORITHMS),
    Op("batch_norm_backward", "norm", ("dy", "x", "gamma", "mean", "var", "eps", "dx", "dgamma", "dbeta"),
       None, reference.batch_norm_backward, _NORM_ALGORITHMS),
)

OPS: dict[str, Op] = {op.name: op for op in _DECLARED}
"""Every op by name, in declaration order."""

CONV2D, CONV2D_BACKWARD, MAX_POOL2D, MAX_POOL2D_BACKWARD, AVG_POOL2D, AVG_POOL2D_BACKWARD, FUSED, \
    FUSED_BACKWARD, BATCH_NORM, BATCH_NORM_BACKWARD = _DECLARED
FAMILIES = ("conv", "pool", "norm")


def op(name: str) -> Op:
    """The declaration of ``name``; ValueError naming the known ops if none."""
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown op {name!r}; choose from {tuple(OPS)}") from None


def check_kernels(where: str, family: str, table: dict) -> None:
    """Refuse a backend's kernel table for ``family`` that does not match
    the declarations: ValueError naming every unknown key (an op or
    algorithm not declared, a key that is not an ``(op, algorithm)`` pair,
    an op of another family) and every declared variant that is missing.
    ``where`` names the table in the message (its module)."""
    expected = {(o.name, alg) for o in OPS.values() if o.family == family for alg in o.algorithms}
    unknown = [key for key in table if key not in expected]
    missing = sorted(expected - set(table))
    problems = []
    if unknown:
        problems.append(f"unknown keys {unknown} (ops of this family: "
                        f"{[o.name for o in OPS.values() if o.family == family]}; algorithms: {ALGORITHMS})")
    if missing:
        problems.append(f"missing variants {missing}")
    if problems:
        raise ValueError(f"{where}: the kernel table does not match fastconv.op_table: " + "; ".join(problems))
