"""Compiled inference plans: a model's evaluation forward pass with every
choice made once, for one batch size.

A :class:`Plan` is built from a model's steps (the fusion plan,
:mod:`fastconv.fusion`) and a batch size N. Building it

* picks the kernel of each conv, pooling and fused conv -> ReLU -> max-pool
  step as the op itself would pick it for that call
  (:func:`fastconv.ops.prepare`: the layer's backend and algorithm, or
  ``auto``'s choice, measured once and shared with the ops' cache);
* allocates each step's output, and for a conv or pool with padding a
  padded input buffer, filled with the pad value once, so that a run
  writes only its interior;
* turns the cheap layers into operations on those buffers: ReLU in place
  on the buffer before it, or straight into the next step's padded
  interior; batch norm's kernel in place; Flatten a reshape (a view); Dropout nothing (the
  identity in evaluation); Dense the layer's own product
  (:func:`fastconv.products.product`) into a buffer then ``+= b``. A layer of another kind (one of yours, or a subclass) runs as
  ``layer.forward(x, False)``, as does every layer whose arrays are not
  C-contiguous in the model's dtype (the ops would convert them on each
  call; the plan leaves that to them).

Running it validates the input once, as :meth:`Sequential.forward
<fastconv.model.Sequential.forward>` does (the same errors; NaN is not
refused, it propagates), applies the thread count to the calling thread
once (:func:`fastconv.threads.in_this_thread`), then calls the steps: no
per-layer validation, dispatch or ``auto`` look-up, no new activations.

Batch norm in evaluation is a per-channel affine map, ``y = x * scale +
shift`` with ``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta
- running_mean * scale``. Folding it into neighbouring weights is exact
only next to a linear map (after a Dense, or directly after a conv), and
folded weights are copies, which go stale when an optimiser step or
``load_state_dict`` writes the originals in place. In cnn-deep every batch
norm follows a max pool, a ReLU or a Dense; after a max pool or a ReLU it
cannot go into the conv before (neither commutes with a negative scale),
nor exactly into the conv after (its zero padding would be shifted too).
So the plan runs it after the step before, in place on that step's
output: the compiled batch norm kernel (the one ``auto`` picks for
``ops.batch_norm`` in evaluation) reading the live (C,) arrays. At cnn-deep's
shapes, batch 256, that took 1.1 ms where a NumPy multiply and add written
straight into the next conv's padded interior took 3.3 ms (strided
broadcasting), so the next conv copies it into its interior instead.

Never stale: a plan holds the model's live arrays, so weights changed in
place (an optimiser step, ``load_state_dict``) are used at once. Before each
run it checks that the thread count and FASTCONV_BACKEND /
FASTCONV_ALGORITHM are unchanged (``auto`` chooses per thread count), and,
when a change to any model was noted since its last check
(:mod:`fastconv.changes`), by identity that the model's steps, the layers,
every public attribute of the layers it compiled and their param and buffer
arrays are the objects it was built from; if anything differs it builds
itself again.

Threads: a run takes a set of buffers from the plan's pool, or allocates a
new set when every set is in use by another thread (so a server running
one model from many threads never shares a buffer between two runs), and
puts it back after. The logits it returns are a copy, never plan memory.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from fastconv import changes, fusion, op_table, ops, products, registry, settings, threads
from fastconv.integers import positive_int
from fastconv.layers import AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


class Plan:
    """The evaluation forward pass of ``model`` (a
    :class:`fastconv.model.Sequential`) compiled for batches of ``batch``
    images: x (batch, *input_shape) -> logits (batch, K). See the module
    docstring; :meth:`Sequential.compile <fastconv.model.Sequential.compile>`
    builds one, and ``Sequential.forward`` in evaluation runs one."""

    def __init__(self, model, batch):
        self.model = model
        self.batch = positive_int(batch, "Plan: batch")
        self._compiled = _Compiled(model, self.batch)

    def __call__(self, x) -> np.ndarray:
        """Logits (batch, K), a new array, for images x (batch,
        *input_shape) of any real dtype (cast to the model's). ValueError as
        ``Sequential.forward`` raises it for a wrong shape, and for a batch
        of another size than the plan's."""
        x = self.model._as_input(x)
        if len(x) != self.batch:
            raise ValueError(f"Plan: compiled for batch {self.batch}, got x of shape {x.shape} "
                             f"(model.compile({len(x)}) gives a plan for that batch)")
        return self.run(x)

    def run(self, x) -> np.ndarray:
        """:meth:`__call__` for x already checked and cast by
        ``Sequential._as_input``, (batch, *input_shape) in the model's dtype."""
        return self._current().run(np.ascontiguousarray(x))

    def describe(self) -> list[tuple[str, str]]:
        """``(step, how it runs)`` for each step of the plan for the model as
        it is now: the op and variant whose kernel it calls, or what it does
        on the buffers."""
        return [(step.name, step.how) for step in self._current().steps]

    def _current(self) -> _Compiled:
        """The build for the model as it is now: the last one, or a new one
        if the model changed since (see the module docstring)."""
        compiled = self._compiled
        if not compiled.is_current(threads.in_this_thread()):
            compiled = self._compiled = _Compiled(self.model, self.batch)
        return compiled


class _Compiled:
    """The steps and buffer pool of one build, replaced whole when the model
    changes (a run in progress keeps the build it started with)."""

    def __init__(self, model, batch):
        self.model = model
        self.mark = changes.mark  # read before anything else is
        self.thread_count = threads.num_threads()
        self.forced = (settings.forced_backend(), settings.forced_algorithm())  # as written: auto's inputs
        self.snapshot = _Snapshot(model)
        self.steps = _build(model, batch)
        self.free = [self.allocate()]

    def is_current(self, thread_count) -> bool:
        if (thread_count != self.thread_count
                or (settings.forced_backend(), settings.forced_algorithm()) != self.forced):
            return False
        mark = changes.mark
        if mark is self.mark:  # nothing noted a change since the last check
            return True
        if not self.snapshot.unchanged():
            return False
        self.mark = mark
        return True

    def allocate(self) -> list:
        """One buffer set: per step, its own arrays and the slot in the next
        step's buffers it may write its output into (None: no such slot)."""
        own = [step.allocate() for step in self.steps]
        slots = [step.slot(arrays) for step, arrays in zip(self.steps[1:], own[1:])] + [None]
        return list(zip(own, slots))

    def run(self, x):
        try:
            buffers = self.free.pop()  # atomic: no two runs get one set
        except IndexError:
            buffers = self.allocate()
        try:
            for step, (own, slot) in zip(self.steps, buffers):
                x = step.run(x, own, slot)
            return x.copy()
        finally:
            self.free.append(buffers)


# ------------------------------------------------------------ staleness

_COMPILED_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, ReLU, Flatten, Dropout, Dense, BatchNorm2D, BatchNorm)


