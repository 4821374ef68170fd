"""A stack of layers trained with softmax cross-entropy: build, train,
evaluate, predict, summarise, save and load.

One seeded ``numpy.random.Generator`` per model drives everything random
(initial weights, shuffling, dropout masks), in that order of use, so the
same seed gives the same run; checkpoints store its state so a resumed run
continues exactly where the saved one stopped.
"""
from __future__ import annotations

import collections
import dataclasses
import html
import sys
import time

import numpy as np
from tqdm.auto import tqdm  # a text bar on a terminal, a widget in Jupyter

from fastconv import checkpoint, fusion
from fastconv.changes import Watched
from fastconv.plan import Plan
from fastconv.layers import name_layers
from fastconv.losses import softmax, softmax_cross_entropy
from fastconv.optim import Adam
from fastconv.profile import NO_CLOCK
from fastconv.shapes import receptive_field as _axis_fields
from fastconv.state_dict import fastconv_params, torch_state_dict


@dataclasses.dataclass
class History:
    """Per-epoch training record, one list entry per epoch. ``seconds`` and
    ``images_per_second`` time the training pass only (not validation);
    ``lr`` is the optimiser's learning rate during the epoch; ``val_*`` hold
    None for epochs without validation data."""

    epoch: list = dataclasses.field(default_factory=list)
    loss: list = dataclasses.field(default_factory=list)
    accuracy: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    images_per_second: list = dataclasses.field(default_factory=list)
    lr: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    val_accuracy: list = dataclasses.field(default_factory=list)

    def append(self, logs: dict) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).append(logs[field.name])

    def extend(self, other: History) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).extend(getattr(other, field.name))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __len__(self):
        return len(self.epoch)


