"""What the benchmarks measure: the layer shapes of the reference networks,
the work each op does on them, and ready-to-time calls.

Shared by the pytest-benchmark suite (``bench/``) and the ``fastconv-bench``
report, so both time the same calls and count work the same way:

- conv: ``2*N*F*C*KH*KW*OH*OW`` FLOPs forward (a multiply and an add per
  weight per output pixel), twice that backward (dx and dw each cost one
  forward's worth);
- pooling: bytes of the arrays the op must touch, each once (forward reads
  x and writes out; backward reads dy, and x too for max-pool, and writes dx).

Every call goes through :mod:`fastconv.ops` with an explicit backend and
algorithm, as a layer makes it (validation and output allocation included).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fastconv import ops
from fastconv.shapes import conv_out_size

DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class Layer:
    """One conv or pool layer of a benchmark network.

    kind: "conv2d", "max_pool2d", "avg_pool2d" or "conv2d_relu_maxpool2d"
    (a conv layer, its ReLU and its max-pool as one fused op); in_shape:
    (C, H, W); window: (F, KH, KW) for conv, (KH, KW) for pooling; stride:
    one int for both axes (the pool default: the window); pool: the fused
    op's pool size (and stride). No padding.
    """

    network: str
    name: str
    kind: str
    in_shape: tuple[int, int, int]
    window: tuple[int, ...]
    stride: int = 1
    pool: int = 0

    @property
    def label(self) -> str:
        return f"{self.network}.{self.name}"


def _conv(network, name, in_shape, filters, size):
    return Layer(network, name, "conv2d", in_shape, (filters, size, size))


def _pool(network, name, kind, in_shape, size):
    return Layer(network, name, kind, in_shape, (size, size), stride=size)


def _block(network, name, in_shape, filters, size, pool):
    return Layer(network, name, "conv2d_relu_maxpool2d", in_shape, (filters, size, size), pool=pool)


NETWORKS = {
    # The MNIST reference CNN: conv 32@3x3, max-pool 2, conv 64@3x3, max-pool 2.
    "cnn": (
        _conv("cnn", "conv1", (1, 28, 28), 32, 3),
        _pool("cnn", "pool1", "max_pool2d", (32, 26, 26), 2),
        _conv("cnn", "conv2", (32, 13, 13), 64, 3),
        _pool("cnn", "pool2", "max_pool2d", (64, 11, 11), 2),
    ),
    # The same CNN as the model runs it: each conv -> ReLU -> max-pool fused.
    "cnn-fused": (
        _block("cnn-fused", "block1", (1, 28, 28), 32, 3, 2),
        _block("cnn-fused", "block2", (32, 13, 13), 64, 3, 2),
    ),
    # LeNet-5 on unpadded 28x28 digits: conv 6@5x5, avg-pool 2, conv 16@5x5, avg-pool 2.
    "lenet5": (
        _conv("lenet5", "conv1", (1, 28, 28), 6, 5),
        _pool("lenet5", "pool1", "avg_pool2d", (6, 24, 24), 2),
        _conv("lenet5", "conv2", (6, 12, 12), 16, 5),
        _pool("lenet5", "pool2", "avg_pool2d", (16, 8, 8), 2),
    ),
}
BATCHES = (1, 64, 256)
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class Workload:
    """One op of one layer at one batch size in one direction."""

    layer: Layer
    batch: int
    direction: str

    @property
    def op(self) -> str:
        """The op's name in :mod:`fastconv.registry`."""
        return self.layer.kind + ("_backward" if self.direction == "backward" else "")

    @property
    def is_conv(self) -> bool:
        """A conv, fused or not: its work is counted in FLOPs."""
        return self.layer.kind.startswith("conv2d")

    @property
    def is_fused(self) -> bool:
        return self.layer.kind == "conv2d_relu_maxpool2d"

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch,) + self.layer.in_shape

    @property
    def window_out_shape(self) -> tuple[int, int, int, int]:
        """The output of the sliding window (for a fused op, of its conv)."""
        c, h, w = self.layer.in_shape
        kh, kw = self.layer.window[-2:]
        channels = self.layer.window[0] if self.is_conv else c
        s = self.layer.stride
        return (self.batch, channels, conv_out_size(h, kh, s), conv_out_size(w, kw, s))

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.window_out_shape
        p = self.layer.pool
        return (n, c, conv_out_size(h, p, p), conv_out_size(w, p, p)) if self.is_fused else (n, c, h, w)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        """Conv only: (F, C, KH, KW)."""
        f, kh, kw = self.layer.window
        return (f, self.layer.in_shape[0], kh, kw)

    @property
    def label(self) -> str:
        """Names the group of variants compared on this workload."""
        return f"{self.layer.label} N={self.batch} {self.direction}"

    @property
    def slug(self) -> str:
        """:attr:`label` without spaces, for test ids (``-k conv2-N64``)."""
        return f"{self.layer.label}-N{self.batch}-{self.direction}"

    def flops(self) -> int:
        """Conv only: floating-point operations of one call (of the conv
        alone for a fused op: ReLU and pooling add under 1%)."""
        n, f, oh, ow = self.window_out_shape
        _, c, kh, kw = self.w_shape
        forward = 2 * n * f * c * kh * kw * oh * ow
        return forward if self.direction == "forward" else 2 * forward

    def bytes_moved(self) -> int:
        """Pooling only: bytes of every array read or written, each once."""
        x, out = np.prod(self.x_shape), np.prod(self.out_shape)
        if self.direction == "forward":
            elements = x + out
        else:  # dy in, dx out; max-pool also reads x to find the maxima
            elements = out + x + (x if self.layer.kind == "max_pool2d" else 0)
        return int(elements) * DTYPE.itemsize

    def counts(self) -> dict:
        """The work of one call: ``{"flops": ...}`` (conv) or ``{"bytes": ...}`` (pooling)."""
        return {"flops": self.flops()} if self.is_conv else {"bytes": self.bytes_moved()}

    def rate(self, seconds: float) -> tuple[float, str]:
        """Throughput of one call taking ``seconds``: GFLOP/s (conv) or GB/s (pooling)."""
        if self.is_conv:
            return self.flops() / seconds / 1e9, "GFLOP/s"
        return self.bytes_moved() / seconds / 1e9, "GB/s"

    @cached_property
    def arrays(self) -> dict:
        """Seeded float32 inputs: x, dy, and w, b for conv."""
        rng = np.random.default_rng(0)
        arrays = {
            "x": rng.standard_normal(self.x_shape, dtype=DTYPE),
            "dy": rng.standard_normal(self.out_shape, dtype=DTYPE),
        }
        if self.is_conv:
            arrays["w"] = rng.standard_normal(self.w_shape, dtype=DTYPE)
            arrays["b"] = rng.standard_normal(self.w_shape[0], dtype=DTYPE)
        return arrays

    def call(self, backend: str, algorithm: str):
        """A no-argument function running this workload with one variant."""
        a, fn, variant = self.arrays, getattr(ops, self.op), {"backend": backend, "algorithm": algorithm}
        s = self.layer.stride
        if self.is_fused:
            pool = {"pool_size": self.layer.pool}
            if self.direction == "forward":
                return lambda: fn(a["x"], a["w"], a["b"], s, **pool, **variant)
            _, code = ops.conv2d_relu_maxpool2d(a["x"], a["w"], a["b"], s, **pool, **variant)
            return lambda: fn(a["dy"], code, a["x"], a["w"], s, **pool, **variant)
        if self.op == "conv2d":
            return lambda: fn(a["x"], a["w"], a["b"], s, **variant)
        if self.op == "conv2d_backward":
            return lambda: fn(a["dy"], a["x"], a["w"], s, **variant)
        window = self.layer.window
        if self.direction == "forward":
            return lambda: fn(a["x"], window, s, **variant)
        return lambda: fn(a["dy"], a["x"], window, s, **variant)

    def unfused_call(self):
        """Fused ops only: the same work as three ops (conv2d, ReLU,
        max_pool2d and their backward passes), each with ``auto``."""
        a, s, p = self.arrays, self.layer.stride, self.layer.pool
        if self.direction == "forward":
            return lambda: ops.max_pool2d(np.maximum(ops.conv2d(a["x"], a["w"], a["b"], s), 0), p)
        relu = np.maximum(ops.conv2d(a["x"], a["w"], a["b"], s), 0)

        def backward():
            drelu = ops.max_pool2d_backward(a["dy"], relu, p)
            drelu *= relu > 0
            return ops.conv2d_backward(drelu, a["x"], a["w"], s)

        return backward

    def gemm_call(self):
        """Conv only: the NumPy float32 GEMMs of the im2col-equivalent size,
        the practical limit of a conv variant.

        Forward: (F, K) @ (K, P) with K = C*KH*KW, P = N*OH*OW. Backward: the
        weight gradient (F, P) @ (P, K) and the column gradient (K, F) @ (F, P).
        Same FLOP count as :meth:`flops`.
        """
        n, f, oh, ow = self.window_out_shape
        k, p = int(np.prod(self.w_shape[1:])), n * oh * ow
        rng = np.random.default_rng(0)
        weights = rng.standard_normal((f, k), dtype=DTYPE)
        cols = rng.standard_normal((k, p), dtype=DTYPE)
        # Backward reads out as dy: it must hold numbers (garbage from
        # np.empty overflowed to inf and NaN, on which BLAS ran 40x slower).
        out = rng.standard_normal((f, p), dtype=DTYPE)
        if self.direction == "forward":
            return lambda: np.matmul(weights, cols, out=out)
        dweights, dcols = np.empty((f, k), DTYPE), np.empty((k, p), DTYPE)

        def backward():
            np.matmul(out, cols.T, out=dweights)
            np.matmul(weights.T, out, out=dcols)

        return backward


def workloads(networks=tuple(NETWORKS), batches=BATCHES, op_names=None, directions=DIRECTIONS):
    """Every workload of the given networks and batch sizes, layer by layer;
    ``op_names`` (as in :data:`fastconv.registry.OPS`) keeps only those ops."""
    found = []
    for network in networks:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose from {tuple(NETWORKS)}")
        for layer in NETWORKS[network]:
            for batch in batches:
                for direction in directions:
                    work = Workload(layer, batch, direction)
                    if op_names is None or work.op in op_names:
                        found.append(work)
    return found
