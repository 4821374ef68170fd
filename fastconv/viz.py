"""``fastconv-viz``: pictures of what a network learned and how it behaves.

Each ``*_figure`` function returns a matplotlib ``Figure`` of an exact size in
pixels (``size=(width, height)``), drawn on the Agg canvas directly: no
pyplot, no window, no change to matplotlib's global backend; in Jupyter a
cell that ends with one shows it. The command writes them as PNG files and
prints their paths:

    fastconv-viz filters   --checkpoint PATH --out DIR   first-layer filters as a grid
    fastconv-viz maps      --checkpoint PATH --out DIR   feature maps of each conv/pool layer
    fastconv-viz curves    --metrics PATH    --out DIR   loss and accuracy per epoch
    fastconv-viz confusion --checkpoint PATH --out DIR   confusion matrix on the test set
    fastconv-viz errors    --checkpoint PATH --out DIR   misclassified test images
    fastconv-viz demo      --out DIR                     hand-set edge and blur filters, no training

matplotlib is optional (``pip install 'fastconv[viz]'``) and imported only
when a figure is drawn.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys

import numpy as np

from fastconv import ops
from fastconv.command_args import (
    add_data_options,
    add_kernel_options,
    load_checkpoint,
    load_data,
    non_negative_int,
    positive_int,
)
from fastconv.inspection import confusion_matrix, feature_maps, first_conv
from fastconv.shapes import conv_out_size

DPI = 100
MISSING_MATPLOTLIB = (
    "fastconv-viz draws with matplotlib, which is not installed; "
    "install fastconv[viz]: pip install 'fastconv[viz]' (or: pip install matplotlib)"
)
DEMO_KERNELS = {
    # Sobel: positive where the left side is brighter than the right.
    "vertical edge": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
    "horizontal edge": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    "blur": np.full((3, 3), 1 / 9, np.float32),
}
DEFAULT_SIZES = {
    "filters": (800, 500),
    "maps": (1000, 700),
    "curves": (1000, 450),
    "confusion": (700, 650),
    "errors": (1000, 800),
    "demo": (750, 750),
}


# ----------------------------------------------------------------- drawing


def _matplotlib():
    """(Figure, FigureCanvasAgg) classes; ImportError naming the pip command
    when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def _figure(size, title=None):
    """An empty Figure of ``size`` = (width, height) pixels on an Agg canvas,
    which Jupyter shows inline at that size when a cell ends with it."""
    Figure, FigureCanvasAgg = _matplotlib()
    width, height = size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    # Jupyter shows pyplot's figures only (through the inline backend); a
    # Figure made without pyplot is shown by the PNG it gives here.
    fig._repr_png_ = lambda: png_bytes(fig)
    if title:
        fig.suptitle(title)
    return fig


def save_png(fig, path) -> None:
    """Write ``fig`` to ``path`` as PNG at its own pixel size."""
    fig.savefig(path, format="png", dpi=DPI)


def png_bytes(fig) -> bytes:
    """``fig`` as PNG at its own pixel size, in memory."""
    buffer = io.BytesIO()
    save_png(fig, buffer)
    return buffer.getvalue()


