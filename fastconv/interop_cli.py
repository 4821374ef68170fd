"""``fastconv-export`` and ``fastconv-import``: a checkpoint to ONNX and
safetensors files, and PyTorch weights (safetensors, or an ONNX file's
initializers) back to a checkpoint that every other command reads.

Failures (an unusable file, weights that do not fit, a model ONNX cannot
express, the interop extra missing) are one line on stderr and status 1.
"""
from __future__ import annotations

import argparse

from fastconv import interop, models
from fastconv.atomic import write_atomically
from fastconv.command_args import load_checkpoint
from fastconv.state_dict import InteropError


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-export",
        description="Export a checkpoint for other frameworks: an ONNX graph (input 'x' (N, C, H, W) "
                    "float32, output 'logits') and/or its weights as safetensors under the names of the "
                    "equivalent torch.nn.Sequential.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .npz saved by fastconv-train or Sequential.save")
    parser.add_argument("--onnx", metavar="OUT.onnx", help="write the ONNX graph here (default: not written)")
    parser.add_argument("--safetensors", metavar="OUT.safetensors",
                        help="write the PyTorch state_dict here (default: not written)")
    return parser


def export_main(argv=None) -> int:
    parser = build_export_parser()
    args = parser.parse_args(argv)
    if args.onnx is None and args.safetensors is None:
        parser.error("say what to write: --onnx OUT.onnx, --safetensors OUT.safetensors, or both")
    model = load_checkpoint(parser, args.checkpoint)
    writers = [(path, make) for path, make in ((args.onnx, interop.onnx_bytes),
                                               (args.safetensors, interop.safetensors_bytes)) if path]
    try:  # every file is made in memory first, so a refusal writes none
        payloads = [(path, make(model)) for path, make in writers]
    except InteropError as error:
        parser.exit(1, f"{parser.prog}: error: {args.checkpoint}: {error}\n")
    for path, payload in payloads:
        try:
            write_atomically(path, lambda f, payload=payload: f.write(payload))
        except OSError as error:
            parser.exit(1, f"{parser.prog}: error: {path}: {error.strerror or error}\n")
        print(f"wrote {path} ({len(payload):,} bytes)")
    return 0


def build_import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-import",
        description="Build a fastconv checkpoint from PyTorch weights: a safetensors file of a "
                    "torch.nn.Sequential's state_dict (or the initializers of an .onnx file) laid out "
                    "like one of fastconv's models.")
    parser.add_argument("weights", metavar="WEIGHTS", help="a .safetensors file, or an .onnx file")
    parser.add_argument("--model", choices=models.MODELS, required=True,
                        help="the architecture the weights belong to")
    parser.add_argument("--out", metavar="CHECKPOINT.npz", required=True, help="the checkpoint to write")
    return parser


def import_main(argv=None) -> int:
    parser = build_import_parser()
    args = parser.parse_args(argv)
    model = models.build(args.model)
    try:
        interop.load_into(model, args.weights)
        model.save(args.out)
    except InteropError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: {args.out}: {error.strerror or error}\n")
    print(f"wrote {args.out} ({args.model}, {model.param_count():,} parameters from {args.weights})")
    return 0
