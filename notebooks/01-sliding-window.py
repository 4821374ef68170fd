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
# # 1. The sliding window, output size and receptive field
#
# A convolution layer slides a small window of weights (the *kernel*) over
# an image. At each position it multiplies the pixels under the window by
# the weights, adds the products up, and writes one number to the output.
# This notebook does that by hand on an MNIST digit, then draws where the
# windows fit (the *output size*) and which input pixels one output pixel
# sees (its *receptive field*). The concepts guide, `docs/concepts.md`,
# sections 2, 3 and 7, says the same in words.
#
# Run the cells from top to bottom (Shift+Enter). The first cell below holds
# the settings you may change.

# %% tags=["parameters"]
DATA_DIR = None  # a folder holding the four MNIST files; None: $FASTCONV_DATA, else the download cache
INDEX = 0  # which test digit to look at

# %%
import fastconv  # first: it sets how OpenBLAS and OpenMP threads wait before NumPy loads them (README, Threads)

# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from fastconv import data, models, ops
from fastconv.shapes import conv_out_size

mnist = data.load_dataset("mnist", DATA_DIR)
digit = mnist.x_test[INDEX]  # (1, 28, 28): one channel, 28 rows, 28 columns, grey values 0..1
print(f"test digit {INDEX}: a {mnist.classes[mnist.y_test[INDEX]]}, shape {digit.shape}")

# %% [markdown]
# ## One window, by hand
#
# A 3x3 *vertical-edge* kernel (Sobel's): positive weights on the left,
# negative on the right. Where the left of the window is brighter than the
# right, the sum is positive; on a flat patch it is 0. The window whose top
# left corner sits at row `r`, column `c` covers rows `r..r+2` and columns
# `c..c+2`. Slide it over every position, one step at a time: 26 positions
# fit along each axis of 28 pixels (the next section says why). Two Python
# loops give the whole output, a *feature map*. `fastconv.ops.conv2d`
# computes the same with compiled loops; it takes a batch of images and a
# bank of filters, shapes (N, C, H, W) and (F, C, KH, KW).

# %%
kernel = np.array([[1, 0, -1],
                   [2, 0, -2],
                   [1, 0, -1]], np.float32)
image = digit[0]  # (28, 28)
out = np.zeros((26, 26), np.float32)
for r in range(26):
    for c in range(26):
        out[r, c] = (image[r:r + 3, c:c + 3] * kernel).sum()

fast = ops.conv2d(digit[None], kernel[None, None])  # (1, 1, 26, 26)
print("the same as fastconv.ops.conv2d:", np.allclose(out, fast[0, 0], atol=1e-5))

# %% [markdown]
# Zoom in on one window: the one with the largest output, where a stroke's
# left edge is brightest against its right.

# %%
r, c = np.unravel_index(out.argmax(), out.shape)
window = image[r:r + 3, c:c + 3]
print(f"the 9 pixels under the window at row {r}, column {c}:\n{window.round(2)}")
print(f"times the 9 weights:\n{(window * kernel).round(2) + 0}")  # + 0 turns -0. into 0.
print(f"summed: {(window * kernel).sum():.4f} = out[{r}, {c}] = {out[r, c]:.4f}")

# %% [markdown]
# The window at four moments of its slide, left to right and top to bottom
# (row by row, as the loops run), and the output filled in so far: red where
# the left of the window is brighter, blue where the right is, white where
# the window sees no edge; grey is not written yet.

