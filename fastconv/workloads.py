"""What the benchmarks measure: the layer shapes of the reference networks,
the work each op does on them, and ready-to-time calls.

The shapes are read from the models of :mod:`fastconv.models` (each conv
and pool layer's input, window, stride and padding, each batch norm layer's
input, and the conv -> ReLU -> max-pool blocks the model's fusion plan runs
as one op), so a benchmark times what training and inference run.

Shared by the pytest-benchmark suite (``bench/``) and the ``fastconv-bench``
report, so both time the same calls and count work the same way:

- conv: :func:`fastconv.shapes.conv_flops` forward (a multiply and an add
  per weight per output pixel), twice that backward (dx and dw each cost one
  forward's worth);
- pooling and batch norm: bytes of the arrays the op must touch, each once
  (forward reads x and writes out; backward reads dy, and x too for max-pool
  and batch norm, and writes dx).

Every call goes through :mod:`fastconv.ops` with an explicit backend and
algorithm, as a layer makes it (validation and output allocation included).
"""
from __future__ import annotations

import math
import statistics
import time
import timeit
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fastconv import models, op_table, ops, registry
from fastconv.fusion import ConvReluMaxPoolStep
from fastconv.layers import AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, MaxPool2D
from fastconv.shapes import conv_flops, conv_out_size

DTYPE = np.dtype(np.float32)
MIN_SAMPLE_SECONDS = 2e-3


def _calls_per_sample(timer) -> int:
    """After one warm-up call of the timer's function (JIT compilation,
    first touch), how many calls make a sample of a few milliseconds."""
    timer.timeit(1)
    once = timer.timeit(1)
    return max(1, math.ceil(MIN_SAMPLE_SECONDS / max(once, 1e-9)))


def median_seconds(fn, repeat: int) -> float:
    """Median seconds of one ``fn()`` over ``repeat`` samples, as ``timeit``
    times: one warm-up call (JIT compilation, first touch), then samples of
    enough calls to last a few milliseconds each."""
    timer = timeit.Timer(fn)
    number = _calls_per_sample(timer)
    return statistics.median(t / number for t in timer.repeat(repeat, number))


SETTLE_SECONDS = 0.1


def interleaved_median_seconds(fns, repeat: int, settle: float = SETTLE_SECONDS) -> list[float]:
    """Median seconds of one call of each of ``fns`` (a list), in order,
    over ``repeat`` rounds: each function warmed up and its sample size set
    as :func:`median_seconds` does, then every round takes one sample of
    each in turn, starting one further along the list each round.

    Timed one after the other, each over its own stretch of seconds, the
    functions met a virtual machine at different speeds: the MNIST CNN's
    pass at batch 1 took 70 us for seconds, then 105-120 us for the rest
    of the run (AMD EPYC Zen 4, 2 threads, the same process and call).
    Interleaved, a change of speed falls on every function's samples
    alike, so the ratios of the medians compare them under the same
    conditions. Two things keep one function's turn from slowing the
    next's (same machine, the MNIST CNN at batch 256):

    - ``settle`` seconds of sleep before each sample, for the threads of
      the function before to stop spinning: onnxruntime's spin on for
      10-50 ms after a run, and fastconv's pass took 16-22 ms in that time
      against 7 ms after 50 ms or more;
    - as many calls again, untimed, just before the sample, which wake the
      function's threads and bring its data back into the caches: after
      0.3 s idle the batch-1 pass's first calls took 0.5-0.7 ms."""
    timers = [timeit.Timer(fn) for fn in fns]
    numbers = [_calls_per_sample(timer) for timer in timers]
    samples = [[] for _ in fns]
    for round_ in range(repeat):
        for step in range(len(fns)):
            i = (round_ + step) % len(fns)
            time.sleep(settle)
            timers[i].timeit(numbers[i])
            samples[i].append(timers[i].timeit(numbers[i]) / numbers[i])
    return [statistics.median(s) for s in samples]


def plain_number(value) -> str:
    """A timing or a rate with three significant digits or so, without exponents."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


@dataclass(frozen=True)
class Layer:
    """One conv, pool, batch norm or fused conv block of a benchmark network.

    kind: the op's name in :mod:`fastconv.op_table`: conv2d, max_pool2d,
    avg_pool2d, batch_norm, or conv2d_relu_maxpool2d (a conv layer, its
    ReLU and its max-pool as one fused op); in_shape: (C, H, W) of one image
    ((F,) for the batch norm of features); window: (F, KH, KW) for a conv,
    fused or not, (KH, KW) for a pool, () for batch norm; stride and
    padding (zeros on each side): (vertical, horizontal); pool and
    pool_stride: the fused op's max-pool window and stride (None otherwise).
    """

    network: str
    name: str
    kind: str
    in_shape: tuple[int, int, int]
    window: tuple[int, ...]
    stride: tuple[int, int]
    padding: tuple[int, int]
    pool: tuple[int, int] | None = None
    pool_stride: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return f"{self.network}.{self.name}"

    @property
    def geometry(self) -> dict:
        """The op's keyword arguments other than arrays and variant."""
        geometry = {"stride": self.stride, "padding": self.padding}
        if self.pool is not None:
            geometry.update(pool_size=self.pool, pool_stride=self.pool_stride)
        return geometry


