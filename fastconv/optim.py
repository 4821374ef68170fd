"""Optimisers: update parameter arrays in place from their gradients.

``step(params, grads)`` takes two dicts with the same keys (stable names such
as ``"conv2d/w"``); per-parameter state (momentum, moments) is kept under the
same keys, so ``state_dict()`` can be saved and loaded into a fresh optimiser
to resume training exactly. Updates stay in each parameter's dtype.

One compiled call (:mod:`fastconv.kernels.optim_numba`) updates every
parameter of a dtype, its threads sharing the values out, rather than a
chain of NumPy expressions per parameter, each of which made a temporary
array.

Weight decay is L2 regularisation added to the gradient (``g + wd * p``),
applied to every parameter given, biases included, as PyTorch's SGD and Adam
(not AdamW's decoupled decay).
"""
from __future__ import annotations

import math

import numpy as np

from fastconv.kernels import optim_numba
from fastconv.waiting import FirstCallNotice

_COMPILING = "compiling Numba's {} update for this CPU, once (Numba caches it on disk for later runs)"
_sgd_update = FirstCallNotice(optim_numba.sgd_update, _COMPILING.format("SGD"))
_adam_update = FirstCallNotice(optim_numba.adam_update, _COMPILING.format("Adam"))


class Optimizer:
    """Shared bookkeeping: step count, per-parameter state slots, checkpoints."""

    slot_names: tuple[str, ...] = ()

    def __init__(self, lr, weight_decay):
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        # slots[slot][param name] -> array shaped like the parameter
        self.slots: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.slot_names}

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable)."""
        raise NotImplementedError

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every array in ``params`` in place from ``grads`` (same keys)."""
        if params.keys() != grads.keys():
            raise ValueError(
                f"{type(self).__name__}.step: params and grads must have the same keys, got "
                f"{sorted(params)} and {sorted(grads)}"
            )
        names_by_dtype: dict[np.dtype, list[str]] = {}
        for name, p in params.items():
            if grads[name].shape != p.shape:
                raise ValueError(
                    f"{type(self).__name__}.step: grad {name!r} has shape {grads[name].shape}, "
                    f"parameter has {p.shape}"
                )
            if not p.flags.c_contiguous:
                raise ValueError(f"{type(self).__name__}.step: parameter {name!r} is not C-contiguous")
            if p.dtype.kind != "f":
                raise ValueError(f"{type(self).__name__}.step: parameter {name!r} is {p.dtype}, not a float array")
            names_by_dtype.setdefault(p.dtype, []).append(name)
        for slot in self.slot_names:
            for name, p in params.items():
                state = self._slot(slot, name, p)
                if state.shape != p.shape or state.dtype != p.dtype or not state.flags.c_contiguous:
                    # loaded by load_state_dict for another model: the compiled
                    # update would run past its end
                    raise ValueError(
                        f"{type(self).__name__}.step: state {slot!r} of {name!r} is {state.dtype} "
                        f"{state.shape}, the parameter {p.dtype} {p.shape}"
                    )
        self.steps += 1
        for dtype, names in names_by_dtype.items():
            self._update(dtype.type, names, tuple(params[k].reshape(-1) for k in names),
                         tuple(np.ascontiguousarray(grads[k], dtype=dtype).reshape(-1) for k in names))

    def _update(self, scalar, names, ps, gs):
        """Update the flat parameters ps in place from their flat gradients gs
        (contiguous, of the parameters' dtype, whose scalar type is
        ``scalar``), weight decay included; ``names`` are their keys."""
        raise NotImplementedError

    def _slots(self, slot, names):
        """The state arrays ``slot`` of the named parameters, flat."""
        return tuple(self.slots[slot][name].reshape(-1) for name in names)

    def _slot(self, slot, name, p):
        """The state array ``slot`` of parameter ``name``, zeros at first."""
        table = self.slots[slot]
        if name not in table:
            table[name] = np.zeros_like(p)
        return table[name]

    def state_dict(self) -> dict:
        """``{"steps": int, "slots": {slot: {param name: array}}}`` (copies)."""
        return {
            "steps": self.steps,
            "slots": {slot: {k: v.copy() for k, v in table.items()} for slot, table in self.slots.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (arrays are copied)."""
        if set(state.get("slots", {})) != set(self.slot_names):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected slots {list(self.slot_names)}, "
                f"got {sorted(state.get('slots', {}))}"
            )
        self.steps = int(state["steps"])
        self.slots = {
            slot: {k: np.array(v) for k, v in table.items()} for slot, table in state["slots"].items()
        }


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum, as PyTorch:

        v <- momentum * v + g;   p <- p - lr * (g + momentum * v if nesterov else v)

    (plain ``p <- p - lr * g`` when momentum is 0).
    """

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, scalar, names, ps, gs):
        velocities = self._slots("velocity", names) if self.momentum else None
        _sgd_update(ps, gs, velocities, scalar(self.lr), scalar(self.momentum), self.nesterov,
                               scalar(self.weight_decay))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as PyTorch's ``Adam``:

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    slot_names = ("m", "v")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be > 0, got {eps!r}")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)

    def config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _update(self, scalar, names, ps, gs):
        beta1, beta2 = self.betas
        correction1 = 1 - beta1**self.steps
        correction2 = 1 - beta2**self.steps
        _adam_update(ps, gs, self._slots("m", names), self._slots("v", names),
                                scalar(self.lr / correction1), scalar(beta1), scalar(beta2),
                                scalar(self.eps), scalar(1 / math.sqrt(correction2)),
                                scalar(self.weight_decay))


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam)}
"""Optimiser classes by name, for restoring one from a checkpoint."""
