"""The networks the trainer offers, by name, for (1, 28, 28) MNIST images.

Each returns logits for 10 classes (the loss applies the softmax).
``backend``/``algorithm`` go to every conv and pool layer.
"""
from __future__ import annotations

from fastconv.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
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


_BUILDERS = {"cnn": cnn, "lenet5": lenet5, "dense": dense, "logreg": logreg}
MODELS = tuple(_BUILDERS)


def build(name, *, backend="auto", algorithm="auto", seed=0) -> Sequential:
    """A fresh, seeded model by name (one of :data:`MODELS`)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    layers = _BUILDERS[name]({"backend": backend, "algorithm": algorithm})
    return Sequential(layers, input_shape=INPUT_SHAPE, seed=seed)
