"""Argument parsing shared by the teaching commands (``fastconv-explain``,
``fastconv-viz``, ``fastconv-compare``): value types, the kernel options, and
loading a checkpoint or the data set with failures reported in one line on
stderr instead of tracebacks (a bad data set as an argparse error, status 2;
an unusable checkpoint file with status 1)."""
from __future__ import annotations

import argparse

from fastconv import registry
from fastconv.checkpoint import CheckpointError
from fastconv.data import DATASETS, DataFileError, load_dataset
from fastconv.model import Sequential


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def add_kernel_options(parser, default=None) -> None:
    """``--backend`` and ``--algorithm`` for the conv, pool and batch norm layers
    (``default`` None keeps what a checkpoint was saved with)."""
    in_words = ("as saved in the checkpoint" if default is None
                else "auto, the fastest variant measured for each shape" if default == "auto" else default)
    parser.add_argument("--backend", choices=("auto",) + registry.available_backends(), default=default,
                        help=f"kernel backend of the conv, pool and batch norm layers (numpy is the slow reference; "
                             f"default: {in_words})")
    parser.add_argument("--algorithm", choices=("auto",) + registry.ALGORITHMS + (registry.REFERENCE[1],),
                        default=default,
                        help="kernel algorithm of the conv and pool layers, and of batch norm where it has it "
                             f"(default: {in_words})")


def add_data_options(parser) -> None:
    """``--data-dir`` and ``--dataset``, as ``fastconv.data.load_dataset`` takes them."""
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory holding the four IDX files (default: $FASTCONV_DATA, else the download cache)")
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="the data set (default: %(default)s)")


def load_checkpoint(parser, path, backend=None, algorithm=None) -> Sequential:
    """The model saved at ``path``. If the file is missing or unusable, the
    :class:`~fastconv.checkpoint.CheckpointError` is printed as one line
    (``<prog>: error: <path>: <problem>``) and the command exits with status
    1: the arguments were well formed, the file is not."""
    try:
        return Sequential.load(path, backend=backend, algorithm=algorithm)
    except CheckpointError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def load_data(parser, args):
    """The :class:`fastconv.data.Dataset` named by ``args.dataset`` and
    ``args.data_dir``; a parser error if it is missing or malformed."""
    try:
        return load_dataset(args.dataset, data_dir=args.data_dir)
    except (FileNotFoundError, DataFileError) as error:
        parser.error(str(error))
