"""Data augmentation: every training batch seen through a fresh random
small move, turn and zoom, so the network learns digits, not their
positions in the frame.

Each image gets its own affine map, drawn uniformly: a translation of up to
``max_shift`` pixels along each axis (whole pixels, so a pure shift moves
pixels without blurring them), a rotation of up to ``max_rotation`` degrees
either way and a scale of 1 +/- ``max_scale``, about the image centre. The
output pixel p takes the input at the inverse map of p, by bilinear
interpolation; what comes from outside the frame is 0, MNIST's background
(the same zero fill as the translation test of ``fastconv-compare``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np


class RandomAffine:
    """Random translation, rotation and scale of images (N, C, H, W).

    ``augment(x, rng)`` returns a new array like x (same shape and dtype);
    all channels of an image move together. Draws come from ``rng`` (a
    ``numpy.random.Generator``), so a seeded model repeats its run.
    """

    def __init__(self, max_shift=2, max_rotation=10.0, max_scale=0.1):
        for what, value in (("max_shift", max_shift), ("max_rotation", max_rotation), ("max_scale", max_scale)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"RandomAffine: {what} must be a number >= 0, got {value!r}")
        if isinstance(max_shift, float) and not max_shift.is_integer():
            raise ValueError(f"RandomAffine: max_shift counts whole pixels, got {max_shift!r}")
        if max_rotation > 180:
            raise ValueError(f"RandomAffine: max_rotation is in degrees, at most 180, got {max_rotation!r}")
        if max_scale >= 1:
            raise ValueError(f"RandomAffine: max_scale must be below 1 (a scale of 1 - max_scale > 0), "
                             f"got {max_scale!r}")
        self.max_shift = int(max_shift)
        self.max_rotation = float(max_rotation)
        self.max_scale = float(max_scale)

    def __repr__(self):
        return (f"RandomAffine(max_shift={self.max_shift}, max_rotation={self.max_rotation:g}, "
                f"max_scale={self.max_scale:g})")

    def config(self) -> dict:
        return {"max_shift": self.max_shift, "max_rotation": self.max_rotation, "max_scale": self.max_scale}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"RandomAffine: expected images (N, C, H, W), got shape {x.shape}")
        n, _, h, w = x.shape
        shift = rng.integers(-self.max_shift, self.max_shift + 1, size=(n, 2))
        angle = np.radians(rng.uniform(-self.max_rotation, self.max_rotation, n))
        scale = rng.uniform(1 - self.max_scale, 1 + self.max_scale, n)
        return _warp(x, shift, angle, scale)


def _warp(x, shift, angle, scale):
    """x (N, C, H, W) moved by ``shift`` (N, 2) (rows down, columns right),
    turned by ``angle`` (N,) radians and scaled by ``scale`` (N,) about the
    centre: each output pixel reads the input at the inverse map, bilinearly,
    with zeros outside."""
    n, c, h, w = x.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = np.mgrid[0:h, 0:w]
    # output pixel p, relative to the centre and with the shift undone: (N, H*W, 2)
    p = np.stack([rows.ravel(), cols.ravel()], axis=1)[None] - centre - shift[:, None, :]
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    src_r = cos[:, None] * p[..., 0] - sin[:, None] * p[..., 1] + centre[0]
    src_c = sin[:, None] * p[..., 0] + cos[:, None] * p[..., 1] + centre[1]
    r0, c0 = np.floor(src_r).astype(np.intp), np.floor(src_c).astype(np.intp)
    fr, fc = (src_r - r0).astype(x.dtype), (src_c - c0).astype(x.dtype)
    # one zero border around each image makes every neighbour of an in-frame sample addressable
    padded = np.zeros((n, c, h + 2, w + 2), x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    r0, c0 = np.clip(r0 + 1, 0, h), np.clip(c0 + 1, 0, w)
    inside = (src_r > -1) & (src_r < h) & (src_c > -1) & (src_c < w)
    image = np.arange(n)[:, None]

    def at(r, c_):  # (N, C, H*W): the padded images at rows r, columns c_ (N, H*W)
        return padded[image, :, r, c_].transpose(0, 2, 1)

    out = (at(r0, c0) * ((1 - fr) * (1 - fc))[:, None] + at(r0, c0 + 1) * ((1 - fr) * fc)[:, None]
           + at(r0 + 1, c0) * (fr * (1 - fc))[:, None] + at(r0 + 1, c0 + 1) * (fr * fc)[:, None])
    out *= inside[:, None]
    return out.reshape(n, c, h, w)
