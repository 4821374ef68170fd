"""``fastconv-check FILE.py:FUNCTION --op OP``: check your own kernel with
the battery every built-in variant passes, and time it beside them.

Your function takes the op's arguments as ``fastconv.ops`` names them, with
plain ints for stride, padding and window sizes (``conv2d``:
``f(x, w, b=None, stride=1, padding=0)`` returning y; the others in
``fastconv.user_variants.SIGNATURES``). The battery (fastconv.battery):
teaching cases, hypothesis shapes (odd sizes, stride, padding, one channel,
batch 1, kernels as large as the input, pooling ties), numerical gradients
for backward ops, float32, non-contiguous inputs, and no writing into the
inputs. The report shows the smallest failing case with expected and got,
and the common mistake that explains the difference where one does; a
correct function is then timed beside the built-in variants at the MNIST
CNN's layers. Exit status 0 when every check passes, 1 otherwise.

Your function runs in a separate process, each case stopped after
``--timeout`` seconds, so a loop that never ends, an exception or a crash
is reported, never a hang of the checker.
"""
from __future__ import annotations

import argparse
import sys

from fastconv import battery, grading, registry, threads
from fastconv.runner import ProcessRunner
from fastconv.user_variants import LoadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-check", description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="Example: fastconv-check my_conv.py:conv2d --op conv2d")
    parser.add_argument("target", metavar="FILE.py:FUNCTION", help="the function to check")
    parser.add_argument("--op", required=True, choices=battery.CHECKED_OPS,
                        help="the op it implements (out_size and im2col are the exercises' own)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each case may take before it is stopped (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=grading.DEFAULT_EXAMPLES,
                        help="random hypothesis shapes to try (default: %(default)s)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument("--batch", type=int, default=64,
                        help="batch size of the speed comparison (default: %(default)s, the MNIST training "
                             "batch; 1 when your function would take long at it)")
    parser.add_argument("--repeat", type=int, default=3, help="timed samples per variant (default: %(default)s)")
    parser.add_argument("--compare", nargs="+", metavar="BACKEND/ALGORITHM",
                        help="built-in variants to time beside yours (default: every compiled variant that "
                             "can run the layer)")
    parser.add_argument("--faster-than", metavar="BACKEND/ALGORITHM",
                        help="also require your function to beat this built-in variant at the MNIST layers, "
                             "for example numba/naive (default: no speed requirement)")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.examples < 0 or args.batch < 1 or args.repeat < 1:
        parser.error("--timeout, --batch and --repeat must be positive and --examples at least 0")

    def variant(text, option):
        if args.op not in grading.TIMED_OPS:
            parser.error(f"{option}: {args.op} is not timed (only {', '.join(grading.TIMED_OPS)})")
        known = [v for v in registry.variants(args.op, include_reference=False)
                 if v[0] in registry.COMPILED_BACKENDS]
        found = tuple(text.split("/"))
        if found not in known:
            parser.error(f"{option} {text}: not a built-in variant of {args.op}; choose from "
                         + ", ".join("/".join(v) for v in known))
        return found

    if args.compare:
        args.compare = [variant(text, "--compare") for text in args.compare]
    if args.faster_than:
        if args.no_speed:
            parser.error("--faster-than needs the speed comparison: leave out --no-speed")
        args.faster_than = variant(args.faster_than, "--faster-than")
        if args.compare and args.faster_than not in args.compare:
            args.compare.append(args.faster_than)
    return args


def _speed(runner, args) -> int:
    """Print the speed table; 1 if --faster-than is not met, else 0."""
    print()
    rows, used = grading.speed_rows(runner, args.op, args.batch, args.repeat, builtins=args.compare)
    print(f"Speed at the MNIST CNN's layers, batch {used}, {threads.num_threads()} threads, median of "
          f"{args.repeat} samples, every variant through fastconv.ops (yours receives the input already padded):")
    if used != args.batch:
        print(f"(batch 1: at batch {args.batch} your function would take more than 10 s a call on some layer)")
    print(grading.speed_table(rows))
    if not args.faster_than:
        return 0
    name = "/".join(args.faster_than)
    mine = [r.seconds for r in rows if r.variant == "yours"]
    theirs = sum(r.seconds for r in rows if r.variant == name)
    if None in mine:
        print(f"\nFAIL  speed: your function did not finish every layer; it must beat {name}.")
        return 1
    if sum(mine) >= theirs:
        print(f"\nFAIL  speed: {sum(mine) * 1e3:.3g} ms over the layers, {name} takes {theirs * 1e3:.3g} ms: "
              f"not faster yet (prange over the batch and the filters, and an inner loop along a row, "
              "help).")
        return 1
    print(f"\nPASS  speed: {sum(mine) * 1e3:.3g} ms over the layers, {theirs / sum(mine):.2f}x faster than "
          f"{name} ({theirs * 1e3:.3g} ms).")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runner = ProcessRunner(args.target, args.timeout)
    except LoadError as error:
        print(f"FAIL  {args.target} as {args.op}: it could not be loaded:\n  {error}")
        return 1
    with runner:
        report = grading.grade(runner, args.op, args.examples, target=args.target)
        print(report.text())
        if not report.ok:
            return 1
        if args.no_speed or args.op not in grading.TIMED_OPS:
            return 0
        return _speed(runner, args)


if __name__ == "__main__":
    sys.exit(main())
