"""The checkpoint file: one model description plus training state, written
atomically and read back only after every check has passed.

A checkpoint is a NumPy ``.npz`` (a zip of ``.npy`` arrays; never pickled
objects) with these entries:

``meta``
    JSON text: ``format`` (``"fastconv.Sequential/<version>"``),
    ``architecture`` (a list of ``{"class": layer class, "config": its
    constructor arguments}``), ``dtype``, ``seed``, ``rng_state`` (the
    generator's ``bit_generator.state``), ``history`` (per-epoch lists, as
    :class:`fastconv.model.History`), ``optimizer`` (``{"class", "config",
    "steps"}`` or null).
``input_shape``
    int64 (ndim,): the per-sample input shape, (C, H, W) for images.
``epoch``
    int64 scalar: completed epochs.
``params/<layer>/<param>``
    the weights, one array per parameter, shaped as the layer declares.
``buffers/<layer>/<buffer>``
    the non-trainable arrays (batch norm's running statistics), likewise.
``optimizer/<slot>/<layer>/<param>``
    the optimiser's per-parameter state (Adam's ``m``, ``v``; SGD's ``velocity``).

:class:`ModelDescription` (architecture, input shape, dtype, params) is the
part that says what the model computes; the other views of a model
(:mod:`fastconv.state_dict`, :mod:`fastconv.onnx_export`) start from it too.

Every problem found while reading raises :class:`CheckpointError`, whose
message starts with the file's path and says what is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib

import numpy as np

from fastconv.atomic import write_atomically
from fastconv.layers import LAYERS, name_layers
from fastconv.optim import OPTIMIZERS

FORMAT_NAME = "fastconv.Sequential"
FORMAT_VERSION = 1
_META_KEYS = ("architecture", "dtype", "seed", "rng_state", "history", "optimizer")
_ARRAY_KEYS = ("meta", "input_shape", "epoch")
_ZIP_MAGIC = b"PK\x03\x04"
_FLOAT_TYPES = [np.dtype(code).name for code in np.typecodes["Float"]]
# what a layer, optimiser or generator raises when it refuses a saved value:
# a wrong type, a bad value, or an integer beyond the float range
_REFUSALS = (TypeError, ValueError, OverflowError)


class CheckpointError(ValueError):
    """A file cannot be used as a fastconv checkpoint: not one at all,
    truncated, damaged, incomplete, from a newer format, or inconsistent
    with the model it describes. The message names the file."""


@dataclasses.dataclass
class ModelDescription:
    """What a model computes, independent of training.

    architecture: ``[{"class": str, "config": dict}]`` in layer order;
    input_shape: per-sample shape, (C, H, W) for images; dtype: NumPy dtype
    name of every parameter; params: ``{"<layer>/<param>": array}`` with
    each array shaped as its layer declares; buffers: the non-trainable
    arrays, keyed the same way (empty for models without batch norm).
    """

    architecture: list
    input_shape: tuple
    dtype: str
    params: dict
    buffers: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, model) -> ModelDescription:
        """The description of a built :class:`fastconv.model.Sequential`."""
        return cls(
            architecture=[{"class": type(l).__name__, "config": l.config()} for l in model.layers],
            input_shape=tuple(model.input_shape),
            dtype=model.dtype.name,
            params=dict(model.params),
            buffers=dict(model.buffers),
        )

    def layers(self, **overrides) -> list:
        """New, uninitialised layer objects, named as in the model; each
        ``overrides`` item replaces the saved config value of every layer
        that has that argument."""
        layers = []
        for entry in self.architecture:
            config = dict(entry["config"])
            config.update({k: v for k, v in overrides.items() if k in config and v is not None})
            layers.append(LAYERS[entry["class"]](**config))
        name_layers(layers)
        return layers

    def arrays(self) -> dict:
        """Parameters and buffers in one ``{"<layer>/<name>": array}``."""
        return {**self.params, **self.buffers}

    def layer_params(self) -> list:
        """``(layer, {name: array})`` per architecture entry, in order, with
        the layer's parameters then its buffers: the walk every other view
        of the model (state_dict, ONNX) starts from. A layer's position in
        this list is its index in the equivalent ``torch.nn.Sequential``."""
        arrays = self.arrays()
        return [(layer, {k: arrays[f"{layer.name}/{k}"] for k in (*layer.param_shapes(), *layer.buffer_shapes())})
                for layer in self.layers()]


@dataclasses.dataclass
class Checkpoint:
    """A model description and the state needed to continue training it.

    optimizer: None, or ``{"class", "config", "steps", "slots": {slot:
    {param name: array}}}``; history: ``{field: per-epoch list}``.
    """

    model: ModelDescription
    seed: object
    rng_state: dict
    epoch: int
    history: dict
    optimizer: dict | None

    @classmethod
    def of(cls, model) -> Checkpoint:
        """Everything :func:`write` stores about ``model`` (arrays not copied)."""
        optimizer = None
        if model.optimizer is not None:
            state = model.optimizer.state_dict()
            optimizer = {"class": type(model.optimizer).__name__, "config": model.optimizer.config(),
                         "steps": state["steps"], "slots": state["slots"]}
        return cls(model=ModelDescription.of(model), seed=model.seed, rng_state=model.rng.bit_generator.state,
                   epoch=model.epoch, history=model.history.as_dict(), optimizer=optimizer)


# ------------------------------------------------------------------- writing


def write(path, checkpoint: Checkpoint) -> None:
    """Save ``checkpoint`` at ``path`` (temporary file + rename: an
    interrupted write leaves the previous file intact)."""
    description = checkpoint.model
    arrays = {f"params/{name}": p for name, p in description.params.items()}
    arrays.update({f"buffers/{name}": b for name, b in description.buffers.items()})
    arrays["input_shape"] = np.array(description.input_shape, dtype=np.int64)
    arrays["epoch"] = np.array(checkpoint.epoch, dtype=np.int64)
    meta = {
        "format": f"{FORMAT_NAME}/{FORMAT_VERSION}",
        "architecture": description.architecture,
        "dtype": description.dtype,
        "seed": checkpoint.seed,
        "rng_state": checkpoint.rng_state,
        "history": checkpoint.history,
        "optimizer": None,
    }
    if checkpoint.optimizer is not None:
        meta["optimizer"] = {k: checkpoint.optimizer[k] for k in ("class", "config", "steps")}
        for slot, table in checkpoint.optimizer["slots"].items():
            for name, value in table.items():
                arrays[f"optimizer/{slot}/{name}"] = value
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomically(path, lambda f: np.savez(f, **arrays))


# ------------------------------------------------------------------- reading


def read(path) -> Checkpoint:
    """The checkpoint at ``path``, after checking that it is a complete,
    undamaged fastconv checkpoint of a format this version reads, that each
    metadata value is of its kind (a list, an object, an integer, ...), that
    every layer and optimiser class is known and that every array is finite.
    Whether the weights fit the architecture is checked by :func:`restore`.
    Raises :class:`CheckpointError`."""
    path = os.fspath(path)
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays)
    for key in _ARRAY_KEYS[1:]:
        if key not in arrays:
            raise CheckpointError(f"{path}: damaged checkpoint, the entry {key!r} is missing")
    epoch, input_shape = arrays["epoch"], arrays["input_shape"]
    if epoch.shape != () or epoch.dtype.kind not in "iu" or input_shape.ndim != 1 or input_shape.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: damaged checkpoint, 'epoch' must be an integer and 'input_shape' "
                              f"a row of integers, found {epoch.dtype} {epoch.shape} and "
                              f"{input_shape.dtype} {input_shape.shape}")
    for key, value in arrays.items():
        if key.startswith(("params/", "buffers/", "optimizer/")):
            if value.dtype.kind != "f":
                raise CheckpointError(f"{path}: {key} holds {value.dtype} values; weights are floating point")
            bad = value.size - np.count_nonzero(np.isfinite(value))
            if bad:
                raise CheckpointError(f"{path}: {key} holds {bad} non-finite value(s) (NaN or infinity) "
                                      f"of {value.size}; the model diverged or the file is damaged")
    optimizer = meta["optimizer"]
    if optimizer is not None:
        optimizer = dict(optimizer, slots={})
        for key, value in arrays.items():
            if key.startswith("optimizer/"):
                slot, _, name = key[len("optimizer/"):].partition("/")
                if not slot or "/" not in name:
                    raise CheckpointError(f"{path}: damaged checkpoint, the entry {key!r} is not named "
                                          "optimizer/<state>/<layer>/<param>")
                optimizer["slots"].setdefault(slot, {})[name] = value
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    buffers = {k[len("buffers/"):]: v for k, v in arrays.items() if k.startswith("buffers/")}
    description = ModelDescription(architecture=meta["architecture"],
                                   input_shape=tuple(int(d) for d in input_shape),
                                   dtype=meta["dtype"], params=params, buffers=buffers)
    return Checkpoint(model=description, seed=meta["seed"], rng_state=meta["rng_state"],
                      epoch=int(epoch), history=meta["history"], optimizer=optimizer)


def restore(path, model_class, *, backend=None, algorithm=None):
    """A ``model_class`` (:class:`fastconv.model.Sequential`) rebuilt from
    the checkpoint at ``path``: architecture, weights, optimiser, epoch,
    history and generator state. ``backend``/``algorithm``, when given,
    replace the saved ones in every conv, pool and batch norm layer. Raises
    :class:`CheckpointError` if the file is unusable or its parts do not fit
    together (a weight of the wrong shape or dtype, a missing parameter,
    ...); the shapes are checked before the model allocates its own arrays."""
    path = os.fspath(path)
    saved = read(path)
    description = saved.model
    dtype = np.dtype(description.dtype)
    layers = _build(path, description.layers, backend=backend, algorithm=algorithm)
    # before the model allocates its arrays: a damaged config can ask for any size
    param_shapes = {f"{layer.name}/{k}": shape for layer in layers for k, shape in layer.param_shapes().items()}
    buffer_shapes = {f"{layer.name}/{k}": shape for layer in layers for k, shape in layer.buffer_shapes().items()}
    _check_arrays(path, "saved weights", description.params, param_shapes, dtype)
    _check_arrays(path, "saved running statistics", description.buffers, buffer_shapes, dtype)
    model = _build(path, model_class, layers, description.input_shape, seed=saved.seed, dtype=dtype)
    saved_arrays = description.arrays()
    for name, array in {**model.params, **model.buffers}.items():
        array[...] = saved_arrays[name]
    _restore_history(path, model.history, saved.history)
    try:
        model.rng.bit_generator.state = saved.rng_state
    except (*_REFUSALS, KeyError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint, bad random generator state ({error})") from None
    model.epoch = saved.epoch
    if saved.optimizer is not None:
        model.optimizer = _restore_optimizer(path, saved.optimizer, model.params, dtype)
    return model


def _build(path, make, *args, **kwargs):
    """``make(*args, **kwargs)`` (layers or the model, from their saved
    arguments), their refusal of an argument raised as a CheckpointError."""
    try:
        return make(*args, **kwargs)
    except _REFUSALS as error:
        raise CheckpointError(f"{path}: the saved architecture cannot be built: {error}") from None


def _restore_optimizer(path, saved: dict, params: dict, dtype: np.dtype):
    """The optimiser described by ``saved`` (see :class:`Checkpoint`), its
    per-parameter state checked against the model's ``params`` and ``dtype``."""
    name = saved["class"]
    try:
        optimizer = OPTIMIZERS[name](**saved["config"])
    except _REFUSALS as error:
        raise CheckpointError(f"{path}: bad {name} settings {saved['config']}: {error}") from None
    if set(saved["slots"]) - set(optimizer.slot_names):
        raise CheckpointError(f"{path}: saved optimizer state {sorted(saved['slots'])} is not {name}'s "
                              f"(its state: {', '.join(optimizer.slot_names) or 'none'})")
    slots = {slot: saved["slots"].get(slot, {}) for slot in optimizer.slot_names}
    for slot, table in slots.items():
        if table:  # empty before the first step, then one array per parameter
            _check_arrays(path, f"saved {name} state {slot!r}", table, {k: p.shape for k, p in params.items()},
                          dtype)
    try:
        optimizer.load_state_dict({"steps": saved["steps"], "slots": slots})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint, bad {name} step count ({error})") from None
    return optimizer


