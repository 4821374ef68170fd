"""Network layers: one contract for all, so :class:`fastconv.model.Sequential`
can chain them without knowing what they are.

Every layer has

* ``forward(x, training) -> y``: x is a batch (N, ...). In training the
  layer keeps what its backward pass needs (its input, a mask) until the
  next forward call; in evaluation (``training`` false) it keeps nothing,
  so an evaluation pass pins no activations and threads may run one model
  at once (only training changes a layer).
* ``backward(dy) -> dx``: after a training forward; dy is the gradient of
  the loss with respect to y;
  fills ``grads`` and returns the gradient with respect to x, or ``None``
  when ``needs_input_grad`` is false (the model sets it for the layers below
  which nothing is trained, so their input gradient is never computed).
* ``params`` and ``grads``: dicts of arrays with the same keys (empty for
  layers without parameters); optimisers update ``params`` in place.
* ``buffers``: arrays the layer keeps but nothing trains (batch norm's
  running statistics); saved and restored with the parameters.
* ``output_shape(input_shape)``: the per-sample output shape (no batch axis)
  for a per-sample input shape; ValueError naming the layer if it cannot take
  that input.
* ``config()``: the constructor arguments, JSON-serialisable, so that
  ``type(layer)(**layer.config())`` rebuilds it (weights aside).
* ``initialize(rng, dtype)``: allocates and initialises the parameters from
  the given ``numpy.random.Generator`` (never global random state).
* ``window``: the sliding window as ``(kernel, stride, padding)``, each an
  (H, W) pair, for receptive-field arithmetic; elementwise layers report the
  identity window ``((1, 1), (1, 1), (0, 0))`` and layers that end the image
  geometry (Flatten, Dense) report None.

Images are NCHW: (N, C, H, W). Convolution and pooling run through
:mod:`fastconv.ops` with the layer's ``backend`` and ``algorithm``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastconv import op_table, ops, products
from fastconv.changes import Watched
from fastconv.integers import positive_int
from fastconv.shapes import as_pair, conv_out_size


IDENTITY_WINDOW = ((1, 1), (1, 1), (0, 0))
"""The ``window`` of a layer that maps each pixel to itself (ReLU, Dropout)."""


class Layer(Watched):
    """Base of every layer; see the module docstring for the contract.
    Assigning a public attribute is noted as a change (:mod:`fastconv.changes`)."""

    kind = "layer"  # default name stem; the model makes names unique

    def __init__(self, name: str | None = None):
        self.name = name or self.kind
        self.has_explicit_name = name is not None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.needs_input_grad = True

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})  # {self.name}"

    def _label(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    def initialize(self, rng: np.random.Generator, dtype=np.float32) -> None:
        """Create the parameters (layers without any have nothing to do)."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters, known before :meth:`initialize`."""
        return {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the non-trainable arrays in :attr:`buffers`."""
        return {}

    def param_count(self) -> int:
        """Trainable values (the optimiser updates them)."""
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    def buffer_count(self) -> int:
        """Non-trainable values (kept and saved, never optimised)."""
        return sum(math.prod(shape) for shape in self.buffer_shapes().values())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    @property
    def window(self):
        return IDENTITY_WINDOW  # elementwise, like the default output_shape

    def config(self) -> dict:
        return {"name": self.name} if self.has_explicit_name else {}

    def _require_params(self):
        if not self.params:
            raise RuntimeError(
                f"{self._label()}: parameters not initialised; call initialize(rng) "
                "(Sequential does this when it is built)"
            )

    def _cached(self, value):
        """What the last forward kept for backward; RuntimeError if it kept
        nothing (no forward yet, or one in evaluation mode)."""
        if value is None:
            raise RuntimeError(f"{self._label()}: backward called before forward with training=True "
                               "(evaluation keeps nothing for backward)")
        return value


def _check_shape(layer: Layer, shape: tuple, expected: tuple, layout: str, what="input"):
    """ValueError naming the layer unless ``shape`` matches ``expected``
    (``None`` entries match any size)."""
    ok = len(shape) == len(expected) and all(
        want is None or got == want for got, want in zip(shape, expected)
    )
    if not ok:
        raise ValueError(f"{layer._label()}: expected {what} {layout}, got {tuple(shape)}")


def _window_output(layer: Layer, input_shape, channels, kernel, stride, padding):
    """(channels, OH, OW) of a conv or pool window sliding over (C, H, W)."""
    try:
        oh, ow = (
            conv_out_size(size, k, s, p)
            for size, k, s, p in zip(input_shape[1:], kernel, stride, padding)
        )
    except ValueError as exc:
        raise ValueError(f"{layer._label()}: input {tuple(input_shape)}: {exc}") from None
    return (channels, oh, ow)


class _WindowLayer(Layer):
    """A layer that slides a KHxKW window over images through :mod:`fastconv.ops`,
    with the ``backend``/``algorithm`` pair it passes on."""

    def __init__(self, kernel_size, stride, padding, backend, algorithm, name):
        super().__init__(name)
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.backend, self.algorithm = backend, algorithm
        self._x = None  # the input, for backward

    @property
    def window(self):
        return self.kernel_size, self.stride, self.padding

    def config(self):
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "backend": self.backend,
            "algorithm": self.algorithm,
            **super().config(),
        }


class Conv2D(_WindowLayer):
    """2-D cross-correlation with a bank of filters plus a bias.

    x (N, C, H, W) -> y (N, F, OH, OW), OH = (H + 2*padding - KH) // stride + 1.
    ``padding="same"`` pads (KH - 1) / 2 rows and (KW - 1) / 2 columns on
    each side, so OH = H and OW = W: stride 1 and odd kernel sizes only (an
    even kernel would need more zeros on one side than the other).
    Parameters: ``w`` (F, C, KH, KW), He-normal (std sqrt(2 / (C*KH*KW)), as
    PyTorch's ``kaiming_normal_`` for ReLU networks); ``b`` (F,), zeros.
    """

    kind = "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 backend="auto", algorithm="auto", name=None):
        self.same_padding = isinstance(padding, str)
        if self.same_padding:
            padding = _same_padding(kernel_size, stride, padding)
        super().__init__(kernel_size, stride, padding, backend, algorithm, name)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")

    def param_shapes(self):
        return {
            "w": (self.out_channels, self.in_channels) + self.kernel_size,
            "b": (self.out_channels,),
        }

    def initialize(self, rng, dtype=np.float32):
        shapes = self.param_shapes()
        fan_in = self.in_channels * math.prod(self.kernel_size)
        w = rng.standard_normal(shapes["w"], dtype=np.float64) * math.sqrt(2.0 / fan_in)
        self.params = {"w": w.astype(dtype), "b": np.zeros(shapes["b"], dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def output_shape(self, input_shape):
        _check_shape(self, input_shape, (self.in_channels, None, None), f"({self.in_channels}, H, W)",
                     "per-sample input")
        return _window_output(self, input_shape, self.out_channels, self.kernel_size, self.stride, self.padding)

    def forward(self, x, training):
        self._require_params()
        _check_shape(self, x.shape, (None, self.in_channels, None, None), f"(N, {self.in_channels}, H, W)")
        self._x = x if training else None
        return ops.conv2d(x, self.params["w"], self.params["b"], self.stride, self.padding,
                          backend=self.backend, algorithm=self.algorithm)

    def backward(self, dy):
        dx, self.grads["w"], self.grads["b"] = ops.conv2d_backward(
            dy, self._cached(self._x), self.params["w"], self.stride, self.padding,
            compute_dx=self.needs_input_grad, backend=self.backend, algorithm=self.algorithm,
        )
        return dx

    def config(self):
        config = {"in_channels": self.in_channels, "out_channels": self.out_channels, **super().config()}
        if self.same_padding:
            config["padding"] = "same"
        return config


def _same_padding(kernel_size, stride, padding) -> tuple[int, int]:
    """The (H, W) zeros per side that keep a stride-1 conv's output size."""
    if padding != "same":
        raise ValueError(f"Conv2D: padding must be an int, a pair of ints or \"same\", got {padding!r}")
    kernel = as_pair(kernel_size, "kernel_size", 1)
    if as_pair(stride, "stride", 1) != (1, 1):
        raise ValueError(f"Conv2D: padding=\"same\" needs stride 1, got stride {stride!r}")
    if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
        raise ValueError(f"Conv2D: padding=\"same\" needs odd kernel sizes (equal zeros on both sides), "
                         f"got kernel_size {kernel_size!r}")
    return (kernel[0] - 1) // 2, (kernel[1] - 1) // 2


class _Pool2D(_WindowLayer):
    """Shared body of the pooling layers: x (N, C, H, W) -> (N, C, OH, OW),
    each channel pooled alone over KHxKW windows (stride defaults to the
    kernel size)."""

    _forward_op = _backward_op = None  # set by each subclass

    def __init__(self, kernel_size, stride=None, padding=0, *, backend="auto", algorithm="auto", name=None):
        super().__init__(kernel_size, kernel_size if stride is None else stride, padding,
                         backend, algorithm, name)

    def output_shape(self, input_shape):
        _check_shape(self, input_shape, (None, None, None), "(C, H, W)", "per-sample input")
        return _window_output(self, input_shape, input_shape[0], self.kernel_size, self.stride, self.padding)

    def forward(self, x, training):
        _check_shape(self, x.shape, (None, None, None, None), "(N, C, H, W)")
        self._x = x if training else None
        return self._forward_op(x, self.kernel_size, self.stride, self.padding,
                                backend=self.backend, algorithm=self.algorithm)

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        return self._backward_op(dy, self._cached(self._x), self.kernel_size, self.stride,
                                 self.padding, backend=self.backend, algorithm=self.algorithm)


class MaxPool2D(_Pool2D):
    """Maximum of each window; padding counts as -inf (at most half the kernel)."""

    kind = "max_pool2d"
    _forward_op = staticmethod(ops.max_pool2d)
    _backward_op = staticmethod(ops.max_pool2d_backward)


class AvgPool2D(_Pool2D):
    """Mean of each window; padded zeros count (PyTorch's default)."""

    kind = "avg_pool2d"
    _forward_op = staticmethod(ops.avg_pool2d)
    _backward_op = staticmethod(ops.avg_pool2d_backward)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), C-order (a view when x is contiguous)."""

    kind = "flatten"

    def __init__(self, *, name=None):
        super().__init__(name)
        self._x_shape = None

    window = None  # the pixels' positions end here

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training):
        if x.ndim < 2:
            raise ValueError(f"{self._label()}: expected input (N, ...), got {x.shape}")
        self._x_shape = x.shape if training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        shape = self._cached(self._x_shape)
        return dy.reshape(shape) if self.needs_input_grad else None


class Dense(Layer):
    """Fully connected: x (N, in_features) -> y = x @ w + b (N, out_features).

    Parameters: ``w`` (in_features, out_features), Glorot-uniform (limit
    sqrt(6 / (in + out))); ``b`` (out_features,), zeros.
    """

    kind = "dense"
    window = None  # every output sees every input: no image geometry

    def __init__(self, in_features, out_features, *, name=None):
        super().__init__(name)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self._x = None

    def param_shapes(self):
        return {"w": (self.in_features, self.out_features), "b": (self.out_features,)}

    def initialize(self, rng, dtype=np.float32):
        shapes = self.param_shapes()
        limit = math.sqrt(6.0 / (self.in_features + self.out_features))
        w = rng.uniform(-limit, limit, shapes["w"])
        self.params = {"w": w.astype(dtype), "b": np.zeros(shapes["b"], dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def output_shape(self, input_shape):
        _check_shape(self, input_shape, (self.in_features,), f"({self.in_features},)", "per-sample input")
        return (self.out_features,)

    def forward(self, x, training):
        self._require_params()
        _check_shape(self, x.shape, (None, self.in_features), f"(N, {self.in_features})")
        self._x = x if training else None
        y = products.matmul(x, self.params["w"])
        y += self.params["b"]
        return y

    def backward(self, dy):
        x = self._cached(self._x)
        self.grads["w"] = products.matmul(x.T, dy)
        self.grads["b"] = dy.sum(axis=0)
        return products.matmul(dy, self.params["w"].T) if self.needs_input_grad else None

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, **super().config()}


class ReLU(Layer):
    """y = max(x, 0), elementwise; any shape."""

    kind = "relu"

    def __init__(self, *, name=None):
        super().__init__(name)
        self._y = None

    def forward(self, x, training):
        y = ops.relu(x)
        self._y = y if training else None
        return y

    def backward(self, dy):
        y = self._cached(self._y)
        return ops.relu_backward(dy, y) if self.needs_input_grad else None


class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability
    ``p`` and the survivors scaled by 1 / (1 - p), so evaluation (``training``
    false) is the identity. Masks come from the generator given to
    :meth:`initialize` (the model's), so runs with one seed repeat exactly."""

    kind = "dropout"

    def __init__(self, p=0.5, *, name=None):
        super().__init__(name)
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self._rng = None
        self._scaled_mask = None  # of the last training forward; a scalar 1 when p is 0

    def initialize(self, rng, dtype=np.float32):
        self._rng = rng

    def forward(self, x, training):
        if not training:
            self._scaled_mask = None
            return x
        if self.p == 0:
            self._scaled_mask = x.dtype.type(1)
            return x
        if self._rng is None:
            raise RuntimeError(f"{self._label()}: no random generator; call initialize(rng)")
        # Generator.random draws float32 or float64 only; the mask takes x's dtype.
        dtype = np.float32 if x.dtype == np.float32 else np.float64
        keep = self._rng.random(x.shape, dtype=dtype) >= self.p
        self._scaled_mask = keep * dtype(1.0 / (1.0 - self.p))
        return x * self._scaled_mask

    def backward(self, dy):
        mask = self._cached(self._scaled_mask)
        return dy * mask if self.needs_input_grad else None

    def config(self):
        return {"p": self.p, **super().config()}


class _BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy), as PyTorch's ``BatchNorm1d``
    and ``BatchNorm2d``: each channel c is normalised over every other axis
    of the batch, then scaled and shifted,

        y = gamma[c] * (x - mean[c]) / sqrt(var[c] + eps) + beta[c].

    In training, ``mean`` and ``var`` are the batch's (the variance biased,
    divided by the M values of the channel) and the running statistics move
    towards them: ``running = (1 - momentum) * running + momentum * batch``,
    with the unbiased variance (times M / (M - 1)). In evaluation the
    running statistics are used instead, so the output of one image does not
    depend on the rest of its batch.

    Parameters (trainable): ``gamma`` (C,), ones; ``beta`` (C,), zeros.
    Buffers (not trained): ``running_mean`` (C,), zeros; ``running_var``
    (C,), ones. Forward and backward run through
    :func:`fastconv.ops.batch_norm` and :func:`fastconv.ops.batch_norm_backward`
    with the layer's ``backend`` and ``algorithm``; an algorithm that batch
    norm does not have (im2col, gemm, winograd: what a model-wide
    ``--algorithm`` asks of the convolutions) leaves it at ``"auto"``.
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, *, backend="auto", algorithm="auto", name=None):
        super().__init__(name)
        self.num_features = positive_int(num_features, "num_features")
        for what, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{type(self).__name__}: {what} must be a number, got {value!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1], got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.backend, self.algorithm = backend, algorithm
        self._x = self._mean = self._var = None  # for backward, from a training forward

    def param_shapes(self):
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    def buffer_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def initialize(self, rng, dtype=np.float32):
        c = self.num_features
        self.params = {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(c, dtype), "running_var": np.ones(c, dtype)}

    def _kernels(self) -> dict:
        """The backend and algorithm for ops (see the class docstring)."""
        conv_only = tuple(a for a in op_table.ALGORITHMS if a not in op_table.BATCH_NORM.algorithms)
        return {"backend": self.backend, "algorithm": "auto" if self.algorithm in conv_only else self.algorithm}

    def forward(self, x, training):
        self._require_params()
        self._check_input(x.shape)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            self._x = self._mean = self._var = None
            return ops.batch_norm(x, gamma, beta, self.buffers["running_mean"], self.buffers["running_var"],
                                  self.eps, training=False, **self._kernels())
        values = x.shape[0] * math.prod(x.shape[2:])  # per channel
        if values < 2:
            raise ValueError(
                f"{self._label()}: training needs more than one value per channel to estimate a "
                f"variance, got input {tuple(x.shape)} (use a batch of 2 or more, or evaluation mode)")
        y, mean, var = ops.batch_norm(x, gamma, beta, eps=self.eps, **self._kernels())
        keep = mean.dtype.type(1 - self.momentum)
        self.buffers["running_mean"] *= keep
        self.buffers["running_mean"] += mean.dtype.type(self.momentum) * mean
        self.buffers["running_var"] *= keep
        self.buffers["running_var"] += mean.dtype.type(self.momentum * values / (values - 1)) * var
        self._x, self._mean, self._var = x, mean, var
        return y

    def backward(self, dy):
        x = self._cached(self._x)
        dx, self.grads["gamma"], self.grads["beta"] = ops.batch_norm_backward(
            dy, x, self.params["gamma"], self._mean, self._var, self.eps,
            compute_dx=self.needs_input_grad, **self._kernels())
        return dx

    def config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps,
                "backend": self.backend, "algorithm": self.algorithm, **super().config()}


