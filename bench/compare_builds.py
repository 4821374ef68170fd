"""Two builds of a Cython kernel module timed against each other in one
process, call by call alternated, so that their ratio holds on a machine
whose speed drifts (on a shared virtual machine the same training step
took 19 ms in one run and 27 ms in another, minutes apart).

    python bench/compare_builds.py OLD.so NEW.so [--module conv_cython]
                                   [--algorithm winograd] [--rounds 60]

OLD.so and NEW.so are two files of one module of the build this CPU runs
(fastconv.isa): for instance a copy of
fastconv/kernels/avx512/conv_cython.*.so saved before a change to
kernels/, and the file rebuilt after it. Both are loaded and each op call
or training step runs with one table of kernels, then the other, the order
swapped every round. For cnn-deep's 3x3 layers at batch 64 (conv2, conv3:
forward and backward; block 2 fused: forward and backward) with
``--algorithm`` (through :mod:`fastconv.ops`, so its validation and
padding included), then for training steps of cnn and cnn-deep at batch 64
(``auto``), it prints each build's median time, the median of the
per-round ratios new/old, and whether the two builds' results were equal
bit for bit.
"""
import argparse
import importlib.util
import sys
import time

import numpy as np

from fastconv import cpu, isa, models, optim, registry
from winograd_backward import passes  # run as python bench/compare_builds.py: bench/ is on the path

FAMILIES = {"conv_cython": "conv", "pool_cython": "pool"}


def kernel_tables(paths, module):
    """{label: the registry's table of that file's kernels} for each path."""
    name = isa.module_name(isa.chosen(), module)
    tables = {}
    for label, path in paths.items():
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        sys.modules[name] = loaded
        tables[label] = registry.family_kernels.__wrapped__("cython", FAMILIES[module])
    return tables


def alternate(run, use, rounds):
    """({label: median seconds}, median new/old) of run() under each table."""
    times = {"old": [], "new": []}
    for r in range(rounds):
        for label in ("old", "new") if r % 2 else ("new", "old"):
            use(label)
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    old, new = np.array(times["old"]), np.array(times["new"])
    return {"old": np.median(old), "new": np.median(new)}, np.median(new / old)


def op_cases(algorithm):
    """{name: call} of cnn-deep's 3x3 layers, forward and backward, through
    ops with the Cython backend: the calls bench/winograd_backward.py times."""
    layers = passes("cython", algorithm)
    return {f"{short} {direction}": layers[layer][direction]
            for layer, short in (("cnn-deep conv2", "conv2"), ("cnn-deep conv3", "conv3"),
                                 ("cnn-deep block 2", "block 2 fused"))
            for direction in ("forward", "backward")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--module", default="conv_cython", choices=sorted(FAMILIES))
    parser.add_argument("--algorithm", default="winograd")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    tables = kernel_tables({"old": args.old, "new": args.new}, args.module)
    in_use = ["new"]
    family_kernels = registry.family_kernels

    def kernels(backend, family):
        if backend == "cython" and family == FAMILIES[args.module]:
            return tables[in_use[0]]
        return family_kernels(backend, family)

    def use(label):
        in_use[0] = label

    registry.family_kernels = kernels
    print(f"{cpu.model_name()}, the {isa.chosen()} build, {args.rounds} rounds ({args.rounds * 2} for the steps): "
          "ms old, ms new, median of new/old per round")
    for name, run in op_cases(args.algorithm).items():
        results = {}
        for label in ("old", "new"):
            use(label)
            result = run()
            results[label] = result if isinstance(result, tuple) else (result,)
        same = all(np.array_equal(a, b) for a, b in zip(results["old"], results["new"]) if a is not None)
        medians, ratio = alternate(run, use, args.rounds)
        print(f"{name:24s} {medians['old'] * 1e3:8.3f} {medians['new'] * 1e3:8.3f}  {ratio:.3f}  "
              f"{'same bits' if same else 'DIFFERENT RESULTS'}")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    for model_name in ("cnn", "cnn-deep"):
        model, optimizer = models.build(model_name, seed=0), optim.SGD(lr=0.01, momentum=0.9)
        for label in ("old", "new") * 5:  # auto's choices and warm caches for both
            use(label)
            model.train_step(x, y, optimizer)
        medians, ratio = alternate(lambda: model.train_step(x, y, optimizer), use, args.rounds * 2)
        print(f"{model_name + ' training step':24s} {medians['old'] * 1e3:8.3f} {medians['new'] * 1e3:8.3f}  "
              f"{ratio:.3f}")


if __name__ == "__main__":
    main()
