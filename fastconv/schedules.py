"""Learning-rate schedules: the rate for each epoch, set by
:meth:`fastconv.model.Sequential.fit` before the epoch starts.

Epochs are numbered from 1, as in ``fit``. Each schedule holds its base rate,
so a run resumed from a checkpoint picks up the rate of its next epoch.
"""
from __future__ import annotations

import math
import numbers

from fastconv.integers import positive_int


def _number(schedule, what, value, minimum=0.0, strict=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
            value <= minimum if strict else value < minimum):
        raise ValueError(f"{schedule}: {what} must be a number {'>' if strict else '>='} {minimum:g}, "
                         f"got {value!r}")
    return float(value)


def _epoch(schedule, epoch):
    """``epoch`` as an int (epochs are numbered from 1)."""
    return positive_int(epoch, f"{schedule}: epoch")


class ConstantLR:
    """The same rate every epoch."""

    name = "constant"

    def __init__(self, lr):
        self.base_lr = _number("ConstantLR", "lr", lr)

    def lr(self, epoch: int) -> float:
        _epoch("ConstantLR", epoch)
        return self.base_lr


class StepLR:
    """The rate times ``gamma`` after every ``step_epochs`` epochs:
    ``lr * gamma ** ((epoch - 1) // step_epochs)``, as PyTorch's ``StepLR``."""

    name = "step"

    def __init__(self, lr, step_epochs, gamma=0.1):
        self.base_lr = _number("StepLR", "lr", lr)
        self.step_epochs = positive_int(step_epochs, "StepLR: step_epochs")
        self.gamma = _number("StepLR", "gamma", gamma)

    def lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** ((_epoch("StepLR", epoch) - 1) // self.step_epochs)


class CosineLR:
    """Half a cosine from ``lr`` in epoch 1 down towards ``min_lr`` after
    epoch ``epochs``: ``min_lr + (lr - min_lr) * (1 + cos(pi * (epoch - 1) /
    epochs)) / 2`` (PyTorch's ``CosineAnnealingLR`` stepped once per epoch);
    epochs past ``epochs`` keep ``min_lr``."""

    name = "cosine"

    def __init__(self, lr, epochs, min_lr=0.0):
        self.base_lr = _number("CosineLR", "lr", lr)
        self.epochs = positive_int(epochs, "CosineLR: epochs")
        self.min_lr = _number("CosineLR", "min_lr", min_lr, strict=False)
        if self.min_lr > self.base_lr:
            raise ValueError(f"CosineLR: min_lr {min_lr!r} is above lr {lr!r}")

    def lr(self, epoch: int) -> float:
        done = min(_epoch("CosineLR", epoch) - 1, self.epochs)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * done / self.epochs)) / 2


SCHEDULES = {cls.name: cls for cls in (ConstantLR, StepLR, CosineLR)}
"""Schedule classes by their command-line name."""
