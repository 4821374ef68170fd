"""``fastconv-explain``: what each layer of a network holds and costs.

For a named model (``fastconv-explain cnn``) or a saved checkpoint
(``fastconv-explain --checkpoint model.npz``) it prints, per layer, the output
shape, the parameters split into weights and biases, the forward work per
image, and the receptive field and jump; then totals; then why a convolution
needs so few parameters next to a dense layer. Every number is computed from
the model's layers.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from fastconv import models
from fastconv.command_args import load_checkpoint
from fastconv.layers import AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, Dense, MaxPool2D, ReLU
from fastconv.shapes import conv_flops, dense_flops

FOOTER = """\
FLOPs: forward pass, one image; a multiply-add counts 2 (conv: 2*C*KH*KW*OH*OW*F,
  dense: 2*in*out); bias additions are not counted.
Other ops: comparisons and additions outside the FLOPs: ReLU 1 comparison per
  value, max-pool KH*KW-1 comparisons per output, avg-pool KH*KW-1 additions and
  1 multiplication per output, batch norm 1 multiplication and 1 addition per value
  (its statistics folded into a scale and a shift at inference). Flatten and
  Dropout (identity at inference) do no arithmetic.
Params: trainable (weights and biases; batch norm's gamma and beta). Fixed: values
  kept but never trained (batch norm's running mean and variance).
Field: the input pixels (H x W) that one output pixel of the layer depends on;
  jump: the distance in input pixels between neighbouring output pixels."""


@dataclass(frozen=True)
class LayerCost:
    """One layer of a model: its output (per sample), parameters and forward
    work per image. ``field`` and ``jump`` are (H, W) pairs in input pixels,
    None once the image has been flattened."""

    name: str
    kind: str
    output_shape: tuple
    weights: int
    biases: int
    fixed: int
    flops: int
    other_ops: int
    field: tuple | None
    jump: tuple | None

    @property
    def params(self) -> int:
        return self.weights + self.biases


def forward_work(layer, output_shape) -> tuple[int, int]:
    """(FLOPs, other ops) of one image through ``layer``, as the table footer
    defines them; ``output_shape`` is per sample, without the batch axis."""
    outputs = math.prod(output_shape)
    if isinstance(layer, Conv2D):
        return conv_flops(1, layer.out_channels, layer.in_channels, *layer.kernel_size, *output_shape[1:]), 0
    if isinstance(layer, Dense):
        return dense_flops(1, layer.in_features, layer.out_features), 0
    if isinstance(layer, MaxPool2D):
        return 0, (math.prod(layer.kernel_size) - 1) * outputs
    if isinstance(layer, AvgPool2D):
        return 0, math.prod(layer.kernel_size) * outputs
    if isinstance(layer, ReLU):
        return 0, outputs
    if isinstance(layer, (BatchNorm2D, BatchNorm)):
        return 0, 2 * outputs
    return 0, 0  # Flatten, Dropout


def layer_costs(model) -> list[LayerCost]:
    """One :class:`LayerCost` per layer of a :class:`fastconv.model.Sequential`."""
    costs = []
    for layer, out_shape, field in zip(model.layers, model.output_shapes, model.receptive_fields()):
        shapes = layer.param_shapes()
        biases = math.prod(shapes.get("b", shapes.get("beta", (0,))))
        flops, other_ops = forward_work(layer, out_shape)
        costs.append(LayerCost(
            name=layer.name,
            kind=type(layer).__name__,
            output_shape=out_shape,
            weights=layer.param_count() - biases,
            biases=biases,
            fixed=layer.buffer_count(),
            flops=flops,
            other_ops=other_ops,
            field=None if field is None else (field[0].receptive_field, field[1].receptive_field),
            jump=None if field is None else (field[0].jump, field[1].jump),
        ))
    return costs


def _pair(pair, square_as_one=False) -> str:
    if pair is None:
        return ""
    if square_as_one and pair[0] == pair[1]:
        return str(pair[0])
    return f"{pair[0]}x{pair[1]}"


def format_table(costs, title) -> str:
    """The per-layer table with a totals row and the footer."""
    header = ("Layer (type)", "Output shape", "Weights", "Biases", "Params", "Fixed", "FLOPs", "Other ops",
              "Field", "Jump")
    rows = [
        (f"{c.name} ({c.kind})", "x".join(map(str, c.output_shape)), f"{c.weights:,}", f"{c.biases:,}",
         f"{c.params:,}", f"{c.fixed:,}", f"{c.flops:,}", f"{c.other_ops:,}", _pair(c.field),
         _pair(c.jump, square_as_one=True))
        for c in costs
    ]
    total = ("Total", "", *(f"{sum(getattr(c, key) for c in costs):,}"
                            for key in ("weights", "biases", "params", "fixed", "flops", "other_ops")), "", "")
    widths = [max(len(row[i]) for row in [header, total, *rows]) for i in range(len(header))]
    numeric = range(2, 8)

    def line(row):
        cells = (cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *map(line, rows), rule, line(total), rule, FOOTER])


def _first(costs, model, layer_type):
    """(layer, cost) of the first layer of ``layer_type`` in ``model``."""
    return next((layer, cost) for layer, cost in zip(model.layers, costs) if isinstance(layer, layer_type))


def _share(part, whole) -> str:
    return f"{part:,} ({100 * part / whole:.1f}%)"


def dense_vs_cnn(cnn_name, cnn_model, dense_name, dense_model) -> str:
    """Why the first conv layer of ``cnn_model`` has so few parameters next to
    the first dense layer of ``dense_model``, in numbers taken from both."""
    cnn_costs, dense_costs = layer_costs(cnn_model), layer_costs(dense_model)
    conv, conv_cost = _first(cnn_costs, cnn_model, Conv2D)
    fc, fc_cost = _first(dense_costs, dense_model, Dense)
    kh, kw = conv.kernel_size
    f, c = conv.out_channels, conv.in_channels
    positions = math.prod(conv_cost.output_shape[1:])
    conv_outputs = math.prod(conv_cost.output_shape)
    pixels = math.prod(cnn_model.input_shape)
    dense_equivalent = pixels * conv_outputs + conv_outputs
    cnn_params = sum(x.params for x in cnn_costs)
    cnn_flops = sum(x.flops for x in cnn_costs)
    conv_layers = [x for layer, x in zip(cnn_model.layers, cnn_costs) if isinstance(layer, Conv2D)]
    dense_layers = [x for layer, x in zip(cnn_model.layers, cnn_costs) if isinstance(layer, Dense)]
    oh, ow = conv_cost.output_shape[1:]
    return "\n".join([
        "Dense vs CNN: the first layer of each",
        f"  {cnn_name} {conv.name}: {f} filters x ({kh}x{kw}x{c} weights + 1 bias) = {f} x {kh * kw * c + 1}"
        f" = {conv_cost.params:,} parameters.",
        f"    One filter is one {kh}x{kw} window slid over all {oh}x{ow} = {positions:,} positions: the same"
        f" {kh * kw * c + 1} numbers",
        "    serve every position (weight sharing), so the count does not grow with the image.",
        f"  {dense_name} {fc.name}: {fc.in_features:,} inputs x {fc.out_features:,} units + {fc.out_features:,}"
        f" biases = {fc_cost.params:,} parameters.",
        "    Every unit has its own weight for every pixel, wherever the pattern is.",
        f"  A dense layer giving the conv layer's {'x'.join(map(str, conv_cost.output_shape))} = {conv_outputs:,}"
        f" outputs from the {pixels:,} pixels would need",
        f"    {pixels:,} x {conv_outputs:,} + {conv_outputs:,} = {dense_equivalent:,} parameters,"
        f" {dense_equivalent / conv_cost.params:,.0f} times as many.",
        f"  Whole models, per image: {cnn_name} {cnn_params:,} parameters, {cnn_flops:,} FLOPs;",
        f"    {dense_name} {sum(x.params for x in dense_costs):,} parameters,"
        f" {sum(x.flops for x in dense_costs):,} FLOPs.",
        f"  In {cnn_name} the conv layers hold {_share(sum(x.params for x in conv_layers), cnn_params)} of the"
        f" parameters but do {_share(sum(x.flops for x in conv_layers), cnn_flops)} of the FLOPs;",
        f"    the dense layers hold {_share(sum(x.params for x in dense_layers), cnn_params)} of the parameters.",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-explain",
        description="Per layer: output shape, weights and biases, FLOPs per image, receptive field "
                    "and jump; then the dense-vs-CNN parameter comparison.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("model", nargs="?", choices=models.MODELS, help="a named model")
    source.add_argument("--checkpoint", metavar="PATH", help="a model saved by Sequential.save / fastconv-train")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is not None:
        model, name = load_checkpoint(parser, args.checkpoint), args.checkpoint
    else:
        model, name = models.build(args.model), args.model
    print(format_table(layer_costs(model), f"{name}: input {'x'.join(map(str, model.input_shape))}"))
    print()
    has_conv = any(isinstance(layer, Conv2D) for layer in model.layers)
    cnn_name, cnn_model = (name, model) if has_conv else ("cnn", models.build("cnn"))
    print(dense_vs_cnn(cnn_name, cnn_model, "dense", models.build("dense")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
