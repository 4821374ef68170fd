"""Memory of one inference at batch 256: fastconv's compiled plan beside
onnxruntime, on the same model.

    python bench/inference_memory.py [cnn cnn-deep ...]   # default: cnn cnn-deep

Each (model, engine) runs in a fresh Python process (Linux: it reads
/proc/self/status and resets the peak with /proc/self/clear_refs), after the
model and, for onnxruntime, its session exist, and prints

- ``held MB``: resident memory (RSS) the first call leaves behind, what the
  engine keeps between calls: fastconv's plan buffers (and the arrays built
  along with it), onnxruntime's arena; ``auto``'s choices are made before,
  on another copy of the model, so no timing run counts;
- ``call peak MB``: the RSS high-water mark during a later call above the
  RSS before it: the memory one call touches beyond what is kept;
- ``NumPy MB`` (fastconv only): the peak bytes NumPy allocates during that
  later call, as tracemalloc sees them (the kernels' scratch buffers, such
  as gemm's per-thread ones, the logits copied out, batch norm's scales),
  none of which outlives the call.

RSS counts pages touched, so freed memory a library keeps for reuse is not
counted again; compare the engines within one run. Memory, not time: safe on
a busy machine.
"""
import subprocess
import sys
import tracemalloc

import numpy as np

BATCH = 256
ENGINES = ("fastconv", "onnxruntime")


def rss_bytes(field="VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak():
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS


def call_growth(call) -> tuple[int, int]:
    """(RSS kept after ``call()``, RSS peak during it), both above the RSS before."""
    reset_peak()
    before = rss_bytes()
    call()
    return rss_bytes() - before, rss_bytes("VmHWM") - before


def measure(model_name, engine) -> list[float]:
    from fastconv import models

    x = np.random.default_rng(0).random((BATCH,) + models.INPUT_SHAPE, dtype=np.float32)
    if engine == "fastconv":
        models.build(model_name, seed=1).forward(x)  # auto's choices, made on another model
        model = models.build(model_name, seed=0)
        call = lambda: model.forward(x)  # noqa: E731
    else:
        call = onnxruntime_call(models.build(model_name, seed=0))
    held, _ = call_growth(call)
    _, peak = call_growth(call)
    sizes = [held, peak]
    if engine == "fastconv":
        tracemalloc.start()
        call()
        sizes.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return [size / 1e6 for size in sizes]


def onnxruntime_call(model):
    import tempfile

    import onnxruntime

    from fastconv import interop, threads

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/model.onnx"
        interop.save_onnx(model, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads.num_threads()
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((BATCH,) + model.input_shape, dtype=np.float32)
    return lambda: session.run(["logits"], {"x": x})


def main(model_names):
    print(f"batch {BATCH}: {'model':<9} {'engine':<12} {'held MB':>8} {'call peak MB':>13} {'NumPy MB':>9}")
    for name in model_names:
        for engine in ENGINES:
            result = subprocess.run([sys.executable, __file__, "--one", name, engine], capture_output=True,
                                    text=True)
            if result.returncode != 0:
                print(f"{name} {engine}: failed: {result.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            sizes = [float(v) for v in result.stdout.split()] + [None]
            numpy = "" if sizes[2] is None else f"{sizes[2]:.2f}"
            print(f"{'':9}{name:<9} {engine:<12} {sizes[0]:>8.2f} {sizes[1]:>13.2f} {numpy:>9}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(*measure(*sys.argv[2:4]))
    else:
        main(sys.argv[1:] or ["cnn", "cnn-deep"])