_TIMED = {Conv2D: (op_table.CONV2D, "conv"), MaxPool2D: (op_table.MAX_POOL2D, "pool"),
          AvgPool2D: (op_table.AVG_POOL2D, "pool"), BatchNorm2D: (op_table.BATCH_NORM, "norm"),
          BatchNorm: (op_table.BATCH_NORM, "norm")}
"""The model layers a benchmark times alone: the op each runs and the stem
of its name (conv1, pool1, norm1, conv2, ...)."""


def _geometry(layer) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int]]:
    """A timed layer's (window, stride, padding); batch norm has no window."""
    if isinstance(layer, (BatchNorm2D, BatchNorm)):
        return (), (1, 1), (0, 0)
    window = (layer.out_channels, *layer.kernel_size) if isinstance(layer, Conv2D) else layer.kernel_size
    return window, layer.stride, layer.padding


def _networks(model_name: str) -> dict[str, tuple[Layer, ...]]:
    """The benchmark networks of one model of :mod:`fastconv.models`:
    ``model_name``, its conv, pool and batch norm layers as separate ops, and, when its
    fusion plan fuses conv -> ReLU -> max-pool blocks, ``<model_name>-fused``
    with those blocks (block1, block2, ...)."""
    # Built with the NumPy reference kernels, which have the fused op whatever
    # FASTCONV_BACKEND and FASTCONV_ALGORITHM say: the plan fuses every block.
    model = models.build(model_name, backend="numpy", algorithm="reference")
    in_shapes = [model.input_shape, *model.output_shapes]  # in_shapes[i]: what model.layers[i] takes
    separate, counts = [], Counter()
    for layer, in_shape in zip(model.layers, in_shapes):
        if type(layer) in _TIMED:
            op, stem = _TIMED[type(layer)]
            counts[stem] += 1
            separate.append(Layer(model_name, f"{stem}{counts[stem]}", op.name, in_shape, *_geometry(layer)))
    fused_name, fused, first = f"{model_name}-fused", [], 0
    for step in model.steps:
        if isinstance(step, ConvReluMaxPoolStep):
            conv, _, pool = step.layers
            fused.append(Layer(fused_name, f"block{len(fused) + 1}", op_table.FUSED.name, in_shapes[first],
                               *_geometry(conv), pool.kernel_size, pool.stride))
        first += len(step.layers)
    return {model_name: tuple(separate), **({fused_name: tuple(fused)} if fused else {})}


BENCHMARKED_MODELS = ("cnn", "lenet5", "cnn-deep")
"""The models whose layers the benchmarks time."""

NETWORKS = {name: layers for model in BENCHMARKED_MODELS for name, layers in _networks(model).items()}
"""Benchmark networks by name: per model of :data:`BENCHMARKED_MODELS` its
conv, pool and batch norm layers (``cnn``: conv1, pool1, conv2, pool2) and, if it fuses
any, its fused blocks as the model runs them (``cnn-fused``: block1, block2)."""
BATCHES = (1, 64, 256)
DIRECTIONS = ("forward", "backward")

INFERENCE_MODELS = ("cnn", "cnn-deep")
"""The models whose whole evaluation forward pass the benchmark suite
times, in fastconv, PyTorch and onnxruntime (groups ``<model> inference
N=<batch>``, at each of :data:`BATCHES`)."""


