"""Peak extra memory of each conv variant on the reference CNN's conv layers.

    python bench/peak_memory.py

Prints, per variant and direction, the peak bytes allocated during one call
beyond the arrays it returns (tracemalloc sees NumPy's buffers, which is
where every kernel's scratch space lives: im2col's columns, the vectorized
kernels' row and weight-gradient buffers). The inputs exist before the call
and are not counted. Memory, not time: safe to run on a busy machine.
"""
import tracemalloc

from fastconv.workloads import workloads


def extra_bytes(call):
    """Peak bytes allocated by ``call()`` minus the bytes of what it returns."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    arrays = result if isinstance(result, tuple) else (result,)
    return peak - sum(a.nbytes for a in arrays if a is not None)


def main():
    print(f"{'workload':28s} {'variant':20s} {'extra MB':>9s}")
    for work in workloads(networks=("cnn",), batches=(64,), op_names=("conv2d", "conv2d_backward")):
        for backend, algorithm in work.variants():
            call = work.call(backend, algorithm)
            call()  # compile and settle before measuring
            print(f"{work.label:28s} {backend + '/' + algorithm:20s} {extra_bytes(call) / 1e6:9.3f}")


if __name__ == "__main__":
    main()