class _Snapshot:
    """What a build read from the model, and where from: the step list and
    each step in it, each step's layers, and for the layer kinds the plan
    compiles their public attributes and their param and buffer arrays (a
    layer of yours runs through its own forward, live). :meth:`unchanged`
    compares them by identity in one C loop (``map`` over the dicts and
    lists holding them: the instances' ``vars``, the model's step list, the
    params and buffers), about 3 us for the MNIST CNN's 100 entries."""

    def __init__(self, model):
        containers, keys = [vars(model)] * 3, ["steps", "dtype", "input_shape"]
        for index, step in enumerate(model.steps):
            containers += [model.steps, vars(step)]
            keys += [index, "layers"]
            for layer in step.layers:
                if type(layer) in _COMPILED_LAYERS:
                    public = [k for k in vars(layer) if k[0] != "_" and k not in changes.UNWATCHED]
                    containers += [vars(layer)] * len(public)
                    keys += public
                    for arrays in (layer.params, layer.buffers):
                        containers += [arrays] * len(arrays)
                        keys += arrays
        self.model, self.step_count = model, len(model.steps)
        self.containers, self.keys = containers, keys
        self.items = list(map(operator.getitem, containers, keys))

    def unchanged(self) -> bool:
        try:
            return (len(self.model.steps) == self.step_count
                    and all(map(operator.is_, map(operator.getitem, self.containers, self.keys), self.items)))
        except (KeyError, IndexError):  # something the build read is gone
            return False


# ------------------------------------------------------------ building


def _build(model, batch) -> list:
    """The plan steps of ``model`` for ``batch``, built along a forward pass
    of zeros (batch, *input_shape): each model step is compiled for the
    array it receives there, then run on it layer by layer (which also
    checks it as the model's forward pass would)."""
    dtype = model.dtype
    x = np.zeros((batch,) + model.input_shape, dtype)
    owned = False  # whether the current array is plan memory (not the caller's input)
    steps = []
    for step in model.steps:
        compiled = _compile(step, x, owned, dtype)
        if compiled is not None:
            steps.append(compiled)
            owned = compiled.owns_output if compiled.owns_output is not None else owned
        x = step.forward(x, False)
    return steps