def _tile_grid(fig, count):
    """``count`` axes without ticks in a grid shaped to the figure (square
    tiles); cells past ``count`` are hidden."""
    width, height = fig.get_size_inches()
    ncols = _columns(count, width, height)
    axes = fig.subplots(math.ceil(count / ncols), ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[count:]:
        ax.set_axis_off()
    return axes[:count]


def _columns(count, width, height) -> int:
    """Columns for ``count`` square tiles filling a width x height area."""
    return max(1, min(count, math.ceil(math.sqrt(count * width / height))))


def mosaic(tiles, ncols, gap=1) -> np.ndarray:
    """Tiles (K, H, W) laid out row by row in ``ncols`` columns as one float
    image, with ``gap`` NaN pixels (drawn as background) between tiles.

    One image with K tiles draws far faster than K axes.
    """
    k, h, w = tiles.shape
    nrows = math.ceil(k / ncols)
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap), np.nan)
    for index, tile in enumerate(tiles):
        top, left = (h + gap) * (index // ncols), (w + gap) * (index % ncols)
        out[top : top + h, left : left + w] = tile
    return out


def _draw_mosaic(ax, tiles, area, **imshow_options):
    """Draw tiles (K, H, W) on ``ax`` as a :func:`mosaic` shaped to ``area``
    (width, height), each tile numbered at its top-left corner."""
    k, h, w = tiles.shape
    ncols = _columns(k, *area)
    image = ax.imshow(mosaic(tiles, ncols), **imshow_options)
    for index in range(k):
        ax.text((w + 1) * (index % ncols) - 0.5, (h + 1) * (index // ncols) - 0.5, str(index), fontsize=6,
                ha="left", va="top", bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    ax.set_facecolor("0.8")  # shows through the NaN gaps, so pale tiles keep their edges
    return image


def _symmetric_limit(a) -> float:
    """Colour-scale limit so that 0 sits in the middle of a diverging map."""
    return float(np.abs(a).max()) or 1.0


def filters_figure(model, size=DEFAULT_SIZES["filters"]):
    """The first conv layer's filters w (F, C, KH, KW), one tile per filter
    and input channel (filter-major), on one colour scale (red positive,
    blue negative)."""
    conv = first_conv(model)
    w = conv.params["w"]
    f, c, kh, kw = w.shape
    limit = _symmetric_limit(w)
    fig = _figure(size, f"{conv.name}: {f} filters of {kh}x{kw}x{c} weights (red > 0 > blue)")
    ax = fig.subplots()
    image = _draw_mosaic(ax, w.reshape(f * c, kh, kw), size, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return fig


def feature_maps_figure(layer, maps, image, caption, size=DEFAULT_SIZES["maps"]):
    """The input image (C, H, W) beside each channel of ``maps`` (C', H', W'),
    the layer's output, on one shared colour scale."""
    c, h, w = maps.shape
    fig = _figure(size, f"{layer.name} ({type(layer).__name__}): {c} maps of {h}x{w}; {caption}")
    input_ax, maps_ax = fig.subplots(1, 2, width_ratios=[1, 4])
    input_ax.imshow(image[0], cmap="gray")
    input_ax.set_title("input")
    input_ax.set_axis_off()
    _draw_mosaic(maps_ax, maps, (size[0] * 4 / 5, size[1]), cmap="viridis")
    return fig


def load_metrics(path) -> tuple[list, float | None]:
    """(epochs, test accuracy or None) from a ``fastconv-train --metrics-out``
    JSON file; ValueError naming the file if it does not hold them."""
    with open(path) as f:
        try:
            metrics = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error})") from None
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    required = ("epoch", "loss", "accuracy")
    if not epochs or not all(isinstance(e, dict) and all(k in e for k in required) for e in epochs):
        raise ValueError(f"{path}: expected an 'epochs' list of entries with {', '.join(required)}")
    return epochs, metrics.get("test_accuracy")


def history_epochs(history) -> list:
    """A model's :class:`fastconv.model.History` as a list of per-epoch dicts."""
    columns = history.as_dict()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def curves_figure(epochs, title, test_accuracy=None, size=DEFAULT_SIZES["curves"]):
    """Loss and accuracy per epoch (training, and validation where recorded);
    the final test accuracy as a dashed line when given."""
    fig = _figure(size, title)
    loss_ax, acc_ax = fig.subplots(1, 2)
    x = [e["epoch"] for e in epochs]
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(x, [e[key] for e in epochs], "o-", label=f"training {key}")
        val = [(e["epoch"], e[f"val_{key}"]) for e in epochs if e.get(f"val_{key}") is not None]
        if val:
            ax.plot(*zip(*val), "s-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if test_accuracy is not None:
        acc_ax.axhline(test_accuracy, color="k", linestyle="--", label=f"test accuracy {test_accuracy:.4f}")
    loss_ax.legend()
    acc_ax.legend()
    return fig


def confusion_figure(matrix, class_names, size=DEFAULT_SIZES["confusion"]):
    """A confusion matrix (K, K) (row: true label, column: predicted; see
    :func:`fastconv.inspection.confusion_matrix`) with its counts in the cells."""
    total = int(matrix.sum())
    fig = _figure(size, f"confusion on {total:,} test images, accuracy {np.trace(matrix) / total:.4f}")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            dark = count > matrix.max() / 2
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color="w" if dark else "k")
    return fig


def errors_figure(images, y_true, probabilities, class_names, count=24, size=DEFAULT_SIZES["errors"]):
    """The first ``count`` misclassified images of (N, C, H, W), each titled
    with its true label and the prediction with its probability."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    title = f"{len(wrong):,} of {len(y_true):,} test images misclassified"
    fig = _figure(size, title + (f"; the first {min(count, len(wrong))}" if len(wrong) else ""))
    if not len(wrong):
        return fig
    for ax, i in zip(_tile_grid(fig, min(count, len(wrong))), wrong):
        ax.imshow(images[i, 0], cmap="gray")
        ax.set_title(f"#{i} true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]} "
                     f"({probabilities[i, y_pred[i]]:.0%})", fontsize=7)
    return fig


def demo_figure(image, backend="auto", algorithm="auto", size=DEFAULT_SIZES["demo"]):
    """Hand-set 3x3 filters (:data:`DEMO_KERNELS`) applied with
    :func:`fastconv.ops.conv2d` to one image (1, H, W): a row per filter
    showing the input, the kernel's numbers and the output (OH, OW)."""
    kernels = np.stack(list(DEMO_KERNELS.values()))[:, None]  # (F, 1, 3, 3): one conv call, F maps
    outputs = ops.conv2d(image[None], kernels, backend=backend, algorithm=algorithm)[0]
    h, w = image.shape[1:]
    k = kernels.shape[-1]
    fig = _figure(size, f"hand-set filters, no training: output {conv_out_size(h, k)}x{conv_out_size(w, k)}"
                        f" = ({h} - {k}) + 1 per side")
    axes = fig.subplots(len(DEMO_KERNELS), 3, squeeze=False)
    for row, (name, kernel, output) in enumerate(zip(DEMO_KERNELS, kernels[:, 0], outputs)):
        image_ax, kernel_ax, output_ax = axes[row]
        image_ax.imshow(image[0], cmap="gray")
        image_ax.set_title("input", fontsize=9)
        limit = _symmetric_limit(kernel)
        kernel_ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(kernel):
            kernel_ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=9,
                           color="w" if abs(value) > limit / 2 else "k")
        kernel_ax.set_title(f"kernel: {name}", fontsize=9)
        limit = _symmetric_limit(output)
        output_ax.imshow(output, cmap="RdBu_r", vmin=-limit, vmax=limit)
        output_ax.set_title("output (red > 0 > blue)", fontsize=9)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


# ------------------------------------------------------------- the command


def _pixels(text):
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 800x600, got {text!r}") from None
    if not (100 <= width <= 10_000 and 100 <= height <= 10_000):
        raise argparse.ArgumentTypeError(f"width and height must be 100 to 10000 pixels, got {text}")
    return width, height


def build_parser():
    """(the parser, {command name: its subparser}); a command's own parser
    reports its argument errors, so the usage shown is that command's."""
    parser = argparse.ArgumentParser(
        prog="fastconv-viz", description="Draw what a network learned and does, as PNG files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", metavar="DIR", required=True, help="directory for the PNG files")

    def command(name, help_text, checkpoint=True, data=False, kernels=False):
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        width, height = DEFAULT_SIZES[name]
        sub.add_argument("--size", type=_pixels, metavar="WxH",
                         help=f"picture size in pixels (default: {width}x{height})")
        if checkpoint:
            sub.add_argument("--checkpoint", metavar="PATH", required=True, help="a saved model (.npz)")
        if data:
            add_data_options(sub)
        if kernels:
            add_kernel_options(sub, default=None if checkpoint else "auto")
        return sub

    command("filters", "the first conv layer's filters as a grid")
    for name, help_text in (("maps", "feature maps of every conv and pool layer for one test image"),
                            ("demo", "hand-set vertical edge, horizontal edge and blur filters on one "
                                     "test image (no model, no training)")):
        sub = command(name, help_text, checkpoint=name == "maps", data=True, kernels=True)
        sub.add_argument("--index", type=non_negative_int, default=0, metavar="I",
                         help="test image index (default: %(default)s)")
    curves = command("curves", "loss and accuracy per epoch", checkpoint=False)
    source = curves.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", metavar="PATH", help="JSON written by fastconv-train --metrics-out")
    source.add_argument("--checkpoint", metavar="PATH", help="a saved model: plots the history it holds")
    for name, help_text in (("confusion", "confusion matrix on the test set"),
                            ("errors", "misclassified test images with true and predicted labels")):
        sub = command(name, help_text, data=True, kernels=True)
        sub.add_argument("--limit", type=positive_int, metavar="N", help="use the first N test images (default: all)")
        if name == "errors":
            sub.add_argument("--count", type=positive_int, default=24, metavar="N",
                             help="images to show (default: %(default)s)")
    return parser, commands.choices


def _figures(args, parser):
    """``[(file name, Figure)]`` for the parsed command."""
    size = args.size or DEFAULT_SIZES[args.command]
    if args.command == "curves":
        if args.metrics is not None:
            try:
                epochs, test_accuracy = load_metrics(args.metrics)
            except (OSError, ValueError) as error:
                parser.error(f"--metrics: {error}")
            return [("curves.png", curves_figure(epochs, args.metrics, test_accuracy, size))]
        model = load_checkpoint(parser, args.checkpoint)
        if not len(model.history):
            parser.error(f"--checkpoint {args.checkpoint}: the model holds no training history")
        return [("curves.png", curves_figure(history_epochs(model.history), args.checkpoint, size=size))]

    if args.command == "filters":
        return [("filters.png", filters_figure(load_checkpoint(parser, args.checkpoint), size))]

    dataset = load_data(parser, args)
    x, y = dataset.x_test, dataset.y_test
    if getattr(args, "index", 0) >= len(y):
        parser.error(f"--index {args.index}: the test set has {len(y):,} images (0 to {len(y) - 1})")
    if args.command == "demo":
        fig = demo_figure(x[args.index], args.backend, args.algorithm, size)
        return [(f"demo-{args.index}.png", fig)]

    model = load_checkpoint(parser, args.checkpoint, args.backend, args.algorithm)
    if args.command == "maps":
        caption = f"test image #{args.index}, label {dataset.classes[y[args.index]]}"
        return [(f"maps-{args.index}-{layer.name}.png", feature_maps_figure(layer, maps, x[args.index], caption, size))
                for layer, maps in feature_maps(model, x[args.index])]
    x, y = x[: args.limit], y[: args.limit]
    probabilities = model.predict(x)
    if args.command == "confusion":
        matrix = confusion_matrix(y, probabilities.argmax(axis=1), len(dataset.classes))
        return [("confusion.png", confusion_figure(matrix, dataset.classes, size))]
    return [("errors.png", errors_figure(x, y, probabilities, dataset.classes, args.count, size))]


def main(argv=None) -> int:
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    try:
        _matplotlib()  # fail before loading data or models
    except ImportError as error:
        print(f"fastconv-viz: error: {error}", file=sys.stderr)
        return 1
    try:
        figures = _figures(args, subparsers[args.command])
    except ValueError as error:  # a model that cannot draw this (e.g. filters of a dense network)
        subparsers[args.command].error(str(error))
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        subparsers[args.command].error(f"--out {args.out}: {error}")
    for name, fig in figures:
        path = os.path.join(args.out, name)
        save_png(fig, path)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
