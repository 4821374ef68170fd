"""The steps that run a model: its layers one by one, except where
Conv2D -> ReLU -> MaxPool2D can run as one fused op.

A pass over the layer list, kept apart from the layers (as onnxruntime
rewrites a graph, or ``torch.ao.quantization.fuse_modules`` fuses a list of
modules): the layers stay the objects that summary, explain and viz show;
only the kernels called change. The fused step writes the pooled map and a
one-byte code per pooled pixel instead of the conv output, the ReLU output
and the pool input (see :func:`fastconv.ops.conv2d_relu_maxpool2d`).
"""
from __future__ import annotations

from fastconv import autotune, ops, registry
from fastconv.changes import Watched
from fastconv.layers import Conv2D, MaxPool2D, ReLU

FUSED_OP = "conv2d_relu_maxpool2d"


class LayerStep(Watched):
    """One layer run alone."""

    def __init__(self, layer):
        self.layers = (layer,)
        self.name = layer.name

    def forward(self, x, training):
        return self.layers[0].forward(x, training)

    def backward(self, dy):
        return self.layers[0].backward(dy)


class ConvReluMaxPoolStep(Watched):
    """Conv2D -> ReLU -> MaxPool2D as one op: x (N, C, H, W) -> (N, F, PH, PW).
    Fills the conv layer's ``grads``, as the unfused chain does."""

    def __init__(self, conv: Conv2D, relu: ReLU, pool: MaxPool2D):
        self.layers = (conv, relu, pool)
        self.name = f"{conv.name}+{relu.name}+{pool.name}"
        self._x = self._code = None  # for backward, from a training forward

    def op_arguments(self) -> dict:
        """The keyword arguments of the fused op, after x, w and b: the
        conv's and the pool's geometry and the kernels the layers ask for."""
        conv, _, pool = self.layers
        return dict(stride=conv.stride, padding=conv.padding, pool_size=pool.kernel_size,
                    pool_stride=pool.stride, backend=conv.backend, algorithm=conv.algorithm)

    def forward(self, x, training):
        conv = self.layers[0]
        conv._require_params()
        y, code = ops.conv2d_relu_maxpool2d(x, conv.params["w"], conv.params["b"], **self.op_arguments())
        self._x, self._code = (x, code) if training else (None, None)
        return y

    def backward(self, dy):
        conv = self.layers[0]
        dx, conv.grads["w"], conv.grads["b"] = ops.conv2d_relu_maxpool2d_backward(
            dy, conv._cached(self._code), self._x, conv.params["w"],
            compute_dx=conv.needs_input_grad, **self.op_arguments())
        return dx


def fusible(conv, relu, pool) -> bool:
    """Whether three consecutive layers are a chain the fused op computes
    with the kernels the layers ask for (same backend and algorithm, one
    the fused op has, after FASTCONV_BACKEND/ALGORITHM), and a pool without
    padding."""
    if not (isinstance(conv, Conv2D) and isinstance(relu, ReLU) and isinstance(pool, MaxPool2D)):
        return False
    if pool.padding != (0, 0) or (conv.backend, conv.algorithm) != (pool.backend, pool.algorithm):
        return False
    backend, algorithm = autotune.forced(conv.backend, conv.algorithm)
    return any(algorithm in ("auto", alg)
               for _, alg in registry.variants(FUSED_OP, backend=backend, include_reference=backend == "numpy"))


def plan(layers, fuse=True) -> list:
    """The steps that run ``layers`` in order: a :class:`ConvReluMaxPoolStep`
    for each fusible Conv2D -> ReLU -> MaxPool2D when ``fuse``, else a
    :class:`LayerStep` per layer."""
    steps, i = [], 0
    while i < len(layers):
        if fuse and i + 2 < len(layers) and fusible(*layers[i : i + 3]):
            steps.append(ConvReluMaxPoolStep(*layers[i : i + 3]))
            i += 3
        else:
            steps.append(LayerStep(layers[i]))
            i += 1
    return steps


def whole_network_variants() -> list[tuple[str, str]]:
    """Every ``(backend, algorithm)`` that can run a conv -> ReLU -> max-pool
    network (the reference CNN) alone: it has both conv ops, and the max
    pooling ops or the fused ones (then the model fuses every block)."""
    def having(*ops):
        return set.intersection(*(set(registry.variants(op)) for op in ops))

    pooled = having("max_pool2d", "max_pool2d_backward") | having(FUSED_OP, FUSED_OP + "_backward")
    return sorted(having("conv2d", "conv2d_backward") & pooled)