@dataclass(frozen=True)
class Workload:
    """One op of one layer at one batch size in one direction."""

    layer: Layer
    batch: int
    direction: str

    @property
    def op(self) -> str:
        """The op's name in :mod:`fastconv.op_table` (and the registry)."""
        declared = op_table.op(self.layer.kind)
        return declared.backward if self.direction == "backward" else declared.name

    @property
    def is_conv(self) -> bool:
        """A conv, fused or not: its work is counted in FLOPs."""
        return self.layer.kind in (op_table.CONV2D.name, op_table.FUSED.name)

    @property
    def is_fused(self) -> bool:
        return self.layer.kind == op_table.FUSED.name

    @property
    def is_norm(self) -> bool:
        return self.layer.kind == op_table.BATCH_NORM.name

    def variants(self, backend: str = "auto") -> list[tuple[str, str]]:
        """The registry's variants of this op (``backend``'s only, unless
        ``"auto"``) that can compute this layer: a conv leaves out the
        algorithms its kernel and stride rule out (Winograd for a 5x5)."""
        found = registry.variants(self.op, backend=backend)
        if self.is_conv:
            ruled_out = ops.inapplicable_algorithms(self.layer.window[-2:], self.layer.stride)
            found = [v for v in found if v[1] not in ruled_out]
        return found

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch,) + self.layer.in_shape

    @property
    def window_out_shape(self) -> tuple[int, int, int, int]:
        """The output of the sliding window (for a fused op, of its conv)."""
        c, h, w = self.layer.in_shape
        channels = self.layer.window[0] if self.is_conv else c
        return (self.batch, channels, *map(conv_out_size, (h, w), self.layer.window[-2:], self.layer.stride,
                                           self.layer.padding))

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        if self.is_norm:
            return self.x_shape
        n, c, h, w = self.window_out_shape
        if not self.is_fused:
            return (n, c, h, w)
        return (n, c, *map(conv_out_size, (h, w), self.layer.pool, self.layer.pool_stride))

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
        forward = conv_flops(n, f, c, kh, kw, oh, ow)
        return forward if self.direction == "forward" else 2 * forward

    def bytes_moved(self) -> int:
        """Pooling and batch norm only: bytes of every array read or written, each once."""
        x, out = np.prod(self.x_shape), np.prod(self.out_shape)
        if self.direction == "forward":
            elements = x + out
        else:  # dy in, dx out; max-pool also reads x to find the maxima, batch norm to normalise it
            reads_x = self.layer.kind in (op_table.MAX_POOL2D.name, op_table.BATCH_NORM.name)
            elements = out + x + (x if reads_x else 0)
        return int(elements) * DTYPE.itemsize

    def counts(self) -> dict:
        """The work of one call: ``{"flops": ...}`` (conv) or ``{"bytes": ...}`` (pooling, batch norm)."""
        return {"flops": self.flops()} if self.is_conv else {"bytes": self.bytes_moved()}

    def rate(self, seconds: float) -> tuple[float, str]:
        """Throughput of one call taking ``seconds``: GFLOP/s (conv) or GB/s (pooling, batch norm)."""
        if self.is_conv:
            return self.flops() / seconds / 1e9, "GFLOP/s"
        return self.bytes_moved() / seconds / 1e9, "GB/s"

    @cached_property
    def arrays(self) -> dict:
        """Seeded float32 inputs: x, dy, and w, b for conv; gamma, beta and the
        batch's mean and var (what backward reads) for batch norm."""
        rng = np.random.default_rng(0)
        arrays = {
            "x": rng.standard_normal(self.x_shape, dtype=DTYPE),
            "dy": rng.standard_normal(self.out_shape, dtype=DTYPE),
        }
        if self.is_conv:
            arrays["w"] = rng.standard_normal(self.w_shape, dtype=DTYPE)
            arrays["b"] = rng.standard_normal(self.w_shape[0], dtype=DTYPE)
        if self.is_norm:
            channels = self.x_shape[1]
            arrays["gamma"] = rng.uniform(0.5, 2.0, channels).astype(DTYPE)
            arrays["beta"] = rng.standard_normal(channels, dtype=DTYPE)
            _, arrays["mean"], arrays["var"] = ops.batch_norm(arrays["x"], arrays["gamma"], arrays["beta"],
                                                              backend="numpy", algorithm="reference")
        return arrays

    def call(self, backend: str, algorithm: str):
        """A no-argument function running this workload with one variant."""
        a, fn = self.arrays, getattr(ops, self.op)
        kwargs = {**self.layer.geometry, "backend": backend, "algorithm": algorithm}
        forward = self.direction == "forward"
        if self.is_norm:  # no geometry: each channel normalised over the batch, in training
            variant = {"backend": backend, "algorithm": algorithm}
            if forward:
                return lambda: fn(a["x"], a["gamma"], a["beta"], **variant)
            return lambda: fn(a["dy"], a["x"], a["gamma"], a["mean"], a["var"], **variant)
        if self.is_conv:
            if forward:
                return lambda: fn(a["x"], a["w"], a["b"], **kwargs)
            if self.is_fused:  # its backward reads the code a forward pass wrote
                # by the same variant, or by the reference where it has no forward (a user variant)
                forward = (backend, algorithm) if (backend, algorithm) in ops.variants(self.layer.kind) else \
                    ("numpy", "reference")
                _, code = ops.conv2d_relu_maxpool2d(a["x"], a["w"], a["b"], **{
                    **kwargs, "backend": forward[0], "algorithm": forward[1]})
                return lambda: fn(a["dy"], code, a["x"], a["w"], **kwargs)
            return lambda: fn(a["dy"], a["x"], a["w"], **kwargs)
        window = self.layer.window
        if forward:
            return lambda: fn(a["x"], window, **kwargs)
        return lambda: fn(a["dy"], a["x"], window, **kwargs)

    def unfused_call(self):
        """Fused ops only: the same work as three ops (conv2d, ReLU,
        max_pool2d and their backward passes), each with ``auto``."""
        a, layer = self.arrays, self.layer
        conv = {"stride": layer.stride, "padding": layer.padding}
        if self.direction == "forward":
            return lambda: ops.max_pool2d(np.maximum(ops.conv2d(a["x"], a["w"], a["b"], **conv), 0), layer.pool,
                                          layer.pool_stride)
        relu = np.maximum(ops.conv2d(a["x"], a["w"], a["b"], **conv), 0)

        def backward():
            drelu = ops.max_pool2d_backward(a["dy"], relu, layer.pool, layer.pool_stride)
            drelu *= relu > 0
            return ops.conv2d_backward(drelu, a["x"], a["w"], **conv)

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
