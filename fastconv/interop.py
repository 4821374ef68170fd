"""Files other frameworks read: safetensors weights (PyTorch's names and
layouts, :mod:`fastconv.state_dict`) and ONNX graphs
(:mod:`fastconv.onnx_export`), written atomically and read with every
problem reported as :class:`~fastconv.state_dict.InteropError` naming the
file.

The ``onnx`` and ``safetensors`` packages are the optional ``interop``
extra (``pip install "fastconv[interop]"``). PyTorch is needed only by
:func:`torch_sequential`, which imports it when called (never a dependency,
never imported with fastconv).
"""
from __future__ import annotations

import importlib
import os

from fastconv.atomic import write_atomically
from fastconv.checkpoint import ModelDescription
from fastconv.onnx_export import onnx_model
from fastconv.state_dict import InteropError

EXTRA_HINT = 'pip install "fastconv[interop]"'


def require(module: str):
    """The optional package ``module`` (``onnx``, ``safetensors.numpy``), or
    InteropError saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InteropError(f"the {module.partition('.')[0]} package is needed for this: {EXTRA_HINT}") from None


def safetensors_bytes(model) -> bytes:
    """``model.state_dict()`` (a :class:`fastconv.model.Sequential`) as the
    bytes of a safetensors file, loadable into the equivalent
    ``torch.nn.Sequential`` with ``strict=True``."""
    save = require("safetensors.numpy").save
    return save(model.state_dict(), metadata={"format": "pt", "producer": "fastconv"})


def onnx_bytes(model) -> bytes:
    """``model`` as the bytes of an ONNX file (see :mod:`fastconv.onnx_export`);
    InteropError for a model ONNX cannot express."""
    return onnx_model(ModelDescription.of(model), require("onnx")).SerializeToString()


def save_safetensors(model, path) -> None:
    """Write :func:`safetensors_bytes` of ``model`` to ``path``, atomically."""
    write_atomically(path, lambda f: f.write(safetensors_bytes(model)))


def save_onnx(model, path) -> None:
    """Write :func:`onnx_bytes` of ``model`` to ``path``, atomically: a
    refused model leaves no file."""
    write_atomically(path, lambda f: f.write(onnx_bytes(model)))


def load_weights(path) -> dict:
    """``{key: array}`` from a safetensors file, or the initializers of an
    ONNX file (``.onnx``), ready for ``Sequential.load_state_dict``.
    InteropError naming the file if it is missing, truncated or damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InteropError(f"{path}: no such file")
    if path.endswith(".onnx"):
        return _onnx_initializers(path)
    load_file, damaged = require("safetensors.numpy").load_file, require("safetensors").SafetensorError
    try:
        return load_file(path)
    except (damaged, ValueError, TypeError, OSError) as error:
        raise InteropError(f"{path}: not a readable safetensors file (truncated or damaged?): {error}") from None


def load_into(model, path, strict=True) -> None:
    """``model.load_state_dict`` of the weights file at ``path`` (see
    :func:`load_weights`); every InteropError names the file."""
    weights = load_weights(path)
    try:
        model.load_state_dict(weights, strict)
    except InteropError as error:
        raise InteropError(f"{os.fspath(path)}: {error}") from None


def _onnx_initializers(path) -> dict:
    onnx = require("onnx")
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    try:
        graph = onnx.load(path).graph
        return {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}
    except (DecodeError, ValueError, TypeError, OSError) as error:
        raise InteropError(f"{path}: not a readable ONNX file (truncated or damaged?): {error}") from None


_TORCH_MODULES = {
    "Conv2D": lambda nn, l: nn.Conv2d(l.in_channels, l.out_channels, l.kernel_size, l.stride, l.padding),
    "MaxPool2D": lambda nn, l: nn.MaxPool2d(l.kernel_size, l.stride, l.padding),
    "AvgPool2D": lambda nn, l: nn.AvgPool2d(l.kernel_size, l.stride, l.padding, count_include_pad=True),
    "ReLU": lambda nn, l: nn.ReLU(), "Flatten": lambda nn, l: nn.Flatten(),
    "Dense": lambda nn, l: nn.Linear(l.in_features, l.out_features), "Dropout": lambda nn, l: nn.Dropout(l.p),
    "BatchNorm2D": lambda nn, l: nn.BatchNorm2d(l.num_features, l.eps, l.momentum),
    "BatchNorm": lambda nn, l: nn.BatchNorm1d(l.num_features, l.eps, l.momentum),
}
"""Per fastconv layer class, the equivalent torch.nn module (one module per
layer, as :mod:`fastconv.state_dict` numbers them)."""


def torch_sequential(model):
    """The ``torch.nn.Sequential`` equivalent of ``model`` (a
    :class:`fastconv.model.Sequential`), float32, with its weights loaded
    (``model.state_dict()``, strictly) and in evaluation mode: it maps
    (N, *input_shape) to the same logits (N, K). ImportError when PyTorch
    is not installed; InteropError for a layer PyTorch has no module for."""
    import torch

    modules = []
    for index, layer in enumerate(model.layers):
        build = _TORCH_MODULES.get(type(layer).__name__)
        if build is None:
            raise InteropError(f"layer {index} ({type(layer).__name__} {layer.name!r}) has no PyTorch module "
                               f"(those with one: {', '.join(_TORCH_MODULES)})")
        modules.append(build(torch.nn, layer))
    net = torch.nn.Sequential(*modules)
    state = {key: torch.from_numpy(value.astype("float32")) for key, value in model.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net.eval()
