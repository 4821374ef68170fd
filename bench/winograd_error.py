"""Float32 error of Winograd F(2x2, 3x3) and F(4x4, 3x3) on real MNIST
activations, beside the float32 GEMM, against a float64 direct convolution.

    python bench/winograd_error.py [--data-dir DIR] [--images 512]

For every 3x3 conv layer of cnn and cnn-deep (seeded, untrained weights:
He-normal, as training starts), the layer's input is what the model
computes from the first ``--images`` test digits. Each variant runs in
float32 (Cython, one tile size forced at a time) on the forward pass and on
the backward pass (dx and dw, with a standard-normal dy); the reference runs
in float64. Printed: the largest and the RMS difference, each relative to
the largest magnitude of the reference (the measure the tests bound, at
1e-4). Accuracy, not time: safe on a busy machine.
"""
import argparse
import importlib

import numpy as np

from fastconv import isa, models, ops
from fastconv.data import load_dataset
from fastconv.layers import Conv2D

REFERENCE = {"backend": "numpy", "algorithm": "reference"}


def conv_inputs(model_name, x):
    """(layer name, layer, its input) for every 3x3 conv of the model, as
    the model's evaluation forward pass reaches it from x (N, 1, 28, 28)."""
    found = []
    for layer in models.build(model_name, backend="numpy", algorithm="reference").layers:
        if isinstance(layer, Conv2D) and layer.kernel_size == (3, 3):
            found.append((layer.name, layer, x))
        x = layer.forward(x, training=False)
    return found


def relative(got, want):
    """(max, RMS) of got - want, relative to the largest |want|."""
    scale = np.abs(want).max()
    diff = got.astype(np.float64) - want
    return np.abs(diff).max() / scale, np.sqrt(np.mean(diff ** 2)) / scale


VARIANTS = {"gemm": ("gemm", None), "winograd F(2x2)": ("winograd", 2), "winograd F(4x4)": ("winograd", 4)}
"""Row label: (algorithm, tile size forced, or None)."""


def conv_results(layer, x, dy, dtype, variant):
    """(y, dx, dw) of the layer's conv on x with dy, everything in dtype."""
    x, w, b, dy = (a.astype(dtype) for a in (x, layer.params["w"], layer.params["b"], dy))
    geometry = (layer.stride, layer.padding)
    y = ops.conv2d(x, w, b, *geometry, **variant)
    dx, dw, _ = ops.conv2d_backward(dy, x, w, *geometry, **variant)
    return y, dx, dw


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="where the MNIST files are (default: fastconv's cache)")
    parser.add_argument("--images", type=int, default=512, help="test digits to run (default 512)")
    args = parser.parse_args(argv)
    digits = load_dataset("mnist", args.data_dir, progress=False).x_test[:args.images]
    kernels = importlib.import_module(isa.module_name(isa.chosen(), "conv_cython"))
    choose_tile = kernels._tile_size
    rng = np.random.default_rng(0)
    print(f"{'layer':<16} {'variant':<16} {'y max':>9} {'y RMS':>9} {'dx max':>9} {'dx RMS':>9} "
          f"{'dw max':>9} {'dw RMS':>9}")
    try:
        for model_name in ("cnn", "cnn-deep"):
            for name, layer, x in conv_inputs(model_name, digits):
                dy = rng.standard_normal((x.shape[0],) + layer.output_shape(x.shape[1:]))
                exact = conv_results(layer, x, dy, np.float64, REFERENCE)
                for label, (algorithm, tile) in VARIANTS.items():
                    kernels._tile_size = choose_tile if tile is None else (lambda oh, ow, m=tile: m)
                    got = conv_results(layer, x, dy, np.float32, {"backend": "cython", "algorithm": algorithm})
                    errors = [relative(g, want) for g, want in zip(got, exact)]
                    print(f"{model_name + '.' + name:<16} {label:<16} "
                          + " ".join(f"{e:9.2e}" for pair in errors for e in pair))
    finally:
        kernels._tile_size = choose_tile


if __name__ == "__main__":
    main()
