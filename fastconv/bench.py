"""``fastconv-bench``: a quick table of every kernel variant on chosen layer
shapes (default: the reference CNN's layers at batch 64).

Each call is timed as ``timeit`` does: one warm-up call (JIT compilation,
first touch), then ``--repeat`` samples of enough calls to last a few
milliseconds, and the median sample is reported. This is a report for a
quick look; the pytest-benchmark suite in ``bench/`` is the benchmark.

With ``--tune`` it compiles and times every variant, Numba's too, for
``auto`` at the shapes the built-in models train and evaluate at (a
training step at batch 64, evaluation at batches 1, 64 and 256) and saves
the choices; ``auto`` on a new machine otherwise times only the Cython
variants, which need no compiling (see :mod:`fastconv.autotune`).

With ``--training`` it times whole training steps of each ``--model`` at
each ``--batch`` (forward, cross-entropy, backward, an SGD step with
momentum, on seeded noise of MNIST's shape), fastconv's beside PyTorch's on
the same network and starting weights when PyTorch is installed, taking
turns as ``--inference`` does.

With ``--user-variant OP=FILE.py:FUNCTION`` it times your own function
(:mod:`fastconv.user_variants`) as the variant ``user/FUNCTION`` beside the
built-ins.

With ``--inference`` it times whole evaluation forward passes instead, of
each ``--model`` (default: the reference CNN) at each ``--batch``: fastconv
(``Sequential.forward``, the model's compiled plan, :mod:`fastconv.plan`)
and, when they are installed, PyTorch eager under ``no_grad`` on the same
network and weights (:func:`fastconv.interop.torch_sequential`) and
onnxruntime running the model exported by
:func:`fastconv.interop.save_onnx`, with as many threads; a last column
gives fastconv's images per second over each other engine's. The engines
take turns, one sample each per round, so a machine that slows down or
speeds up mid-run moves every engine's median alike.

Columns: milliseconds per call, throughput (GFLOP/s for conv, GB/s for
pooling, counted as in :mod:`fastconv.workloads`), the conv as a percentage
of NumPy's float32 GEMM of the im2col-equivalent size (timed in the same
run), and the speedup over the naive algorithm of the same backend. A
conv's GFLOP/s are *effective*: the FLOPs of the direct convolution over
the time taken, whatever the algorithm did, so one that does less
arithmetic (Winograd: 16 multiplications per 2x2 output tile instead of
36) can read above 100% of GEMM; :data:`LEGEND` says so under the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
from tqdm import tqdm

from fastconv import autotune, interop, isa, models, registry, threads, user_variants
from fastconv.optim import SGD
from fastconv.state_dict import InteropError
from fastconv.workloads import NETWORKS, interleaved_median_seconds, median_seconds, plain_number, workloads

GEMM = ("numpy", "gemm")


@dataclass
class Row:
    layer: str
    batch: int
    op: str
    direction: str
    variant: str
    ms: float
    rate: float
    unit: str
    pct_of_gemm: float | None = None
    speedup_over_naive: float | None = None


def measure(works, backend, repeat, quiet=False) -> list[Row]:
    """Time every variant of ``backend`` (``"auto"``: all) on each workload,
    plus the GEMM limit for conv; fill in the comparisons. The progress bar
    shows on a terminal unless ``quiet``."""
    jobs = [
        (work, variant)
        for work in works
        for variant in work.variants(backend) + ([GEMM] if work.is_conv else [])
    ]
    rows, seconds = [], {}
    progress = tqdm(jobs, desc="fastconv-bench", unit="variant", disable=True if quiet else None)
    for work, variant in progress:
        fn = work.gemm_call() if variant == GEMM else work.call(*variant)
        seconds[work, variant] = t = median_seconds(fn, repeat)
        rate, unit = work.rate(t)
        name = "/".join(variant)
        rows.append(Row(work.layer.label, work.batch, work.op, work.direction, name, t * 1e3, rate, unit))
    for row, (work, variant) in zip(rows, jobs):
        t = seconds[work, variant]
        if work.is_conv:
            row.pct_of_gemm = 100 * seconds[work, GEMM] / t
        naive = seconds.get((work, (variant[0], "naive")))
        if naive is not None:
            row.speedup_over_naive = naive / t
    return rows


def _torch_forward(model):
    """PyTorch eager under no_grad on ``model``'s network and weights, with
    as many threads: a function of x (N, C, H, W). ImportError without torch."""
    import torch

    torch.set_num_threads(threads.num_threads())
    net = interop.torch_sequential(model)

    def forward(x):
        with torch.no_grad():
            return net(torch.from_numpy(x))

    return forward


def _onnxruntime_forward(model, folder):
    """onnxruntime on ``model``'s ONNX export (written in ``folder``), with
    as many intra-op threads: a function of x (N, C, H, W). ImportError
    without onnxruntime, InteropError without the onnx package."""
    import onnxruntime

    path = os.path.join(folder, f"{id(model)}.onnx")
    interop.save_onnx(model, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads.num_threads()
    options.inter_op_num_threads = 1  # one chain of nodes: nothing runs beside it
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"x": x})


def inference_rows(model_names, batches, repeat) -> list[tuple[str, str, int, float]]:
    """``(model, engine, batch, seconds per forward pass)`` for each model of
    ``model_names`` and each batch: fastconv (``Sequential.forward``, its
    compiled plan), PyTorch eager under ``no_grad`` on the same network and
    weights, and onnxruntime on its ONNX export, with as many threads. An
    engine that is not installed (or onnxruntime without the interop extra)
    is left out, with one line on stderr saying why. The engines' samples
    at each model and batch are interleaved
    (:func:`fastconv.workloads.interleaved_median_seconds`), so that each
    ratio compares them at the same moments of a machine whose speed
    changes."""
    import tempfile

    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n,) + models.INPUT_SHAPE, dtype=np.float32) for n in batches}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        makers = {"fastconv": lambda model: model.forward, "torch": _torch_forward,
                  "onnxruntime": lambda model: _onnxruntime_forward(model, folder)}
        for name in model_names:
            forwards = _made(makers, models.build(name, seed=0))
            for n in batches:
                calls = [partial(forward, inputs[n]) for forward in forwards.values()]
                rows += [(name, engine, n, seconds)
                         for engine, seconds in zip(forwards, interleaved_median_seconds(calls, repeat))]
    return rows


def _made(makers, *args) -> dict:
    """{engine: makers[engine](*args)} for each engine whose maker works.
    One that raises ImportError (not installed) or InteropError (the
    interop extra missing) is left out with a line on stderr, and removed
    from ``makers`` so that the line is printed once."""
    made = {}
    for engine in list(makers):
        try:
            made[engine] = makers[engine](*args)
        except (ImportError, InteropError) as error:
            print(f"fastconv-bench: {engine} left out ({error})", file=sys.stderr)
            del makers[engine]
    return made


def _fastconv_train_step(model, x, y):
    """fastconv's training step of ``model`` on the batch x (N, C, H, W), y
    (N,): forward, cross-entropy, backward and an SGD step with momentum,
    as bench/test_training.py times it."""
    optimizer = SGD(lr=0.01, momentum=0.9)
    return lambda: model.train_step(x, y, optimizer)


def _torch_train_step(model, x, y):
    """The same step in PyTorch on ``model``'s network and weights
    (:func:`fastconv.interop.torch_sequential`, a copy), with as many
    threads, as bench/test_torch.py times it. ImportError without torch."""
    import torch

    torch.set_num_threads(threads.num_threads())
    net = interop.torch_sequential(model).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()

    return step


def training_rows(model_names, batches, repeat) -> list[tuple[str, str, int, float]]:
    """``(model, engine, batch, seconds per training step)`` for each model
    of ``model_names`` and each batch: fastconv's step and PyTorch's on the
    same network and starting weights (seeded noise of MNIST's shape, which
    the kernels' speed does not depend on), their samples taken in turns
    as :func:`inference_rows` takes them. PyTorch is left out, with a line
    on stderr, when it is not installed."""
    rng = np.random.default_rng(0)
    rows = []
    makers = {"fastconv": _fastconv_train_step, "torch": _torch_train_step}
    for name in model_names:
        for n in batches:
            x = rng.random((n,) + models.INPUT_SHAPE, dtype=np.float32)
            y = rng.integers(0, models.CLASSES, n)
            steps = _made(makers, models.build(name, seed=0), x, y)
            rows += [(name, engine, n, seconds)
                     for engine, seconds in zip(steps, interleaved_median_seconds(list(steps.values()), repeat))]
    return rows


ENGINE_LEGEND = ("fastconv/engine: fastconv's images per second over the engine's "
                 "(above 1: fastconv is faster)")


def engine_records(rows) -> list[dict]:
    """The rows of ``--inference`` and ``--training`` as dicts: model,
    engine, batch, ms, images per second and, for the other engines,
    fastconv's images per second over theirs (None for fastconv)."""
    fastconv = {(name, n): t for name, engine, n, t in rows if engine == "fastconv"}
    return [{"model": name, "engine": engine, "batch": n, "ms": t * 1e3, "images_per_second": n / t,
             "fastconv_over_engine": None if engine == "fastconv" else t / fastconv[name, n]}
            for name, engine, n, t in rows]


ENGINE_COLUMNS = ("model", "N", "engine", "ms", "img/s", "fastconv/engine")


def _engine_cells(record) -> list[str]:
    ratio = record["fastconv_over_engine"]
    return [record["model"], str(record["batch"]), record["engine"], plain_number(record["ms"]),
            f"{record['images_per_second']:,.0f}", "" if ratio is None else f"{plain_number(ratio)}x"]


def engine_table(rows) -> str:
    """The table of ``--inference`` and ``--training``: one line per
    (model, batch, engine), with fastconv's speed over each other engine's
    at that model and batch."""
    widths, right = (9, 4, 12, 8, 9, 15), (False, True, False, True, True, True)
    lines = [ENGINE_COLUMNS] + [_engine_cells(record) for record in engine_records(rows)]
    return "\n".join("  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(line, widths, right)).rstrip()
                     for line in lines)


def engine_markdown(rows) -> str:
    """:func:`engine_table` as a Markdown table."""
    lines = ["| " + " | ".join(ENGINE_COLUMNS) + " |", "|---|---:|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(_engine_cells(record)) + " |" for record in engine_records(rows)]
    return "\n".join(lines)


COLUMNS = ("layer", "N", "op", "direction", "variant", "ms", "throughput", "% of GEMM", "vs naive")
FIRST_NUMBER = COLUMNS.index("ms")


def _cells(row: Row) -> list[str]:
    return [
        row.layer,
        str(row.batch),
        row.op.removesuffix("_backward"),
        row.direction,
        row.variant,
        plain_number(row.ms),
        f"{plain_number(row.rate)} {row.unit}",
        "" if row.pct_of_gemm is None else f"{plain_number(row.pct_of_gemm)}%",
        "" if row.speedup_over_naive is None else f"{plain_number(row.speedup_over_naive)}x",
    ]


def _aligned(cells, widths) -> str:
    return "  ".join(
        c.rjust(w) if i >= FIRST_NUMBER else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


LEGEND = ("conv GFLOP/s are effective: the direct convolution's FLOPs (2*N*F*C*KH*KW*OH*OW) over the time, "
          "so an algorithm that does less arithmetic (winograd) can exceed 100% of GEMM")


def text_table(rows) -> str:
    """Aligned columns, a blank line between workloads."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [_aligned(cells[0], widths)]
    for previous, row, line in zip([None] + rows, rows, cells[1:]):
        if previous is not None and (row.layer, row.batch, row.direction) != (
            previous.layer, previous.batch, previous.direction
        ):
            lines.append("")
        lines.append(_aligned(line, widths))
    return "\n".join(lines)


def markdown_table(rows) -> str:
    alignments = ["---"] * FIRST_NUMBER + ["---:"] * (len(COLUMNS) - FIRST_NUMBER)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(alignments) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _conditions(repeat) -> dict:
    return {
        "threads": threads.num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "repeat": repeat,
        "machine": autotune.machine(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-bench", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--network", nargs="+", choices=tuple(NETWORKS),
                        help="whose layer shapes to run (default: cnn)")
    parser.add_argument("--batch", nargs="+", type=int, default=[64], help="batch sizes (default: 64)")
    parser.add_argument("--ops", nargs="+", choices=registry.OPS, help="ops to run (default: all)")
    parser.add_argument("--backend", choices=("auto",) + registry.available_backends() + (user_variants.BACKEND,),
                        default="auto", help="one backend's variants only (user: those of --user-variant; "
                                             "default: all, the reference included)")
    parser.add_argument("--user-variant", action="append", default=[], metavar="OP=FILE.py:FUNCTION",
                        help="time your own function as a variant of OP, named after the function, beside the "
                             "built-ins; repeat for more (default: none)")
    parser.add_argument("--repeat", type=int, default=5, help="timed samples per variant (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="threads (default: FASTCONV_NUM_THREADS or all cores)")
    parser.add_argument("--tune", action="store_true",
                        help="compile and time every variant, Numba's too, for auto at the shapes the built-in "
                             "models train and evaluate at, save the choices and exit")
    parser.add_argument("--inference", action="store_true",
                        help="time whole evaluation forward passes instead, fastconv beside PyTorch eager and "
                             "onnxruntime (when installed) on the same network and weights "
                             "(default: the kernel table)")
    parser.add_argument("--training", action="store_true",
                        help="time whole training steps instead (forward, loss, backward, SGD with momentum), "
                             "fastconv beside PyTorch (when installed) on the same network and weights")
    parser.add_argument("--model", nargs="+", choices=models.MODELS,
                        help="with --inference or --training: whose passes or steps to time (default: cnn)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown (default: not written)")
    parser.add_argument("--json", metavar="PATH", help="also write rows and conditions as JSON (default: not written)")
    return parser


def unwritable(path) -> str | None:
    """Why a file cannot be written at ``path``, or None if it can."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a folder, not a file"
    if not os.path.isdir(folder):
        return f"no such folder {folder}"
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return "not writable"
    return None


def parse_args(argv):
    """The arguments, checked: an output that cannot be written is refused
    here, before minutes of timing are lost to it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1 or min(args.batch) < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeat, --batch and --threads must be >= 1")
    if args.inference and args.training:
        parser.error("--inference and --training are two different tables: choose one")
    engines = args.inference or args.training
    if args.tune and engines:
        parser.error("--tune saves auto's choices and exits: run it alone, then --inference or --training")
    if args.model and not engines:
        parser.error("--model goes with --inference or --training (the kernel table takes --network)")
    kernel_options = [option for option, given in (("--network", args.network), ("--ops", args.ops),
                                                   ("--backend", args.backend != "auto"),
                                                   ("--user-variant", args.user_variant)) if given]
    if engines and kernel_options:
        named = (kernel_options[0] + " is" if len(kernel_options) == 1
                 else f"{', '.join(kernel_options[:-1])} and {kernel_options[-1]} are")
        parser.error(f"{named} for the kernel table; --inference and --training time whole models "
                     "(choose them with --model)")
    args.model = args.model or ["cnn"]
    args.network = args.network or ["cnn"]
    args.user_functions = []
    for spec in args.user_variant:
        op, _, target = spec.partition("=")
        try:
            if op not in registry.OPS:
                raise ValueError(f"unknown op {op!r}; choose from {', '.join(registry.OPS)}")
            function = user_variants.load_function(target)
            # checked as main() will register it; registered only while main() runs
            user_variants.register_variant(op, function)
            user_variants.unregister_variant(op, function.__name__)
        except (ValueError, TypeError, user_variants.LoadError) as error:
            parser.error(f"--user-variant {spec}: {error}")
        args.user_functions.append((op, function))
    for option, path in (("--markdown", args.markdown), ("--json", args.json)):
        reason = path and unwritable(path)
        if reason:
            parser.error(f"{option} {path}: {reason}")
    return args


TUNED_MODELS = ("cnn", "cnn-deep", "lenet5")
TUNED_TRAINING_BATCH = 64
TUNED_EVALUATION_BATCHES = (1, 64, 256)


def tune(model_names=TUNED_MODELS, progress=True) -> int:
    """Run each model's training step and evaluation passes inside
    :func:`fastconv.autotune.tuning`, so every ``auto`` call they make
    measures every variant and saves its choice; returns how many choices
    were made."""
    rng = np.random.default_rng(0)
    with autotune.tuning():
        for name in tqdm(model_names, desc="tuning auto", unit="model", disable=not progress):
            model = models.build(name)
            x = rng.random((max(TUNED_EVALUATION_BATCHES), *model.input_shape), dtype=np.float32)
            y = rng.integers(0, 10, len(x))
            model.train_step(x[:TUNED_TRAINING_BATCH], y[:TUNED_TRAINING_BATCH], SGD(0.01))
            for batch in TUNED_EVALUATION_BATCHES:
                model.forward(x[:batch])
        return sum(len(autotune.chosen(op)) for op in registry.OPS)


def main(argv=None) -> int:
    args = parse_args(argv)
    for op, function in args.user_functions:
        user_variants.register_variant(op, function)
    try:
        return _run(args)
    finally:  # a caller in the same process (a test, a notebook) keeps its registry as it was
        for op, function in args.user_functions:
            user_variants.unregister_variant(op, function.__name__)


def _run(args) -> int:
    if args.threads is not None:
        threads.set_num_threads(args.threads)
    if args.tune:
        count = tune()
        print(f"tuned {count} auto choices at {threads.num_threads()} threads, saved in {autotune.cache_path()}")
        return 0
    if args.inference or args.training:
        names = ", ".join(args.model)
        rows, what = ((inference_rows, f"the whole evaluation forward pass of {names}") if args.inference
                      else (training_rows, f"a training step of {names} (SGD with momentum)"))
        conditions = _conditions(args.repeat) | {"timed": what}
        print(f"threads: {conditions['threads']}, median of {args.repeat} samples taken in turns, "
              f"{conditions['machine']['cpu']}; {what}")
        timed = rows(args.model, args.batch, args.repeat)
        print(engine_table(timed))
        print(ENGINE_LEGEND)
        _write_outputs(args, engine_markdown(timed), ENGINE_LEGEND, conditions, engine_records(timed))
        return 0
    works = workloads(args.network, args.batch, args.ops)
    if not works:
        print("no layer of the chosen networks runs the chosen ops", file=sys.stderr)
        return 2
    conditions = _conditions(args.repeat)
    rows = measure(works, args.backend, args.repeat)
    cpu = conditions["machine"]
    print(f"threads: {conditions['threads']}, load average before: {conditions['load_average']}, "
          f"median of {args.repeat} samples, {cpu['cpu']} ({cpu['llvm_cpu']}); Cython kernels: "
          f"the {cpu['cython_build']} build (this CPU runs {', '.join(isa.runnable())}), "
          f"Numba: compiled for {cpu['llvm_cpu']}")
    print(text_table(rows))
    if any(row.unit == "GFLOP/s" for row in rows):
        print(LEGEND)
    _write_outputs(args, markdown_table(rows), LEGEND, conditions, [asdict(r) for r in rows])
    return 0


def _write_outputs(args, markdown, legend, conditions, records) -> None:
    """The table as Markdown (with its legend) to ``--markdown``, and the
    conditions and rows as JSON to ``--json``, each if asked for."""
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown + "\n\n" + legend + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conditions": conditions, "rows": records}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
