"""Where a Winograd layer's backward pass spends its time next to its
forward pass, timed in one process, call by call alternated.

    python bench/winograd_backward.py [--backend cython] [--rounds 60]
                                      [--group-kb KB ...] [--tile M ...]

For each 3x3 layer of cnn and cnn-deep at batch 64 (the conv layers and
the fused conv -> ReLU -> max-pool blocks, through :mod:`fastconv.ops`
with ``algorithm="winograd"``, validation and padding included) it times
the forward pass, the backward pass, and the backward pass without dx
(the weight gradient alone, as a first layer's), and prints their medians
and the backward's and the weight gradient's over the forward's.

The issue's target is a backward of at most 1.6x the forward; the backward
does the forward's work twice over (dx runs the forward's steps in
reverse, dw the input's and the output gradient's transforms and products
as many and as large as the forward's: docs/concepts.md, section 19), so
the two ratios show which half is dearer.

``--group-kb`` times each call with the image groups of the kernels
(``fastconv.cpu.gemm_group_bytes``, half the L2 as shipped) set to each
size in turn, ``--tile`` with Winograd's tile size m forced to each of 2
and 4 (the kernel module's ``_tile_size`` replaced for the run; for
measuring only). Every setting is alternated within each round, the
order reversed every other round, so that a machine whose speed drifts
slows them alike.
"""
import argparse
import importlib
import time

import numpy as np

from fastconv import cpu, isa, ops, threads
from fastconv.kernels import conv_numba

# layer: (C, F, H = W, padding); batch 64
LAYERS = {
    "cnn conv2": (32, 64, 13, 0),
    "cnn-deep conv2": (32, 64, 14, 1),
    "cnn-deep conv3": (64, 128, 7, 1),
}
FUSED = {"cnn block 2": "cnn conv2", "cnn-deep block 2": "cnn-deep conv2"}
BATCH = 64


def passes(backend, algorithm="winograd"):
    """{layer: {"forward": fn, "backward": fn, "dw only": fn}} for every
    layer, each pass through ops with this backend and algorithm (also the
    calls bench/compare_builds.py times)."""
    rng = np.random.default_rng(0)
    kernels = {"backend": backend, "algorithm": algorithm}
    cases = {}
    for name, (c, f, size, pad) in LAYERS.items():
        x, w = rng.standard_normal((BATCH, c, size, size), np.float32), rng.standard_normal((f, c, 3, 3), np.float32)
        b = rng.standard_normal(f, np.float32)
        dy = rng.standard_normal((BATCH, f, size + 2 * pad - 2, size + 2 * pad - 2), np.float32)
        cases[name] = {
            "forward": lambda x=x, w=w, b=b, pad=pad: ops.conv2d(x, w, b, 1, pad, **kernels),
            "backward": lambda x=x, w=w, dy=dy, pad=pad: ops.conv2d_backward(dy, x, w, 1, pad, **kernels),
            "dw only": lambda x=x, w=w, dy=dy, pad=pad: ops.conv2d_backward(dy, x, w, 1, pad, compute_dx=False,
                                                                              **kernels),
        }
    for name, layer in FUSED.items():
        c, f, size, pad = LAYERS[layer]
        x, w = rng.standard_normal((BATCH, c, size, size), np.float32), rng.standard_normal((f, c, 3, 3), np.float32)
        b = rng.standard_normal(f, np.float32)
        y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, pad, backend="numpy", algorithm="reference")
        dy = rng.standard_normal(y.shape, np.float32)
        cases[name] = {
            "forward": lambda x=x, w=w, b=b, pad=pad: ops.conv2d_relu_maxpool2d(x, w, b, 1, pad, **kernels),
            "backward": lambda x=x, w=w, dy=dy, code=code, pad=pad: ops.conv2d_relu_maxpool2d_backward(
                dy, code, x, w, 1, pad, **kernels),
            "dw only": lambda x=x, w=w, dy=dy, code=code, pad=pad: ops.conv2d_relu_maxpool2d_backward(
                dy, code, x, w, 1, pad, compute_dx=False, **kernels),
        }
    return cases


def kernel_module(backend):
    """The module of the backend's Winograd kernels (whose ``_tile_size`` picks m)."""
    if backend == "numba":
        return conv_numba
    return importlib.import_module(isa.module_name(isa.chosen(), "conv_cython"))


def settings(module, group_kb, tiles):
    """[(label, apply)]: each setting to alternate, ``apply()`` putting it in force."""
    shipped_group, shipped_tile = cpu.gemm_group_bytes, module._tile_size

    def setting(kb, m):
        def apply():
            cpu.gemm_group_bytes = shipped_group if kb is None else (lambda: kb * 1024)
            module._tile_size = shipped_tile if m is None else (lambda oh, ow: m)

        parts = (f"group {kb} KB" if kb else "", f"m = {m}" if m else "")
        return ", ".join(part for part in parts if part) or "as shipped", apply

    return [setting(kb, m) for kb in group_kb or [None] for m in tiles or [None]]


def alternate(layer_passes, chosen, rounds):
    """{(setting, pass): median seconds}, every call of a round under each setting in turn."""
    times = {(label, name): [] for label, _ in chosen for name in layer_passes}
    for r in range(rounds):
        for label, apply in chosen if r % 2 else chosen[::-1]:
            apply()
            for name, run in layer_passes.items():
                start = time.perf_counter()
                run()
                times[label, name].append(time.perf_counter() - start)
    return {key: float(np.median(values)) for key, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cython", choices=("cython", "numba"))
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--group-kb", type=int, nargs="+", help="image group sizes to compare (KB)")
    parser.add_argument("--tile", type=int, nargs="+", choices=(2, 4), help="Winograd tile sizes to compare")
    args = parser.parse_args(argv)
    if args.rounds < 1 or any(kb < 1 for kb in args.group_kb or []):
        parser.error("--rounds and --group-kb must be >= 1")
    threads.apply()
    module = kernel_module(args.backend)
    shipped = cpu.gemm_group_bytes, module._tile_size
    chosen = settings(module, args.group_kb, args.tile)
    print(f"{cpu.model_name()}, {args.backend} (the {isa.chosen()} build), {threads.num_threads()} threads, "
          f"batch {BATCH}, {args.rounds} rounds: median ms")
    print(f"{'layer':18s} {'setting':22s} {'forward':>8s} {'backward':>9s} {'dw only':>8s} {'bwd/fwd':>8s} "
          f"{'dw/fwd':>7s}")
    try:
        for layer, layer_passes in passes(args.backend).items():
            for _, apply in chosen:  # first calls: Numba's compilation, first touch
                apply()
                for run in layer_passes.values():
                    run()
            medians = alternate(layer_passes, chosen, args.rounds)
            for label, _ in chosen:
                fwd, bwd, dw = (medians[label, name] for name in ("forward", "backward", "dw only"))
                print(f"{layer:18s} {label:22s} {fwd * 1e3:8.3f} {bwd * 1e3:9.3f} {dw * 1e3:8.3f} "
                      f"{bwd / fwd:8.2f} {dw / fwd:7.2f}")
    finally:
        cpu.gemm_group_bytes, module._tile_size = shipped


if __name__ == "__main__":
    main()