# %%
limit = np.abs(out).max()
fig, axes = plt.subplots(2, 4, figsize=(12, 6.5), layout="constrained")
fig.suptitle("a 3x3 window slides over 28x28 pixels and writes a 26x26 feature map")
for column, (r, c) in enumerate([(0, 0), (6, 9), (13, 12), (25, 25)]):
    top, bottom = axes[:, column]
    top.imshow(image, cmap="gray")
    top.add_patch(Rectangle((c - 0.5, r - 0.5), 3, 3, fill=False, edgecolor="red", linewidth=2))
    top.set_title(f"window at row {r}, column {c}")
    so_far = np.full((26, 26), np.nan)  # not written yet: grey
    so_far.flat[: r * 26 + c + 1] = out.flat[: r * 26 + c + 1]
    bottom.imshow(so_far, cmap=plt.get_cmap("RdBu_r").with_extremes(bad="0.8"), vmin=-limit, vmax=limit)
    bottom.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    bottom.set_title(f"output so far: pixel ({r}, {c})")
    for ax in (top, bottom):
        ax.set_xticks([])
        ax.set_yticks([])

# %% [markdown]
# ## Output size: kernel, stride, padding
#
# Along one axis, a window of `k` pixels moved in steps of `s` (the
# *stride*) over `n` pixels with `p` zeros added on each side (the
# *padding*) fits
#
#     out = (n + 2p - k) // s + 1
#
# times. `fastconv.shapes.conv_out_size(n, k, s, p)` is that formula. Below,
# one axis of 7 pixels: each blue bar is one position of the window, and
# the output pixel it writes. Grey cells are padding; a hatched cell is one
# no window reaches.


# %%
def draw_windows(ax, n, k, s, p):
    """The positions of a window of k pixels, stride s, padding p, along n pixels."""
    count = conv_out_size(n, k, s, p)
    for i in range(-p, n + p):
        inside = 0 <= i < n
        reached = any(start - p <= i < start - p + k for start in range(0, count * s, s))
        ax.add_patch(Rectangle((i, count + 0.2), 1, 0.8, facecolor="white" if inside else "0.75",
                               edgecolor="black", hatch=None if reached or not inside else "///"))
        ax.text(i + 0.5, count + 0.6, str(i) if inside else "0", ha="center", va="center", fontsize=8)
    for position in range(count):
        start = position * s - p
        ax.add_patch(Rectangle((start + 0.1, count - 1 - position + 0.25), k - 0.2, 0.5,
                               facecolor="tab:blue", alpha=0.6))
        ax.text(start + k / 2, count - 1 - position + 0.5, f"output {position}", ha="center", va="center",
                fontsize=7, color="white")
    ax.set_xlim(-p - 0.5, n + p + 0.5)
    ax.set_ylim(-0.2, count + 1.2)
    ax.set_axis_off()
    ax.set_title(f"n={n}, k={k}, s={s}, p={p}: ({n} + {2 * p} - {k}) // {s} + 1 = {count}", fontsize=10)


fig, axes = plt.subplots(2, 2, figsize=(12, 6), layout="constrained")
for ax, (k, s, p) in zip(axes.flat, [(3, 1, 0), (3, 1, 1), (3, 2, 0), (2, 2, 0)]):
    draw_windows(ax, 7, k, s, p)

# %% [markdown]
# - k=3, s=1, p=0: a 3-pixel window loses `k - 1 = 2` positions: 7 gives 5.
# - p=1 adds a zero on each side and gives those positions back: *same*
#   padding keeps the size.
# - s=2 takes every second position: 3 windows.
# - A 2x2 pool with stride 2 on 7 pixels gives 3 windows, and the 7th pixel
#   is in none of them: it is *dropped*. Every framework drops it by
#   default; the reference CNN does too (section "receptive field" below).
#
# The reference CNN's shapes follow from the formula, layer by layer:

# %%
model = models.build("cnn", seed=0)
print(f"{'input':26}{model.input_shape}")
for layer, shape in zip(model.layers, model.output_shapes):
    print(f"{layer.name + ' (' + type(layer).__name__ + ')':26}{shape}")
print(f"conv 28 -> {conv_out_size(28, 3)}, pool 26 -> {conv_out_size(26, 2, 2)}, "
      f"conv 13 -> {conv_out_size(13, 3)}, pool 11 -> {conv_out_size(11, 2, 2)} (row 10 dropped)")

