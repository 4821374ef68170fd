"""Inference on one loaded model for many threads at once: what
``fastconv-serve`` calls.

An evaluation pass keeps nothing on the layers (see :mod:`fastconv.layers`),
so requests run in parallel on one model with no lock, each getting what
it would get alone. The numerics are the model's own:
:meth:`fastconv.model.Sequential.predict` and the functions of
:mod:`fastconv.inspection`.
"""
from __future__ import annotations

import numpy as np

from fastconv.inspection import MAP_LAYERS, feature_maps, first_conv, misclassified


class InferenceModel:
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
        self.feature_maps(np.zeros(self.image_shape, np.float32))

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images the model takes."""
        return self.model.input_shape[1:]

    def predict(self, images) -> np.ndarray:
        """Class probabilities (N, K) for images (N, H, W) in [0, 1]."""
        return self.model.predict(np.asarray(images)[:, None])  # (N, 1, H, W)

    def feature_maps(self, image) -> tuple[np.ndarray, list]:
        """For one image (H, W): its class probabilities (K,) and
        ``[(layer, maps)]``, the output (C, H', W') of each conv and pool
        layer (empty for a model without any)."""
        x = np.asarray(image)[None]  # (1, H, W): the model's per-sample input shape
        probabilities = self.model.predict(x[None])[0]
        maps = feature_maps(self.model, x) if self.has_maps else []
        return probabilities, maps

    def first_filters(self):
        """``(layer, w)``: the first conv layer and its weights (F, C, KH, KW),
        or None for a model without a conv layer."""
        try:
            conv = first_conv(self.model)
        except ValueError:  # no conv layer
            return None
        return conv, conv.params["w"].copy()

    def misclassified(self, images, labels, count=12) -> dict:
        """The first ``count`` of images (N, H, W) the model gets wrong (see
        :func:`fastconv.inspection.misclassified`)."""
        return misclassified(self.predict(images), labels, images, count)
