"""``fastconv-train``: train a model on MNIST from the command line.

    fastconv-train                                  # the reference CNN, Adam, to 99%+
    fastconv-train --model cnn-deep                 # batch norm, augmentation, cosine schedule: 99.5%+
    fastconv-train --model dense --epochs 5
    fastconv-train --data-dir ~/mnist --limit 2000 --epochs 1   # offline, from a folder
    fastconv-train --resume fastconv-cnn.npz --epochs 15

Prints the model summary, a progress bar per epoch, validation after each
epoch, the test accuracy and a confusion matrix. After every epoch the model
is saved (atomically) to ``--save``, so Ctrl-C loses at most the epoch in
progress; without ``--save``, that is the ``--resume`` file (resuming carries
it on), else ``fastconv-<model>.npz``. ``--metrics-out`` writes the run's
numbers as JSON.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from fastconv import checkpoint, data, models
from fastconv.augment import RandomAffine
from fastconv.checkpoint import CheckpointError
from fastconv.atomic import write_json_atomically
from fastconv.command_args import (add_data_options, add_kernel_options, non_negative_int,
                                   positive_float, positive_int)
from fastconv.inspection import confusion_matrix
from fastconv.model import Sequential
from fastconv.optim import SGD, Adam
from fastconv.profile import StepProfile
from fastconv.schedules import SCHEDULES, ConstantLR, CosineLR, StepLR

DEFAULT_LR = 1e-3
TRAINING_DEFAULTS = {"epochs": 12, "lr_schedule": "constant", "augment": False}
"""The training settings every model gets unless :data:`MODEL_DEFAULTS` says otherwise."""
MODEL_DEFAULTS = {"cnn-deep": {"epochs": 20, "lr_schedule": "cosine", "augment": True}}
"""Per model, the settings that reach its target (cnn-deep: 99.5%+ on MNIST)."""


def _defaults_text(key, show=str) -> str:
    special = "; ".join(f"{name}: {show(d[key])}" for name, d in MODEL_DEFAULTS.items())
    return f"default: {show(TRAINING_DEFAULTS[key])}; {special}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-train",
        description="Train a network on MNIST (or Fashion-MNIST) with fastconv's kernels.",
    )
    parser.add_argument("--model", choices=models.MODELS, default="cnn",
                        help="the network to train (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int,
                        help="train until this epoch number (with --resume: the total, not extra epochs; "
                             f"{_defaults_text('epochs')})")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per training step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float,
                        help=f"learning rate, the start of a step or cosine schedule (default: {DEFAULT_LR}; "
                             "with --resume and a constant schedule: the checkpoint's)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="adam, or sgd with Nesterov momentum 0.9 (default: %(default)s)")
    parser.add_argument("--lr-schedule", choices=tuple(SCHEDULES),
                        help="the learning rate per epoch: constant, step (times --lr-gamma every "
                             "--lr-step-epochs epochs) or cosine (half a cosine from --lr down to 0 over --epochs); "
                             f"{_defaults_text('lr_schedule')}")
    parser.add_argument("--lr-step-epochs", type=positive_int, default=5, metavar="N",
                        help="with --lr-schedule step: epochs between decays (default: %(default)s)")
    parser.add_argument("--lr-gamma", type=positive_float, default=0.1, metavar="G",
                        help="with --lr-schedule step: the factor of each decay (default: %(default)s)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                        help=f"move, turn and scale every training batch at random, {RandomAffine()!r}, "
                             f"for any model ({_defaults_text('augment', _on_off)})")
    parser.add_argument("--no-batch-norm", dest="batch_norm", action="store_false",
                        help=f"build {', '.join(models.WITH_BATCH_NORM)} without its batch norm layers "
                             "(to measure what they add)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds weights, shuffling and dropout (default: %(default)s)")
    add_kernel_options(parser, default="auto")
    add_data_options(parser)
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="train on the first N training images only (default: all)")
    parser.add_argument("--validation", type=non_negative_int, default=5000, metavar="N",
                        help="hold out the last N training images for per-epoch validation "
                             "(0: none; default: %(default)s)")
    parser.add_argument("--save", metavar="PATH",
                        help="checkpoint path, rewritten after every epoch ('' for none; "
                             "default: the --resume file, else fastconv-<model>.npz)")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a checkpoint written by --save (default: start from new weights)")
    parser.add_argument("--metrics-out", metavar="PATH",
                        help="write per-epoch and test metrics as JSON here (default: not written)")
    parser.add_argument("--quiet", action="store_true", help="no summary, progress bars or matrix")
    parser.add_argument("--profile", action="store_true",
                        help="after training, print the mean time per step of each layer's forward and "
                             "backward, the loss and the optimizer (and add it to --metrics-out)")
    parser.add_argument("--no-fuse", dest="fuse", action="store_false",
                        help="run Conv2D -> ReLU -> MaxPool2D as three ops instead of one fused op")
    return parser


def _on_off(value) -> str:
    return "on" if value else "off"


def settings(args, model_name) -> dict:
    """The training settings: each option given, else the model's default
    (``model_name`` None for a checkpoint that matches no named model)."""
    defaults = {**TRAINING_DEFAULTS, **MODEL_DEFAULTS.get(model_name, {})}
    chosen = {key: getattr(args, key) for key in defaults}
    return {key: defaults[key] if value is None else value for key, value in chosen.items()}


def lr_schedule(name, args, epochs):
    """The schedule ``name`` from the --lr options, over ``epochs`` epochs;
    None (the optimiser keeps its rate) for a constant one without --lr."""
    lr = DEFAULT_LR if args.lr is None else args.lr
    if name == "step":
        return StepLR(lr, args.lr_step_epochs, args.lr_gamma)
    if name == "cosine":
        return CosineLR(lr, epochs)
    return None if args.lr is None else ConstantLR(lr)


def named_model(model) -> str | None:
    """The name in :data:`fastconv.models.MODELS` whose architecture
    ``model`` has (kernel choices aside), else None."""
    def shape_of(layers):
        return [(type(l).__name__, {k: v for k, v in l.config().items() if k not in ("backend", "algorithm")})
                for l in layers]

    for name in models.MODELS:
        if shape_of(models.build(name).layers) == shape_of(model.layers):
            return name
    return None


def split(dataset, validation, limit):
    """(train images, labels), (validation images, labels) or None: the last
    ``validation`` training images are held out, then ``limit`` caps the rest."""
    n_train = len(dataset.x_train) - validation
    if n_train < 1:
        raise ValueError(f"--validation {validation} leaves no training images (the set has {len(dataset.x_train)})")
    if limit is not None:
        n_train = min(n_train, limit)
    train = dataset.x_train[:n_train], dataset.y_train[:n_train]
    held_out = (dataset.x_train[-validation:], dataset.y_train[-validation:]) if validation else None
    return train, held_out


def make_model(args) -> tuple[Sequential, str | None]:
    """The model to train and its name in :data:`fastconv.models.MODELS`
    (for a resumed checkpoint: the named model it is, or None)."""
    if args.resume:
        model = Sequential.load(args.resume, backend=args.backend, algorithm=args.algorithm)
        model.fuse = args.fuse
        return model, named_model(model)
    if not args.batch_norm and args.model not in models.WITH_BATCH_NORM:
        raise ValueError(f"--no-batch-norm: model {args.model} has no batch norm layers "
                         f"(only {', '.join(models.WITH_BATCH_NORM)} has)")
    model = models.build(args.model, backend=args.backend, algorithm=args.algorithm, seed=args.seed,
                         batch_norm=args.batch_norm)
    model.fuse = args.fuse
    lr = DEFAULT_LR if args.lr is None else args.lr
    if args.optimizer == "adam":
        model.optimizer = Adam(lr=lr)
    else:
        model.optimizer = SGD(lr=lr, momentum=0.9, nesterov=True)
    return model, args.model


def checkpoint_path(args) -> str:
    """Where to save after every epoch: ``--save`` ('' for nowhere), else the
    ``--resume`` file, so resuming carries that file on, else
    ``fastconv-<model>.npz``."""
    if args.save is not None:
        return args.save
    return args.resume or f"fastconv-{args.model}.npz"


def on_disk(path) -> str:
    """What the checkpoint at ``path`` holds now, read back from the file
    (an interrupted save leaves the previous file, or none), as a clause for
    the interrupt message; empty when checkpoints are off."""
    if not path:
        return ""
    try:
        return f"; the checkpoint {path} holds epoch {checkpoint.read(path).epoch}"
    except CheckpointError as error:
        return f"; no usable checkpoint ({error})"


def format_confusion(matrix, names) -> str:
    width = max(6, max(len(str(v)) for v in matrix.flat) + 1, max(len(n) for n in names) + 1)
    label_width = max(len(n) for n in names) + 2
    lines = ["true \\ predicted".ljust(label_width) + "".join(n[:width - 1].rjust(width) for n in names)]
    for name, row in zip(names, matrix):
        lines.append(name.ljust(label_width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def metrics(args, model, run, test=None, profile=None):
    payload = {
        "model": args.model if not args.resume else args.resume,
        "dataset": args.dataset,
        "params": model.param_count(),
        "non_trainable_params": model.buffer_count(),
        "batch_size": args.batch_size,
        "lr_schedule": run["lr_schedule"],
        "augment": run["augment"].config() if run["augment"] else None,
        "backend": args.backend,
        "algorithm": args.algorithm,
        "epochs": [
            {key: values[i] for key, values in model.history.as_dict().items()}
            for i in range(len(model.history))
        ],
    }
    if test is not None:
        payload["test_loss"], payload["test_accuracy"] = test
    if profile is not None:
        payload["profile"] = profile.as_dict()
    return payload


def train(args) -> int:
    out = sys.stdout
    model, model_name = make_model(args)  # before the data: a bad --resume file fails at once
    chosen = settings(args, model_name)
    if model.epoch >= chosen["epochs"]:
        raise ValueError(f"{args.resume} already holds {model.epoch} epochs; ask for more with --epochs")
    run = {"lr_schedule": chosen["lr_schedule"], "augment": RandomAffine() if chosen["augment"] else None}
    schedule = lr_schedule(chosen["lr_schedule"], args, chosen["epochs"])
    dataset = data.load_dataset(args.dataset, args.data_dir, progress=not args.quiet)
    (x_train, y_train), validation = split(dataset, args.validation, args.limit)
    save_path = checkpoint_path(args)
    if not args.quiet:
        model.summary(file=out)
        print(f"{args.dataset}: training on {len(x_train)} images from {dataset.directory}"
              + (f", validating on {len(validation[0])}" if validation else ""), file=out)
        print(f"{chosen['epochs']} epochs, {type(model.optimizer).__name__} lr "
              f"{(schedule.base_lr if schedule else model.optimizer.lr):g}, "
              f"{chosen['lr_schedule']} schedule, augmentation "
              + (repr(run["augment"]) if run["augment"] else "off"), file=out)

    saving = {"epoch": None}  # the epoch being written, for an interrupt during the save

    def on_epoch_end(epoch, logs):
        if save_path:
            saving["epoch"] = epoch
            model.save(save_path)
            saving["epoch"] = None
        if args.metrics_out:
            write_json_atomically(args.metrics_out, metrics(args, model, run))
        if not args.quiet:
            val = (f", val_loss {logs['val_loss']:.4f}, val_acc {logs['val_accuracy']:.4f}"
                   if logs["val_loss"] is not None else "")
            print(f"epoch {epoch}: lr {logs['lr']:.3g}, loss {logs['loss']:.4f}, acc {logs['accuracy']:.4f}{val}, "
                  f"{logs['seconds']:.1f} s, {logs['images_per_second']:.0f} img/s"
                  + (f", saved {save_path}" if save_path else ""), file=out)

    profile = StepProfile() if args.profile else None
    start = time.perf_counter()
    try:
        model.fit(x_train, y_train, epochs=chosen["epochs"], batch_size=args.batch_size,
                  validation_data=validation, verbose=not args.quiet,
                  on_epoch_end=on_epoch_end, initial_epoch=model.epoch, profile=profile,
                  augment=run["augment"], lr_schedule=schedule)
    except KeyboardInterrupt:
        when = (f"while saving epoch {saving['epoch']}" if saving["epoch"] is not None
                else f"during epoch {model.epoch + 1}")
        print(f"\ninterrupted {when}{on_disk(save_path)}", file=sys.stderr)
        return 130
    train_seconds = time.perf_counter() - start

    test_loss, test_accuracy = model.evaluate(dataset.x_test, dataset.y_test)
    print(f"test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}) on {len(dataset.y_test)} images, "
          f"after {model.epoch} epochs; training took {train_seconds:.1f} s", file=out)
    if not args.quiet:
        predicted = model.predict(dataset.x_test).argmax(axis=1)
        matrix = confusion_matrix(dataset.y_test, predicted, len(dataset.classes))
        print(format_confusion(matrix, dataset.classes), file=out)
    if profile is not None:
        print(f"\nprofile ({'fused' if model.fuse else 'unfused'}, batch {args.batch_size}):", file=out)
        print(profile.table(), file=out)
    if args.metrics_out:
        write_json_atomically(args.metrics_out, metrics(args, model, run, (test_loss, test_accuracy), profile))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return train(args)
    except (FileNotFoundError, ValueError, OSError) as error:
        # Missing or corrupt data, a bad checkpoint, an unwritable path: the
        # message says what to do; a traceback would only hide it.
        print(f"fastconv-train: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