# %% [markdown]
# ## Receptive field
#
# One pixel of a layer's output depends on a patch of input pixels, its
# *receptive field*. The *jump* is the distance in input pixels between two
# neighbouring output pixels. A layer with kernel `k` and stride `s` takes
# the field `r` and jump `j` of its input to `r + (k - 1) * j` and `j * s`.
# `model.receptive_fields()` computes both for each layer (rows and columns
# alike here):

# %%
for layer, fields in zip(model.layers, model.receptive_fields()):
    if fields is not None:
        rows = fields[0]
        print(f"{layer.name:>15}: {rows.size:2} x {rows.size:2} pixels, each sees {rows.receptive_field:2} x "
              f"{rows.receptive_field:2} input pixels, {rows.jump} apart")

# %% [markdown]
# Check it by experiment. Replace each layer by its window alone: a 3x3
# kernel of ones and a 2x2 average, so that every output is a positive sum
# of its whole field. Then light one input pixel at a time (784 images, one
# lit pixel each) and see which of them reach one pixel of the last map.
# The lit pixels that reach it are its field.

# %%
ones = np.ones((1, 1, 3, 3), np.float32)


def windows_only(x):
    """The reference CNN's windows (conv 3, pool 2, conv 3, pool 2) with every weight 1."""
    for _ in range(2):
        x = ops.avg_pool2d(ops.conv2d(x, ones), 2)
    return x


impulses = np.eye(28 * 28, dtype=np.float32).reshape(784, 1, 28, 28)  # image i lights pixel i
last = windows_only(impulses)  # (784, 1, 5, 5)
cell = (2, 3)
field = (last[:, 0, cell[0], cell[1]] > 0).reshape(28, 28)
rows, cols = np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))
print(f"cell {cell} of the last 5x5 map sees rows {rows[0]}-{rows[-1]} and columns {cols[0]}-{cols[-1]}: "
      f"{len(rows)} x {len(cols)} pixels")
reached = (last[:, 0] > 0).any(axis=(1, 2)).reshape(28, 28)
print("input rows no cell sees:", np.flatnonzero(~reached.any(axis=1)),
      "columns:", np.flatnonzero(~reached.any(axis=0)))
print(f"{image[~reached].sum() / image.sum():.1%} of this digit's ink is where no cell sees it")

# %% [markdown]
# Left: the fields of all 25 cells of the last map tile the digit, 4 pixels
# apart, each 10x10, overlapping by 6; cell (2, 3)'s in red. Right: what no
# cell sees. The fields start at 0, 4, 8, 12, 16 and end at 16 + 9 = 25, so
# rows and columns 26 and 27 reach no output: the *blind band*, a
# consequence of the dropped row 10 above (the concepts guide, section 14).

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.5), layout="constrained")
left.imshow(image, cmap="gray")
for i in range(5):
    for j in range(5):
        left.add_patch(Rectangle((4 * j - 0.5, 4 * i - 0.5), 10, 10, fill=False, edgecolor="tab:cyan",
                                 linewidth=0.8, alpha=0.8))
left.add_patch(Rectangle((cols[0] - 0.5, rows[0] - 0.5), len(cols), len(rows), fill=False, edgecolor="red",
                         linewidth=2.5))
left.set_title(f"the 25 fields of the last map; cell {cell}'s in red")
right.imshow(image, cmap="gray")
right.imshow(np.where(reached, np.nan, 1.0), cmap="autumn", alpha=0.6, vmin=0, vmax=1)
right.set_title("the blind band: pixels no output depends on")
for ax in (left, right):
    ax.set_xticks(range(0, 28, 4))
    ax.set_yticks(range(0, 28, 4))

# %% [markdown]
# **Try it.** Change `cell` and see its field move by 4 pixels per cell.
# Build `models.build("lenet5")` or `models.build("cnn-deep")` and print
# their receptive fields: does either have a blind band? (The concepts
# guide answers in section 14.) Then go on to notebook 2, which trains the
# reference CNN and looks at what its windows learn.