def _check_arrays(path, what, saved: dict, shapes: dict, dtype: np.dtype) -> None:
    """Raise unless ``saved`` ({param name: array}, described by ``what``)
    has exactly the names of ``shapes`` ({param name: shape}), each array
    its shape, and all the model's ``dtype``."""
    if saved.keys() != shapes.keys():
        missing, extra = sorted(shapes.keys() - saved.keys()), sorted(saved.keys() - shapes.keys())
        detail = "; ".join(f"{label} {', '.join(names)}" for label, names in
                           (("missing", missing), ("not in the architecture:", extra)) if names)
        raise CheckpointError(f"{path}: {what}: {detail}")
    for name, shape in shapes.items():
        if saved[name].shape != tuple(shape):
            raise CheckpointError(f"{path}: {what}: {name!r} has shape {saved[name].shape}, "
                                  f"the architecture needs {tuple(shape)}")
        if saved[name].dtype != dtype:
            raise CheckpointError(f"{path}: {what}: {name!r} holds {saved[name].dtype} values, "
                                  f"the model's dtype is {dtype}")


def _restore_history(path, history, saved: dict) -> None:
    """Append the saved per-epoch lists to the model's empty ``history``
    (files from before the per-epoch ``lr`` was recorded get None there)."""
    fields = history.as_dict()
    if isinstance(saved, dict) and "lr" not in saved and isinstance(saved.get("epoch"), list):
        saved = dict(saved, lr=[None] * len(saved["epoch"]))
    if (not isinstance(saved, dict) or set(saved) != set(fields)
            or not all(isinstance(v, list) for v in saved.values()) or len({len(v) for v in saved.values()}) > 1):
        raise CheckpointError(f"{path}: damaged checkpoint, its training history needs the lists "
                              f"{', '.join(fields)} of equal length, found "
                              f"{sorted(saved) if isinstance(saved, dict) else _shown(saved)}")
    for name, values in saved.items():
        getattr(history, name).extend(values)