class Sequential(Watched):
    """Layers applied in order to images of shape ``input_shape`` (C, H, W)
    (per sample), producing logits (N, K).

    Parameters are created here, from ``seed``, in ``dtype``. Layer names are
    made unique Keras-style (``conv2d``, ``conv2d_1``, ...) and parameters
    are addressed as ``"<layer name>/<param>"``. Building checks that each
    layer accepts the previous one's output (ValueError naming the layer).

    With ``fuse`` (the default) each Conv2D -> ReLU -> MaxPool2D runs as one
    fused op (:mod:`fastconv.fusion`); the layers stay separate objects.
    Setting :attr:`fuse` later re-plans. Assigning a public attribute is
    noted as a change (:mod:`fastconv.changes`), for the compiled plans.
    """

    def __init__(self, layers, input_shape=(1, 28, 28), seed=0, dtype=np.float32, fuse=True):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        name_layers(self.layers)
        self.output_shapes = self._infer_shapes()
        for layer in self.layers:
            layer.initialize(self.rng, self.dtype)
        self._set_input_grad(False)
        self.fuse = fuse
        self._plans = collections.OrderedDict()  # batch size -> Plan, the most recently used last
        self._kept_for_backward = False  # whether layers hold a training pass's arrays
        self.optimizer = None
        self.epoch = 0
        self.history = History()

    # ------------------------------------------------------------ structure

    def _infer_shapes(self):
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        return shapes

    def _set_input_grad(self, input_grad):
        """Only layers with something trainable below them (or all, when the
        gradient with respect to the input is wanted) compute dx."""
        needed = input_grad
        for layer in self.layers:
            layer.needs_input_grad = needed
            needed = needed or bool(layer.params)

    @property
    def fuse(self) -> bool:
        """Whether Conv2D -> ReLU -> MaxPool2D chains run fused."""
        return self._fuse

    @fuse.setter
    def fuse(self, fuse: bool):
        self._fuse = bool(fuse)
        self.steps = fusion.plan(self.layers, self._fuse)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """``{"layer/param": array}``: the live arrays, updated in place."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients from the last backward pass, keyed like :attr:`params`."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.grads.items()}

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """``{"layer/buffer": array}``: the live non-trainable arrays (batch
        norm's running statistics)."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.buffers.items()}

    def param_count(self) -> int:
        """Trainable values."""
        return sum(layer.param_count() for layer in self.layers)

    def buffer_count(self) -> int:
        """Non-trainable values (running statistics)."""
        return sum(layer.buffer_count() for layer in self.layers)

    def receptive_fields(self) -> list:
        """Per layer, ``(rows, cols)``: the :class:`fastconv.shapes.FieldRow`
        of its output along H and W (field, jump, start in input pixels), or
        None from the first layer without a window (Flatten, Dense) on, and
        for every layer when the input is not an image (C, H, W)."""
        windows = []
        for layer in self.layers if len(self.input_shape) == 3 else ():
            if layer.window is None:
                break
            windows.append(layer.window)
        fields = []
        if windows:
            per_axis = [
                _axis_fields([(k[axis], s[axis], p[axis]) for k, s, p in windows], self.input_shape[1 + axis])
                for axis in (0, 1)
            ]
            fields = list(zip(*per_axis))
        return fields + [None] * (len(self.layers) - len(fields))

    def _summary_rows(self) -> list[tuple[str, str, str, str]]:
        """The summary table, a header and a row per layer: layer (type),
        output shape, values held, receptive field (H x W, or blank)."""
        rows = [("Layer (type)", "Output Shape", "Param #", "Receptive field")]
        rows.append(("input", _batch_shape(self.input_shape), "0", "1x1" if len(self.input_shape) == 3 else ""))
        for layer, shape, field in zip(self.layers, self.output_shapes, self.receptive_fields()):
            rows.append((f"{layer.name} ({type(layer).__name__})", _batch_shape(shape),
                         f"{layer.param_count() + layer.buffer_count():,}",
                         "" if field is None else f"{field[0].receptive_field}x{field[1].receptive_field}"))
        return rows

    def summary(self, file=None, receptive_field=False) -> None:
        """Print a Keras-style table: layer (type), output shape, values held
        (trainable and not, as Keras counts them), and with
        ``receptive_field`` the input pixels (H x W) one output pixel
        of the layer sees (blank once the image is flattened)."""
        file = sys.stdout if file is None else file
        rows = self._summary_rows()
        columns = 4 if receptive_field else 3
        widths = [max(len(row[i]) for row in rows) + 3 for i in range(columns)]
        rule = "-" * sum(widths)

        def line(row):
            return "".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

        trainable, fixed = self.param_count(), self.buffer_count()
        print(f'Model: "sequential" ({self.dtype.name})', file=file)
        print(rule, file=file)
        print(line(rows[0]), file=file)
        print("=" * sum(widths), file=file)
        for row in rows[1:]:
            print(line(row), file=file)
        print("=" * sum(widths), file=file)
        print(f"Total params: {trainable + fixed:,}", file=file)
        print(f"Trainable params: {trainable:,}", file=file)
        print(f"Non-trainable params: {fixed:,}", file=file)
        print(rule, file=file)

    def _repr_html_(self) -> str:
        """The :meth:`summary` table as HTML, receptive fields included:
        what Jupyter shows for a model at the end of a cell."""
        header, *rows = self._summary_rows()

        def row(cells, tag):
            # names and shapes read from the left, counts from the right (Jupyter aligns all right)
            return "<tr>" + "".join(f"<{tag} style='text-align: {align}'>{html.escape(cell)}</{tag}>"
                                    for cell, align in zip(cells, ("left", "left", "right", "left"))) + "</tr>"

        trainable, fixed = self.param_count(), self.buffer_count()
        caption = (f'Model: "sequential" ({self.dtype.name}): {trainable + fixed:,} params, '
                   f"{trainable:,} trainable, {fixed:,} non-trainable")
        return (f"<table><caption>{html.escape(caption)}</caption><thead>{row(header, 'th')}</thead>"
                f"<tbody>{''.join(row(cells, 'td') for cells in rows)}</tbody></table>")

    # ------------------------------------------------------- forward/backward

    def _as_input(self, x, what="x"):
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1 or len(x) == 0:
            raise ValueError(
                f"Sequential: {what} must have shape (N, {', '.join(map(str, self.input_shape))}) "
                f"with N >= 1, got {x.shape}"
            )
        return x.astype(self.dtype, copy=False)

    def forward(self, x, training=False) -> np.ndarray:
        """Logits (N, K) for images x (N, *input_shape), cast to the model
        dtype. In evaluation (the default) through the compiled plan for
        batch N (:meth:`compile`); in training layer by layer, each layer
        keeping what its backward pass needs."""
        x = self._as_input(x)
        if training:
            return self._forward(x, True, NO_CLOCK)
        if self._kept_for_backward:
            # Evaluation drops what the layers kept for backward (which is then
            # refused), as a pass through them does; the plan never touches them.
            self._kept_for_backward = False
            self._forward(np.zeros((1,) + self.input_shape, self.dtype), False, NO_CLOCK)
        return self.compile(len(x)).run(x)

    PLANS_KEPT = 4
    """Plans kept per model, one per batch size, the least recently used
    dropped first: evaluate and predict use two (the batch and the
    remainder), a server a few."""

    def compile(self, batch) -> Plan:
        """The compiled evaluation pass (:class:`fastconv.plan.Plan`) for
        batches of ``batch`` images, (batch, *input_shape) -> logits (batch,
        K): built on first use, then kept (the last :attr:`PLANS_KEPT`
        batch sizes). It follows the model: changed weights, layers or
        steps make it rebuild itself before its next run."""
        plans = self._plans
        plan = plans.get(batch)
        if plan is None:
            plan = plans[batch] = Plan(self, batch)
            while len(plans) > self.PLANS_KEPT:
                try:
                    plans.popitem(last=False)
                except KeyError:  # another thread emptied it meanwhile
                    break
        else:
            try:
                plans.move_to_end(batch)
            except KeyError:  # another thread dropped it meanwhile; this one still runs it
                pass
        return plan

    def _forward(self, out, training, clock):
        self._kept_for_backward = self._kept_for_backward or bool(training)
        for step in self.steps:
            out = step.forward(out, training)
            clock.lap(step.name, "forward")
        return out

    def backward(self, dlogits, *, input_grad=False):
        """Back-propagate dlogits (N, K) through the last training forward pass, filling
        every layer's ``grads``. Returns the gradient with respect to the
        input if ``input_grad`` (else None, and the first layers skip it)."""
        return self._backward(dlogits, input_grad, NO_CLOCK)

    def _backward(self, grad, input_grad, clock):
        self._set_input_grad(input_grad)
        for step in reversed(self.steps):
            grad = step.backward(grad)
            clock.lap(step.name, "backward")
            if grad is None:  # nothing below this step is trained
                break
        return grad

    def train_step(self, x, y, optimizer, clock=NO_CLOCK) -> tuple[float, int]:
        """One optimisation step on a batch; returns (mean loss, correct count).
        ``clock`` (from :meth:`fastconv.profile.StepProfile.begin`) times its parts."""
        x = self._as_input(x)
        clock.lap("data", "data")
        logits = self._forward(x, True, clock)
        loss, dlogits = softmax_cross_entropy(logits, y)
        correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        clock.lap("loss", "loss")
        self._backward(dlogits, False, clock)
        optimizer.step(self.params, self.grads)
        clock.lap("optimizer", "optimizer")
        return loss, correct

    # ---------------------------------------------------------------- training

    def _as_labels(self, x, y, what):
        y = np.asarray(y)
        if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
            raise ValueError(
                f"Sequential: {what} must be integer labels of shape ({x.shape[0]},), "
                f"got {y.dtype} {y.shape}"
            )
        return y

    def _batches(self, n, batch_size, shuffle):
        """Index arrays (shuffled, from the model's generator) or slices."""
        if shuffle:
            order = self.rng.permutation(n)
            return [order[i : i + batch_size] for i in range(0, n, batch_size)]
        return [slice(i, i + batch_size) for i in range(0, n, batch_size)]

    def fit(self, x, y, epochs=1, batch_size=64, optimizer=None, validation_data=None,
            shuffle=True, verbose=True, on_epoch_end=None, initial_epoch=0, profile=None,
            augment=None, lr_schedule=None) -> History:
        """Train with mini-batch softmax cross-entropy.

        x: (N, *input_shape) images (any real dtype, already scaled; cast to
        the model dtype once), y: (N,) integer labels. Epochs are numbered as
        in Keras: this call runs epochs ``initial_epoch + 1 .. epochs``
        (resume with ``initial_epoch=model.epoch``). ``optimizer`` defaults to
        the model's current one, else ``Adam()``. After each epoch
        :attr:`epoch` and :attr:`history` are updated and then
        ``on_epoch_end(epoch, logs)`` is called (logs: this epoch's History
        entries), which is where a checkpoint belongs. A KeyboardInterrupt
        propagates unchanged: the progress bar is closed, :attr:`epoch` and
        :attr:`history` keep the last completed epoch, while the weights in
        memory are mid-epoch, so the consistent state to keep is the last
        checkpoint written by ``on_epoch_end``. A
        :class:`fastconv.profile.StepProfile` given as ``profile`` times the
        parts of every step.

        ``augment`` (a :class:`fastconv.augment.RandomAffine`, or None)
        transforms every training batch anew with the model's generator, so a
        seed still repeats the run; it needs image input (C, H, W).
        ``lr_schedule`` (from :mod:`fastconv.schedules`, or None for the
        optimiser's own rate) sets the optimiser's learning rate at the start
        of each epoch.

        Returns the History of this call (also appended to :attr:`history`).
        """
        x = self._as_input(x)
        y = self._as_labels(x, y, "y")
        for name, value, minimum in (("batch_size", batch_size, 1), ("epochs", epochs, 1),
                                     ("initial_epoch", initial_epoch, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"fit: {name} must be an int >= {minimum}, got {value!r}")
        if validation_data is not None:
            x_val, y_val = validation_data
            x_val = self._as_input(x_val, "validation x")
            y_val = self._as_labels(x_val, y_val, "validation y")
        if augment is not None and len(self.input_shape) != 3:
            raise ValueError(f"fit: augment moves images (C, H, W); this model takes {self.input_shape}")
        if optimizer is not None:
            self.optimizer = optimizer
        elif self.optimizer is None:
            self.optimizer = Adam()
        history = History()
        n = x.shape[0]
        for epoch in range(initial_epoch + 1, epochs + 1):
            if lr_schedule is not None:
                self.optimizer.lr = lr_schedule.lr(epoch)
            batches = self._batches(n, batch_size, shuffle)
            loss_sum, correct, seen = 0.0, 0, 0
            start = time.perf_counter()
            with tqdm(total=n, desc=f"epoch {epoch}/{epochs}", unit="img", disable=not verbose,
                      leave=True, dynamic_ncols=True) as bar:
                for index in batches:
                    clock = NO_CLOCK if profile is None else profile.begin()
                    xb, yb = x[index], y[index]
                    if augment is not None:
                        xb = augment(xb, self.rng)
                    loss, batch_correct = self.train_step(xb, yb, self.optimizer, clock)
                    if profile is not None:
                        profile.end(len(yb))
                    loss_sum += loss * len(yb)
                    correct += batch_correct
                    seen += len(yb)
                    bar.update(len(yb))
                    bar.set_postfix(lr=f"{self.optimizer.lr:.3g}", loss=f"{loss_sum / seen:.4f}",
                                    acc=f"{correct / seen:.4f}",
                                    img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
                seconds = time.perf_counter() - start
                logs = {"epoch": epoch, "loss": loss_sum / n, "accuracy": correct / n,
                        "seconds": seconds, "images_per_second": n / seconds, "lr": self.optimizer.lr,
                        "val_loss": None, "val_accuracy": None}
                if validation_data is not None:
                    logs["val_loss"], logs["val_accuracy"] = self.evaluate(x_val, y_val)
                    bar.set_postfix(lr=f"{self.optimizer.lr:.3g}", loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.4f}",
                                    img_s=f"{logs['images_per_second']:.0f}",
                                    val_loss=f"{logs['val_loss']:.4f}", val_acc=f"{logs['val_accuracy']:.4f}")
            self.epoch = epoch
            history.append(logs)
            self.history.append(logs)
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
        return history

    def evaluate(self, x, y, batch_size=256) -> tuple[float, float]:
        """(mean loss, accuracy) over x (N, *input_shape) with labels y (N,)."""
        x = self._as_input(x)
        y = self._as_labels(x, y, "y")
        loss_sum, correct = 0.0, 0
        for i in range(0, x.shape[0], batch_size):
            logits, yb = self.forward(x[i : i + batch_size]), y[i : i + batch_size]
            loss_sum += softmax_cross_entropy(logits, yb)[0] * len(yb)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        return loss_sum / x.shape[0], correct / x.shape[0]

    def predict(self, x, batch_size=256) -> np.ndarray:
        """Class probabilities (N, K) for images x (N, *input_shape)."""
        x = self._as_input(x)
        return np.concatenate([softmax(self.forward(x[i : i + batch_size]))
                               for i in range(0, x.shape[0], batch_size)])

    # ------------------------------------------------------------ checkpoints

    def save(self, path) -> None:
        """Write a checkpoint of this model to ``path`` (.npz): architecture,
        weights, optimiser state, epoch, history and generator state; see
        :mod:`fastconv.checkpoint` for the format. Written under a temporary
        name and renamed, so an interrupted save leaves the previous file."""
        checkpoint.write(path, checkpoint.Checkpoint.of(self))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as PyTorch names them for the equivalent
        ``torch.nn.Sequential`` (``"0.weight"``, ``"0.bias"``, ...; Linear
        weights (out, in)): copies, see :mod:`fastconv.state_dict`."""
        return torch_state_dict(checkpoint.ModelDescription.of(self))

    def load_state_dict(self, mapping, strict=True) -> None:
        """Copy weights named and laid out as :meth:`state_dict` gives them
        (a PyTorch model's ``state_dict()`` converted to NumPy, a safetensors
        file) into this model, cast to its dtype. With ``strict`` the keys
        must be exactly this model's. Raises
        :class:`fastconv.state_dict.InteropError` naming each missing,
        unexpected, mis-shaped or non-float key; the model is unchanged then."""
        arrays = {**self.params, **self.buffers}
        for name, value in fastconv_params(checkpoint.ModelDescription.of(self), mapping, strict).items():
            arrays[name][...] = value

    @classmethod
    def load(cls, path, *, backend=None, algorithm=None) -> Sequential:
        """Rebuild a model saved by :meth:`save`, with its optimiser
        (:attr:`optimizer`, None if it had none), :attr:`epoch`,
        :attr:`history` and generator state. ``backend``/``algorithm``, when
        given, replace the saved ones in every conv, pool and batch norm layer. Raises
        :class:`fastconv.checkpoint.CheckpointError` (a ValueError naming
        the file and the problem) for anything but a sound checkpoint."""
        return checkpoint.restore(path, cls, backend=backend, algorithm=algorithm)


def _batch_shape(shape) -> str:
    return "(" + ", ".join(["None"] + [str(d) for d in shape]) + ")"
