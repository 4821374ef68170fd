# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Speed: the same convolution, computed several ways
#
# Every variant of fastconv's convolution computes the same numbers; they
# differ in how they walk through memory. This notebook times each one on
# the reference CNN's second conv layer (x (N, 32, 13, 13), w (64, 32, 3,
# 3)), checks each against the NumPy reference, and plots them beside the
# limit of im2col: one matrix product (GEMM) of the same size.
#
# - **naive**: the textbook loop nest, one multiply-add at a time.
# - **im2col**: copy every window into a column of one big matrix (the
#   *unfold*), then one GEMM by the BLAS library.
# - **vectorized**: direct loops ordered so that the innermost one runs
#   over a contiguous vector, which the compiler turns into SIMD
#   instructions (8 or 16 multiply-adds at once).
# - **gemm**: im2col a few images at a time, into a buffer that stays in
#   the core's cache, each thread calling BLAS on its own images.
# - **winograd**, where it exists: fewer multiplications per output (16
#   instead of 36 for a 2x2 block of a 3x3 convolution), more additions.
#
# The variants come from the registry, `fastconv.ops.variants(op)`, so a
# new algorithm or backend shows up here with no edit, and so does one you
# write (below). The concepts guide,
# section 10, explains why one GEMM is fast; the README's Speed section has
# measured tables.

# %% tags=["parameters"]
BATCH = 64  # images per call, as in training
REPEAT = 5  # timed samples per variant (the median is kept)
SKIP_BACKENDS = ()  # e.g. ("numba",): leave out variants that compile on first use

# %%
import fastconv  # first: it sets how OpenBLAS and OpenMP threads wait before NumPy loads them (README, Threads)

# %matplotlib inline
import math
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np

from fastconv import ops, threads
from fastconv.shapes import conv_flops, conv_out_size

rng = np.random.default_rng(0)
x = rng.standard_normal((BATCH, 32, 13, 13)).astype(np.float32)  # (N, C, H, W)
w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)  # (F, C, KH, KW)
b = rng.standard_normal(64).astype(np.float32)  # (F,)
oh = ow = conv_out_size(13, 3)  # 11
dy = rng.standard_normal((BATCH, 64, oh, ow)).astype(np.float32)  # a gradient for the backward pass
flops = conv_flops(BATCH, 64, 32, 3, 3, oh, ow)
print(f"x {x.shape}, w {w.shape} -> y {(BATCH, 64, oh, ow)}: {flops / 1e6:.0f} MFLOP forward, "
      f"twice that backward; {threads.num_threads()} threads")


