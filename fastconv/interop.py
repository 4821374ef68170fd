"""Files other frameworks read: safetensors weights (PyTorch's names and
layouts, :mod:`fastconv.state_dict`) and ONNX graphs
(:mod:`fastconv.onnx_export`), written atomically and read with every
problem reported as :class:`~fastconv.state_dict.InteropError` naming the
file.

The ``onnx`` and ``safetensors`` packages are the optional ``interop``
extra (``pip install "fastconv[interop]"``); nothing here needs PyTorch.
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