def _plain(layer, dtype) -> bool:
    """Whether every array of ``layer`` can go to a kernel as it is."""
    arrays = [*layer.params.values(), *layer.buffers.values()]
    return all(isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def _compile(step, x, owned, dtype):
    """The plan step running the model step ``step`` on x, the array it gets
    (N, ...); None for a step that is the identity in evaluation."""
    if x.dtype != dtype or not all(_plain(layer, dtype) for layer in step.layers):
        return _LayerForward(step)
    if type(step) is fusion.ConvReluMaxPoolStep:
        conv = step.layers[0]
        params = (conv.params["w"], conv.params["b"])
        launch = ops.prepare(fusion.FUSED_OP, x, *params, **step.op_arguments())
        return _KernelStep(step.name, fusion.FUSED_OP, launch, params)
    layer = step.layers[0]
    compile_layer = _LAYER_STEPS.get(type(layer)) if type(step) is fusion.LayerStep else None
    if compile_layer is None:
        return _LayerForward(step)
    return compile_layer(layer, x, owned)


def _conv(layer, x, owned):
    params = (layer.params["w"], layer.params["b"])
    launch = ops.prepare(op_table.CONV2D.name, x, *params, layer.stride, layer.padding,
                         backend=layer.backend, algorithm=layer.algorithm)
    return _KernelStep(layer.name, op_table.CONV2D.name, launch, params)


def _pool(layer, x, owned):
    op = _POOL_OPS[type(layer)]
    launch = ops.prepare(op, x, layer.kernel_size, layer.stride, layer.padding,
                         backend=layer.backend, algorithm=layer.algorithm)
    return _KernelStep(layer.name, op, launch, ())


_POOL_OPS = {MaxPool2D: op_table.MAX_POOL2D.name, AvgPool2D: op_table.AVG_POOL2D.name}


def _dense(layer, x, owned):
    return _DenseStep(layer, (x.shape[0], layer.out_features), x.dtype)


def _relu(layer, x, owned):
    return _ReLUStep(layer.name, x, owned)


def _batch_norm(layer, x, owned):
    return _BatchNormStep(layer, x, owned)


def _flatten(layer, x, owned):
    return _FlattenStep(layer.name)


def _dropout(layer, x, owned):
    return None


_LAYER_STEPS = {Conv2D: _conv, MaxPool2D: _pool, AvgPool2D: _pool, Dense: _dense, ReLU: _relu,
                BatchNorm2D: _batch_norm, BatchNorm: _batch_norm, Flatten: _flatten, Dropout: _dropout}
"""How each built-in layer kind is compiled (exact types: a subclass may
change forward, so it runs through its own)."""


# ------------------------------------------------------------ plan steps


class _Step:
    """A step of a plan: ``name``, ``how`` (for describe), ``owns_output``
    (True: its output is plan memory, which the next steps may overwrite;
    False: it may be the caller's input; None: whichever it got),
    ``allocate()`` (its arrays in one buffer set, here none), ``slot(own)``
    (where in those arrays the step before may write this step's input,
    here nowhere) and ``run(x, own, slot) -> y``."""

    def allocate(self):
        return None

    def slot(self, own):
        return None


class _KernelStep(_Step):
    """A conv, pool or fused conv -> ReLU -> max-pool step: x (N, C, H, W)
    -> (N, F, OH, OW), its kernel called on the plan's buffers."""

    owns_output = True

    def __init__(self, name, op, launch: ops.Launch, params):
        self.name, self.op = name, op
        self.launch = launch
        self.arguments = (*params, *launch.geometry)  # after xp, before the outputs

    @property
    def how(self) -> str:
        """The op and the variant whose kernel the step calls."""
        for variant in registry.variants(self.op):
            if registry.kernel(self.op, *variant) is self.launch.kernel:
                return f"{self.op} {'/'.join(variant)}"
        return self.op

    def allocate(self):
        launch = self.launch
        outputs = tuple(np.empty(shape, dtype) for shape, dtype in launch.outputs)
        if launch.padding == (0, 0):
            return None, None, outputs
        xp = np.full(launch.padded_shape, launch.pad_value, launch.dtype)
        (ph, pw), (h, w) = launch.padding, launch.padded_shape[2:]
        return xp, xp[:, :, ph : h - ph, pw : w - pw], outputs

    def slot(self, own):
        return own[1]

    def run(self, x, own, slot):
        xp, interior, outputs = own
        if xp is None:
            xp = x
        elif x is not interior:  # the step before did not write it there
            interior[...] = x
        self.launch.kernel(xp, *self.arguments, *outputs)
        return outputs[0]


class _InPlace(_Step):
    """A step computed elementwise: into the next step's slot, else over its
    input when that is plan memory, else into its own buffer."""

    owns_output = True

    def __init__(self, name, x, owned):
        self.name = name
        self.shape, self.dtype, self.in_place = x.shape, x.dtype, owned

    def allocate(self):
        return None if self.in_place else np.empty(self.shape, self.dtype)

    @staticmethod
    def destination(x, own, slot):
        if slot is not None:
            return slot
        return x if own is None else own


class _ReLUStep(_InPlace):
    """max(x, 0) elementwise, any shape."""

    how = "relu in place"

    def run(self, x, own, slot):
        return np.maximum(x, 0, out=self.destination(x, own, slot))


class _BatchNormStep(_Step):
    """Batch norm in evaluation (see the module docstring): x (N, C) or
    (N, C, H, W) normalised with the running statistics, in place when x is
    plan memory, else into the step's own buffer: by the batch norm kernel
    ``auto`` (or the layer) picks, whatever x's size.

    Small inputs used to go to NumPy instead, while idle threads slept at
    once and waking them cost 0.10-0.13 ms a call (Intel Xeon). Now that
    they spin between kernels (:mod:`fastconv.threads`), the kernel is the
    faster one at every size (AMD EPYC Zen 4, 2 threads, two runs each):
    - cnn-deep's batch-1 shapes: 5.4-8.0 us against NumPy's 6.3-9.6;
    - batch 8: 7.4 and 10.9 us against 15.9 and 24.6;
    - whole evaluation passes, in one process and alternated: 0.97x the
      time at batch 1, 0.96-0.98x at batch 4 and 16."""

    how = "batch norm kernel"
    owns_output = True

    def __init__(self, layer, x, owned):
        self.name = layer.name
        self.arrays = (layer.params["gamma"], layer.params["beta"],
                       layer.buffers["running_mean"], layer.buffers["running_var"])
        self.eps = layer.eps
        self.kernel = ops.batch_norm_kernel(x, *self.arrays, self.eps, **layer._kernels())
        self.shape, self.dtype, self.in_place = x.shape, x.dtype, owned
        self.channels_shape = (x.shape[0], x.shape[1], math.prod(x.shape[2:]))  # (N, C, M)

    def allocate(self):
        return None if self.in_place else np.empty(self.shape, self.dtype)

    def run(self, x, own, slot):
        out = x if own is None else own
        shape = self.channels_shape
        self.kernel(x.reshape(shape), *self.arrays, self.eps, False, out.reshape(shape))
        return out


class _FlattenStep(_Step):
    """(N, d1, d2, ...) -> (N, d1*d2*...), a view of the plan's buffer."""

    how = "reshape"
    owns_output = None

    def __init__(self, name):
        self.name = name

    def run(self, x, own, slot):
        return x.reshape(x.shape[0], -1)


class _DenseStep(_Step):
    """x (N, in) @ w (in, out) + b (out,) into the plan's (N, out) buffer:
    the product of the Dense layer (:class:`fastconv.products.FixedProduct`;
    at batch 1 the row product on the kernels' threads, or BLAS's GEMV for
    a small layer), its checks made at the build (x is plan memory or the
    plan's C-contiguous input, w a plain array: :func:`_plain`). Its
    buffers: the output and the product's scratch."""

    how = "matmul"
    owns_output = True

    def __init__(self, layer, shape, dtype):
        self.name = layer.name
        self.b = layer.params["b"]
        self.product = products.FixedProduct(layer.params["w"], shape[0], threads.num_threads())
        self.shape, self.dtype = shape, dtype

    def allocate(self):
        return np.empty(self.shape, self.dtype), self.product.scratch()

    def run(self, x, own, slot):
        out, scratch = own
        self.product(x, out, scratch)
        out += self.b
        return out


class _LayerForward(_Step):
    """A model step the plan does not compile (a layer of yours, or arrays
    the kernels cannot take as they are): its own forward, in evaluation."""

    how = "layer forward"
    owns_output = False  # it may hand back its input

    def __init__(self, step):
        self.name = step.name
        self.step = step

    def run(self, x, own, slot):
        return np.ascontiguousarray(self.step.forward(x, False))
