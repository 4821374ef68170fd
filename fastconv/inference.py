"""Thread-safe inference on one loaded model: what ``fastconv-serve`` calls.

Layers keep per-call state for their backward pass (the input, pooling
masks), so two threads running ``forward`` on one model at once would
overwrite each other's. :class:`LockedModel` runs every pass through one
lock and copies what it returns before releasing it. The numerics are the
model's own: :meth:`fastconv.model.Sequential.predict` and
:func:`fastconv.viz.feature_maps`.
"""
from __future__ import annotations

import threading

import numpy as np

from fastconv.layers import AvgPool2D, Conv2D, MaxPool2D
from fastconv.viz import feature_maps, first_conv

MAP_LAYERS = (Conv2D, MaxPool2D, AvgPool2D)
"""The layers whose outputs are images worth showing (feature maps)."""


class LockedModel:
    """A :class:`fastconv.model.Sequential` for one-channel images
    (input_shape (1, H, W)) that many threads may call at once.

    Building it runs one forward pass on a blank image, so ``auto`` picks
    its kernels for batch 1 now rather than during the first request.
    """

    def __init__(self, model):
        if len(model.input_shape) != 3 or model.input_shape[0] != 1:
            raise ValueError(f"the model takes input of shape {model.input_shape}; "
                             "only one-channel images (1, H, W) can be drawn")
        self.model = model
        self.has_maps = any(isinstance(layer, MAP_LAYERS) for layer in model.layers)
        self._lock = threading.Lock()
        self.feature_maps(np.zeros(self.image_shape, np.float32))

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images the model takes."""
        return self.model.input_shape[1:]

    def predict(self, images) -> np.ndarray:
        """Class probabilities (N, K) for images (N, H, W) in [0, 1]."""
        images = np.asarray(images)[:, None]  # (N, 1, H, W)
        with self._lock:
            return self.model.predict(images)

    def feature_maps(self, image) -> tuple[np.ndarray, list]:
        """For one image (H, W): its class probabilities (K,) and
        ``[(layer, maps)]``, the output (C, H', W') of each conv and pool
        layer (empty for a model without any)."""
        x = np.asarray(image)[None]  # (1, H, W): the model's per-sample input shape
        with self._lock:
            probabilities = self.model.predict(x[None])[0]
            maps = [(layer, out.copy()) for layer, out in feature_maps(self.model, x)] if self.has_maps else []
        return probabilities, maps

    def first_filters(self):
        """``(layer, w)``: the first conv layer and its weights (F, C, KH, KW),
        or None for a model without a conv layer. Weights never change while
        serving, so no lock is needed."""
        try:
            conv = first_conv(self.model)
        except ValueError:  # no conv layer
            return None
        return conv, conv.params["w"].copy()

    def misclassified(self, images, labels, count=12) -> dict:
        """The first ``count`` of images (N, H, W) the model gets wrong:
        ``{"checked": N, "wrong": M, "digits": [{"index", "label",
        "predicted", "probability", "pixels"}]}`` with pixels (H, W) lists."""
        labels = np.asarray(labels)
        probabilities = self.predict(images)
        predicted = probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != labels)
        digits = [{"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
                   "probability": float(probabilities[i, predicted[i]]),
                   "pixels": images[i].tolist()} for i in wrong[:count]]
        return {"checked": len(labels), "wrong": len(wrong), "digits": digits}
