"""The networks the trainer offers, by name, for (1, 28, 28) MNIST images.

Each returns logits for 10 classes (the loss applies the softmax).
``backend``/``algorithm`` go to every conv, pool and batch norm layer
(batch norm runs ``auto`` for a conv algorithm it does not have).
"""
from __future__ import annotations

from fastconv.layers import (AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                             ReLU)
from fastconv.model import Sequential

INPUT_SHAPE = (1, 28, 28)
CLASSES = 10


def cnn(kernels):
    """The reference CNN (225,034 parameters): two 3x3 conv + 2x2 max-pool
    stages (32, 64 filters), dense 128 with dropout 0.5, dense 10."""
    return [
        Conv2D(1, 32, 3, **kernels), ReLU(), MaxPool2D(2, **kernels),     # 32x26x26 -> 32x13x13
        Conv2D(32, 64, 3, **kernels), ReLU(), MaxPool2D(2, **kernels),    # 64x11x11 -> 64x5x5
        Flatten(), Dense(64 * 5 * 5, 128), ReLU(), Dropout(0.5),
        Dense(128, CLASSES),
    ]


def cnn_deep(kernels, batch_norm=True):
    """The optimised CNN (897,610 trainable parameters with batch norm):
    three 3x3 "same" convs with 32, 64 and 128 filters, a 2x2 max-pool after
    the first two, batch norm after each conv block and after the dense 128,
    dropout 0.5 before the dense 10. ``batch_norm=False`` leaves the batch
    norm layers out (for measuring what they add)."""
    def norm(layer):
        return [layer] if batch_norm else []

    return [
        Conv2D(1, 32, 3, padding="same", **kernels), ReLU(), MaxPool2D(2, **kernels),   # 32x28x28 -> 32x14x14
        *norm(BatchNorm2D(32, **kernels)),
        Conv2D(32, 64, 3, padding="same", **kernels), ReLU(), MaxPool2D(2, **kernels),  # 64x14x14 -> 64x7x7
        *norm(BatchNorm2D(64, **kernels)),
        Conv2D(64, 128, 3, padding="same", **kernels), ReLU(), *norm(BatchNorm2D(128, **kernels)),  # 128x7x7
        Flatten(), Dense(128 * 7 * 7, 128), *norm(BatchNorm(128, **kernels)), ReLU(), Dropout(0.5),
        Dense(128, CLASSES),
    ]


def lenet5(kernels):
    """LeNet-5 without padding (44,426 parameters): 5x5 conv + 2x2 average
    pooling twice (6, 16 filters), dense 120, 84, 10."""
    return [
        Conv2D(1, 6, 5, **kernels), ReLU(), AvgPool2D(2, **kernels),      # 6x24x24 -> 6x12x12
        Conv2D(6, 16, 5, **kernels), ReLU(), AvgPool2D(2, **kernels),     # 16x8x8 -> 16x4x4
        Flatten(), Dense(16 * 4 * 4, 120), ReLU(), Dense(120, 84), ReLU(),
        Dense(84, CLASSES),
    ]


def dense(kernels):
    """One hidden layer of 128 (101,770 parameters)."""
    return [Flatten(), Dense(28 * 28, 128), ReLU(), Dense(128, CLASSES)]


def logreg(kernels):
    """Multinomial logistic regression on the pixels (7,850 parameters)."""
    return [Flatten(), Dense(28 * 28, CLASSES)]


_BUILDERS = {"cnn": cnn, "cnn-deep": cnn_deep, "lenet5": lenet5, "dense": dense, "logreg": logreg}
MODELS = tuple(_BUILDERS)
WITH_BATCH_NORM = ("cnn-deep",)
"""The models whose batch norm layers ``build(..., batch_norm=False)`` drops."""


def build(name, *, backend="auto", algorithm="auto", seed=0, batch_norm=True) -> Sequential:
    """A fresh, seeded model by name (one of :data:`MODELS`); ``batch_norm``
    False is only for the models in :data:`WITH_BATCH_NORM`."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    kernels = {"backend": backend, "algorithm": algorithm}
    if name in WITH_BATCH_NORM:
        layers = _BUILDERS[name](kernels, batch_norm=batch_norm)
    elif not batch_norm:
        raise ValueError(f"model {name!r} has no batch norm to leave out (only {', '.join(WITH_BATCH_NORM)})")
    else:
        layers = _BUILDERS[name](kernels)
    return Sequential(layers, input_shape=INPUT_SHAPE, seed=seed)