class BatchNorm2D(_BatchNorm):
    """Batch norm of images: x (N, C, H, W) -> y of the same shape, each
    channel normalised over N, H and W (see :class:`_BatchNorm`)."""

    kind = "batch_norm2d"

    def output_shape(self, input_shape):
        _check_shape(self, input_shape, (self.num_features, None, None), f"({self.num_features}, H, W)",
                     "per-sample input")
        return tuple(input_shape)

    def _check_input(self, shape):
        _check_shape(self, shape, (None, self.num_features, None, None), f"(N, {self.num_features}, H, W)")


class BatchNorm(_BatchNorm):
    """Batch norm of features: x (N, F) -> y (N, F), each feature normalised
    over the batch (see :class:`_BatchNorm`)."""

    kind = "batch_norm"
    window = None  # after Flatten: no image geometry

    def output_shape(self, input_shape):
        _check_shape(self, input_shape, (self.num_features,), f"({self.num_features},)", "per-sample input")
        return tuple(input_shape)

    def _check_input(self, shape):
        _check_shape(self, shape, (None, self.num_features), f"(N, {self.num_features})")


def name_layers(layers) -> None:
    """Give each layer without an explicit name a unique Keras-style one
    (``conv2d``, ``conv2d_1``, ...), in place; ValueError if two layers end
    up with one name. Parameters are addressed as ``"<layer name>/<param>"``."""
    counts = {}
    for layer in layers:
        if not layer.has_explicit_name:
            seen = counts.get(layer.kind, 0)
            layer.name = layer.kind if seen == 0 else f"{layer.kind}_{seen}"
            counts[layer.kind] = seen + 1
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Sequential: layer names must be unique, repeated: {duplicates}")


LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AvgPool2D, Flatten, Dense, ReLU, Dropout,
                                        BatchNorm2D, BatchNorm)}
"""Layer classes by name, for rebuilding a model from its saved configs."""
