"""The ONNX view of a model: one graph node per layer, built by walking
:meth:`fastconv.checkpoint.ModelDescription.layer_params`.

The graph takes ``x`` (N, C, H, W) float32 with a dynamic batch axis N and
returns ``logits`` (N, K). Initializers are the weights under their
:mod:`fastconv.state_dict` names and PyTorch layouts (``0.weight`` ...), so
Dense becomes ``Gemm`` with ``transB=1``. Dropout is the identity at
inference (``Identity``); AvgPool2D counts padded zeros, as ONNX's
``count_include_pad=1``; batch norm is ``BatchNormalization`` in inference
mode (the running statistics). A layer with no node here is refused.
"""
from __future__ import annotations

import numpy as np

from fastconv.state_dict import InteropError, torch_state_dict

OPSET = 17
IR_VERSION = 8  # the IR of opset 17, so that runtimes reading IR 8 take the file


def _window(layer) -> dict:
    (kh, kw), (sh, sw), (ph, pw) = layer.window
    return {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph, pw]}


def _conv(helper, index, layer, x, y):
    return [helper.make_node("Conv", [x, f"{index}.weight", f"{index}.bias"], [y], **_window(layer))]


def _max_pool(helper, index, layer, x, y):
    return [helper.make_node("MaxPool", [x], [y], **_window(layer))]


def _avg_pool(helper, index, layer, x, y):
    return [helper.make_node("AveragePool", [x], [y], count_include_pad=1, **_window(layer))]


def _relu(helper, index, layer, x, y):
    return [helper.make_node("Relu", [x], [y])]


def _flatten(helper, index, layer, x, y):
    return [helper.make_node("Flatten", [x], [y], axis=1)]


def _dense(helper, index, layer, x, y):
    return [helper.make_node("Gemm", [x, f"{index}.weight", f"{index}.bias"], [y], transB=1)]


def _batch_norm(helper, index, layer, x, y):
    inputs = [x] + [f"{index}.{name}" for name in ("weight", "bias", "running_mean", "running_var")]
    return [helper.make_node("BatchNormalization", inputs, [y], epsilon=layer.eps)]


def _identity(helper, index, layer, x, y):
    return [helper.make_node("Identity", [x], [y])]


NODES = {"Conv2D": _conv, "MaxPool2D": _max_pool, "AvgPool2D": _avg_pool, "ReLU": _relu,
         "Flatten": _flatten, "Dense": _dense, "Dropout": _identity,
         "BatchNorm2D": _batch_norm, "BatchNorm": _batch_norm}
"""Per layer class: ``(onnx.helper, index, layer, input name, output name)
-> [nodes]`` computing the layer at inference."""


def onnx_model(description, onnx):
    """The ``onnx.ModelProto`` of a :class:`~fastconv.checkpoint.ModelDescription`,
    checked with ``onnx.checker.check_model``. ``onnx`` is the imported
    package (an optional dependency). InteropError, before anything is
    built, for a layer ONNX cannot express here."""
    layers = description.layer_params()
    for index, (layer, _) in enumerate(layers):
        if type(layer).__name__ not in NODES:
            raise InteropError(f"layer {index} ({type(layer).__name__} {layer.name!r}) cannot be exported "
                               f"to ONNX (exportable layers: {', '.join(NODES)})")
    helper = onnx.helper
    nodes, current, shape = [], "x", tuple(description.input_shape)
    for index, (layer, _) in enumerate(layers):
        shape = layer.output_shape(shape)
        output = "logits" if index == len(layers) - 1 else f"{index}.{layer.kind}"
        nodes += NODES[type(layer).__name__](helper, index, layer, current, output)
        current = output
    initializers = [onnx.numpy_helper.from_array(array.astype(np.float32), key)
                    for key, array in torch_state_dict(description).items()]
    graph = helper.make_graph(
        nodes, "fastconv.Sequential",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *description.input_shape])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", *shape])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="fastconv")
    onnx.checker.check_model(model, full_check=True)
    return model
