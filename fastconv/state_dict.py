"""The PyTorch view of a model: its weights under the names and layouts of
the equivalent ``torch.nn.Sequential``.

Every fastconv layer, parameter-free ones included (ReLU, pooling, Flatten,
Dropout), is one module of that Sequential, so a key is ``<index>.<name>``
with the layer's position in the model: the reference CNN's are ``0.weight,
0.bias, 3.weight, 3.bias, 7.weight, 7.bias, 10.weight, 10.bias``.

Layouts: a Conv2D ``w`` (F, C, KH, KW) is ``nn.Conv2d.weight`` as it is; a
Dense ``w`` (in, out) is ``nn.Linear.weight`` (out, in) transposed; biases
(F,) / (out,) are the same. Batch norm's ``gamma``, ``beta``,
``running_mean`` and ``running_var`` (C,) are ``weight``, ``bias``,
``running_mean`` and ``running_var`` of ``nn.BatchNorm2d`` /
``nn.BatchNorm1d``. Built from
:meth:`fastconv.checkpoint.ModelDescription.layer_params`, like the ONNX
export, which names its initializers with these keys.
"""
from __future__ import annotations

import numpy as np

_BATCH_NORM = {"gamma": ("weight", False), "beta": ("bias", False),
               "running_mean": ("running_mean", False), "running_var": ("running_var", False)}
TORCH_PARAMS = {
    "Conv2D": {"w": ("weight", False), "b": ("bias", False)},
    "Dense": {"w": ("weight", True), "b": ("bias", False)},
    "BatchNorm2D": _BATCH_NORM,  # nn.BatchNorm2d
    "BatchNorm": _BATCH_NORM,    # nn.BatchNorm1d
}
"""Per layer class: fastconv parameter or buffer -> (PyTorch name, transposed?)."""
BATCH_COUNT = "num_batches_tracked"
"""PyTorch's batch-norm step counter: accepted on loading and ignored (it
only matters to ``momentum=None``, which fastconv does not have)."""

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class InteropError(ValueError):
    """A model cannot be exported, or weights from elsewhere do not fit it;
    the message names the layer, key or file."""


def _torch_entries(description):
    """``(torch key, fastconv key, transposed?)`` for every parameter of
    ``description``, in layer order; InteropError for a layer with
    parameters that has no PyTorch counterpart."""
    entries = []
    for index, (layer, params) in enumerate(description.layer_params()):
        names = TORCH_PARAMS.get(type(layer).__name__)
        if params and names is None:
            raise InteropError(f"layer {index} ({type(layer).__name__} {layer.name!r}) has no PyTorch "
                               f"counterpart (exportable layers with weights: {', '.join(TORCH_PARAMS)})")
        for param in params:
            torch_name, transposed = names[param]
            entries.append((f"{index}.{torch_name}", f"{layer.name}/{param}", transposed))
    return entries


def torch_state_dict(description) -> dict[str, np.ndarray]:
    """``{"<index>.<weight|bias>": array}``: copies of the weights of a
    :class:`~fastconv.checkpoint.ModelDescription` in PyTorch's layouts
    (C-contiguous, the model's dtype)."""
    arrays = description.arrays()
    return {key: np.array(arrays[name].T if transposed else arrays[name], order="C")
            for key, name, transposed in _torch_entries(description)}


def fastconv_params(description, mapping, strict=True) -> dict[str, np.ndarray]:
    """The inverse of :func:`torch_state_dict`: ``{"<layer>/<param>": array}``
    in fastconv's layouts and the model's dtype, from ``mapping`` (PyTorch
    keys -> float32/float64 arrays, or anything ``np.asarray`` takes).

    With ``strict`` every key of the model must be present and no other;
    otherwise missing keys are left out of the result and unknown ones
    ignored. Shapes and dtypes are checked in both modes. Raises
    InteropError naming every missing, unexpected, mis-shaped, non-float or
    non-finite key.
    """
    entries = _torch_entries(description)
    arrays = description.arrays()
    counters = {f"{index}.{BATCH_COUNT}" for index, entry in enumerate(description.architecture)
                if TORCH_PARAMS.get(entry["class"]) is _BATCH_NORM}
    problems = []
    if strict:
        expected = [key for key, _, _ in entries]
        missing = [key for key in expected if key not in mapping]
        unexpected = [key for key in mapping if key not in expected and key not in counters]
        if missing:
            problems.append(f"missing keys {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {', '.join(map(str, unexpected))} "
                            f"(this model's keys: {', '.join(expected) or 'none'})")
    params = {}
    for key, name, transposed in entries:
        if key not in mapping:
            continue
        value = np.asarray(mapping[key])
        wanted = arrays[name].shape[::-1] if transposed else arrays[name].shape
        if value.dtype not in FLOAT_DTYPES:
            problems.append(f"{key!r} holds {value.dtype} values, weights must be float32 or float64")
        elif value.shape != wanted:
            problems.append(f"{key!r} has shape {value.shape}, this model needs {wanted}")
        elif not np.isfinite(value).all():
            problems.append(f"{key!r} holds non-finite values (NaN or infinity)")
        else:
            params[name] = (value.T if transposed else value).astype(description.dtype)
    if problems:
        raise InteropError("state_dict does not fit this model: " + "; ".join(problems))
    return params