def _read_arrays(path) -> dict:
    """Every entry of the .npz at ``path``, read without pickle."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
        if head == _ZIP_MAGIC:
            raise CheckpointError(f"{path}: truncated or damaged checkpoint (a .npz archive whose end, "
                                  f"with the list of its entries, is missing; {os.path.getsize(path)} bytes)")
        raise CheckpointError(f"{path} is not a fastconv checkpoint (those are .npz archives written by "
                              "fastconv-train --save or Sequential.save; this file "
                              + ("is empty)" if not head else f"starts with {head!r})"))
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        where = f"entry {key!r}" if key is not None else "archive"
        if "allow_pickle" in str(error):
            raise CheckpointError(f"{path}: {where} holds pickled Python objects, which fastconv never "
                                  "loads (not a fastconv checkpoint, or tampered with)") from None
        raise CheckpointError(f"{path}: damaged checkpoint, {where} cannot be read ({error})") from None
    return arrays


def _read_meta(path, arrays) -> dict:
    """The ``meta`` entry as a dict, after checking the format name and
    version and that each value is of the kind :func:`read` and
    :func:`restore` use: architecture entries with a known class and a
    config object, a floating-point dtype name, an optimiser entry that is
    null or a known class with a config object and a step count."""
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a fastconv checkpoint (a .npz archive without the 'meta' "
                              f"entry; it holds {', '.join(sorted(arrays)) or 'nothing'})")
    try:
        meta = json.loads(arrays["meta"].item())
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint, its 'meta' entry is not JSON text ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint, its 'meta' entry is not a JSON object")
    name, _, version = str(meta.get("format", "")).partition("/")
    if name != FORMAT_NAME or not version.isdigit():
        raise CheckpointError(f"{path} is not a fastconv checkpoint (format {meta.get('format')!r}, "
                              f"expected {FORMAT_NAME}/{FORMAT_VERSION})")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer fastconv (format {FORMAT_NAME}/{version}; "
                              f"this version reads up to /{FORMAT_VERSION}): upgrade fastconv to load it")
    if int(version) < 1:
        raise CheckpointError(f"{path}: unknown format version {meta['format']!r}")
    for key in _META_KEYS:
        if key not in meta:
            raise CheckpointError(f"{path}: damaged checkpoint, its metadata lacks {key!r}")
    architecture = meta["architecture"]
    if not isinstance(architecture, list) or not all(
            isinstance(e, dict) and isinstance(e.get("config"), dict) for e in architecture):
        raise CheckpointError(f"{path}: damaged checkpoint, its architecture is not a list of "
                              "{\"class\", \"config\"} entries")
    for entry in architecture:
        _check_known(path, "layer", entry.get("class"), LAYERS)
    if meta["dtype"] not in _FLOAT_TYPES:  # a list: any JSON value compares, none is hashed
        raise CheckpointError(f"{path}: damaged checkpoint, its dtype {_shown(meta['dtype'])} is not the name "
                              f"of a floating-point type ({', '.join(_FLOAT_TYPES)})")
    optimizer = meta["optimizer"]
    if optimizer is None:
        return meta
    if not isinstance(optimizer, dict):
        raise CheckpointError(f"{path}: damaged checkpoint, its optimizer entry must be an object "
                              f"{{\"class\", \"config\", \"steps\"}} or null, found {_shown(optimizer)}")
    for key in ("class", "config", "steps"):
        if key not in optimizer:
            raise CheckpointError(f"{path}: damaged checkpoint, its optimizer entry lacks {key!r}")
    _check_known(path, "optimizer", optimizer["class"], OPTIMIZERS)
    if not isinstance(optimizer["config"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint, its optimizer config must be an object, "
                              f"found {_shown(optimizer['config'])}")
    steps = optimizer["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise CheckpointError(f"{path}: damaged checkpoint, its optimizer step count must be a non-negative "
                              f"integer, found {_shown(steps)}")
    return meta


def _check_known(path, what, name, classes: dict) -> None:
    """Raise unless ``name`` (from the metadata: any JSON value) is a key of
    ``classes``, the layer or optimiser classes by name."""
    if not isinstance(name, str) or name not in classes:
        raise CheckpointError(f"{path}: unknown {what} class {_shown(name)} "
                              f"(this fastconv knows {', '.join(sorted(classes))})")


def _shown(value) -> str:
    """``repr(value)`` for a message, cut short: a damaged file's JSON can hold anything."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
