"""Looking inside a model: its first conv layer, the feature maps of an
image, the confusion matrix and the misclassified digits of a test set.

Library functions below every command: ``fastconv-train`` prints the
confusion matrix, ``fastconv-viz`` draws these, the web demo serves them,
and a notebook can call them directly. Every pass here runs in evaluation
mode, which keeps nothing on the layers, so threads may call them on one
model at once.
"""
from __future__ import annotations

import numpy as np

from fastconv.layers import AvgPool2D, Conv2D, MaxPool2D

MAP_LAYERS = (Conv2D, MaxPool2D, AvgPool2D)
"""The layers whose outputs are images worth showing (feature maps)."""


def first_conv(model) -> Conv2D:
    """The model's first Conv2D layer; ValueError if it has none."""
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            return layer
    raise ValueError("the model has no Conv2D layer: filters and feature maps need a CNN (e.g. cnn, lenet5)")


def feature_maps(model, image) -> list:
    """``[(layer, maps)]`` for each conv and pool layer: its output (C, H, W)
    for one image (input_shape) in evaluation mode."""
    image = np.asarray(image)
    if image.shape != model.input_shape:
        raise ValueError(f"feature_maps: image must have the model's input shape {model.input_shape}, "
                         f"got {image.shape}")
    out = image[None].astype(model.dtype)
    maps = []
    for layer in model.layers:
        out = layer.forward(out, training=False)
        if isinstance(layer, MAP_LAYERS):
            maps.append((layer, out[0]))
    if not maps:
        raise ValueError("the model has no conv or pooling layer: feature maps need a CNN (e.g. cnn, lenet5)")
    return maps


def confusion_matrix(labels, predicted, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true label, column = prediction."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def misclassified(probabilities, labels, images, count=12) -> dict:
    """The first ``count`` images a model gets wrong, given its class
    probabilities (N, K) for images (N, H, W) with true labels (N,):
    ``{"checked": N, "wrong": M, "digits": [{"index", "label", "predicted",
    "probability", "pixels"}]}`` with pixels (H, W) as nested lists."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    digits = [{"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
               "probability": float(probabilities[i, predicted[i]]),
               "pixels": np.asarray(images[i]).tolist()} for i in wrong[:count]]
    return {"checked": len(labels), "wrong": len(wrong), "digits": digits}