def median_ms(call):
    """Median milliseconds of one call; the first call (a Numba kernel
    compiles then) is not timed, and each sample lasts at least 20 ms."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    number = max(1, math.ceil(0.02 / max(first, 1e-9)))
    samples = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return 1e3 * statistics.median(samples)


# %% [markdown]
# ## The limit of im2col
#
# im2col turns the convolution into one product: the filters as a matrix
# (F, C·KH·KW) = (64, 288) times the columns (C·KH·KW, N·OH·OW). It does
# that product's work plus the unfold, so it cannot beat the product alone.
# (A direct kernel builds no columns and is not bound by it.)

# %%
filters_matrix = w.reshape(64, -1)
columns = rng.standard_normal((32 * 3 * 3, BATCH * oh * ow)).astype(np.float32)
gemm_ms = median_ms(lambda: filters_matrix @ columns)
print(f"NumPy GEMM (64, 288) @ (288, {BATCH * oh * ow}): {gemm_ms:.2f} ms, {flops / gemm_ms / 1e6:.1f} GFLOP/s")

# %% [markdown]
# ## Your own variant
#
# A function that takes the op's arguments (for `conv2d`: `x, w, b=None,
# stride=1, padding=0`) joins the registry with
# `fastconv.register_variant`, and from then on it is one more variant:
# listed by `ops.variants`, checked and timed below as `user/<name>`. This
# one is NumPy alone: `sliding_window_view` shows every window without
# copying it, and `einsum` multiplies the windows by the filters and sums.
# With `optimize=True`, einsum turns that into one matrix product, copying
# the windows first: im2col, found by NumPy on its own.


# %%
def conv2d_einsum(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> (N, F, OH, OW)."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.einsum("ncijkl,fckl->nfij", windows, w, optimize=True)  # windows: (N, C, OH, OW, KH, KW)
    return y if b is None else y + b[:, None, None]


fastconv.register_variant("conv2d", conv2d_einsum, name="einsum")
print(ops.variants("conv2d"))

# %% [markdown]
# ## Every variant, forward and backward
#
# Each variant's output is first compared with the NumPy reference's; then
# it is timed. The backward pass computes all three gradients (dx, dw, db).

# %%
reference = ops.conv2d(x, w, b, backend="numpy", algorithm="reference")
reference_grads = ops.conv2d_backward(dy, x, w, backend="numpy", algorithm="reference")
calls = {
    "forward": ("conv2d", lambda backend, algorithm: ops.conv2d(x, w, b, backend=backend, algorithm=algorithm),
                [reference]),
    "backward": ("conv2d_backward",
                 lambda backend, algorithm: ops.conv2d_backward(dy, x, w, backend=backend, algorithm=algorithm),
                 reference_grads),
}
results = {}  # (direction, "backend/algorithm") -> ms
for direction, (op, call, expected) in calls.items():
    for backend, algorithm in ops.variants(op):
        if backend in SKIP_BACKENDS:
            continue
        name = f"{backend}/{algorithm}"
        try:
            got = call(backend, algorithm)
        except ValueError as error:  # a variant that cannot take this shape says why
            print(f"{direction} {name}: not for this shape: {error}")
            continue
        got = got if isinstance(got, tuple) else [got]
        if not all(np.allclose(g, e, rtol=1e-3, atol=1e-3) for g, e in zip(got, expected)):
            raise AssertionError(f"{direction} {name} differs from the NumPy reference")
        results[direction, name] = median_ms(lambda: call(backend, algorithm))

print(f"{'':10}{'variant':22}{'ms':>9}{'GFLOP/s':>10}{'% of GEMM':>11}{'x naive':>9}")
for (direction, name), ms in results.items():
    work = flops * (2 if direction == "backward" else 1)
    limit = gemm_ms * (2 if direction == "backward" else 1)
    naive = results.get((direction, name.split("/")[0] + "/naive"))
    print(f"{direction:10}{name:22}{ms:9.2f}{work / ms / 1e6:10.1f}{100 * limit / ms:10.0f}%"
          + (f"{naive / ms:8.0f}x" if naive else ""))

# %% [markdown]
# The same as a picture: GFLOP/s on a log scale (each step right is ten
# times faster), one bar per variant, the dashed line at the GEMM.

# %%
algorithms = sorted({name.split("/")[1] for _, name in results})
colours = dict(zip(algorithms, plt.get_cmap("tab10").colors))
fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(results) + 2), layout="constrained", sharey=True)
names = list(dict.fromkeys(name for _, name in results))
for ax, direction in zip(axes, calls):
    work = flops * (2 if direction == "backward" else 1)
    rates = [work / results[direction, name] / 1e6 if (direction, name) in results else 0 for name in names]
    ax.barh(names, rates, color=[colours[name.split("/")[1]] for name in names])
    ax.axvline(work / (gemm_ms * (2 if direction == "backward" else 1)) / 1e6, color="k", linestyle="--",
               label="NumPy GEMM of the same size")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOP/s (log scale)")
    ax.set_title(f"conv2 {direction}, batch {BATCH}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
axes[0].invert_yaxis()

# %% [markdown]
# What to read in it:
#
# - The naive loops are one to two orders of magnitude behind: each
#   multiply-add waits for memory and runs alone.
# - im2col gets most of the way with one idea: hand the work to a GEMM,
#   which reuses every number it loads from memory many times (the concepts
#   guide, section 10). It cannot pass the dashed line: it does the GEMM's
#   work and the unfold besides.
# - gemm comes closer: its unfolded columns never leave the cache.
# - winograd, where it exists, can pass the line. The FLOPs counted are
#   the direct convolution's, and it does fewer multiplications than that,
#   so its GFLOP/s is an effective rate, not the work it did.
# - The backward pass does twice the work (dx and dw) and shows much the
#   same order.
#
# If im2col shows more than 100% of the GEMM, the GEMM itself was slowed:
# another program took a core that one of BLAS's threads was waiting for
# (the kernels above call BLAS one thread at a time, which suffers less).
# Run the cells again on a quieter machine.
#
# `auto`, the default of every op, times these variants once per shape on
# your machine and then always calls the fastest. Your numbers will differ
# from the README's; compare the ratios, not the milliseconds.
#
# **Try it.** Set `BATCH = 1`: which variant wins now, and why might the
# batch matter? Set the environment variable `FASTCONV_NUM_THREADS=1`
# before starting Jupyter and run again: which variants use both cores?
