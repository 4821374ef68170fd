"""Grading a learner's function with the battery every built-in variant
passes (:mod:`fastconv.battery`), reporting like a teacher: the smallest
failing case as arrays small enough to read, expected beside got, and a
diagnosis where a common mistake explains the difference
(:mod:`fastconv.mistakes`); and, for a correct function, its speed beside
the built-in variants at the MNIST CNN's layers.

The stages run in order and stop at the first failure:
teaching cases (smallest first, each adding one thing), hypothesis shapes
(the edge cases, then random geometry; a failure is shrunk to the
smallest case that still fails), numerical gradients (backward ops),
float32, non-contiguous inputs. Every call also checks that the function
wrote into none of its inputs.

Library: ``fastconv-check`` (:mod:`fastconv.check`) is its command; a
notebook can call :func:`grade` with an :class:`~fastconv.runner.InProcessRunner`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Flaky

from fastconv import battery, mistakes, op_table, registry
from fastconv.runner import CRASHED, RAISED, TIMED_OUT, VIEWS, Outcome, Unpicklable


@dataclass
class Failure:
    """The first case the function failed.

    problem: what is wrong, in one sentence; mistakes: the common mistakes
    that explain it (may be empty); hint: advice for the stage, where no
    mistake explains it.
    """

    case: battery.Case
    outcome: Outcome
    expected: object
    problem: str
    mistakes: list = field(default_factory=list)
    hint: str = ""


@dataclass
class Report:
    """The result of :func:`grade`: cases passed per stage and the failure, if any."""

    op: str
    target: str
    runner: str
    passed: dict = field(default_factory=dict)
    failure: Failure | None = None
    stage_sizes: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def total(self) -> int:
        return sum(self.passed.values())

    def text(self) -> str:
        return format_report(self)


# ------------------------------------------------------------ one case


def _parts(op, value):
    names = battery.RESULTS[op]
    return names, (tuple(value) if len(names) > 1 else (value,))


def _describe_type(value) -> str:
    if isinstance(value, Unpicklable):
        return f"a {value.type_name} ({value.text})"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}" + (f" ({value!r})" if value is None or np.isscalar(value) else "")


def problem(case, outcome: Outcome, expected) -> str | None:
    """What is wrong with ``outcome`` for ``case``, in a sentence; None if
    it is right (values, shapes, dtypes, and no input written into)."""
    if outcome.kind == TIMED_OUT:
        return f"it {outcome.error}"
    if outcome.kind == CRASHED:
        return f"it crashed the process running it ({outcome.error})"
    if outcome.kind == RAISED:
        return f"it raised {outcome.error.splitlines()[-1]}"
    value = outcome.value
    names, want = _parts(case.op, expected)
    if len(names) > 1:
        if not isinstance(value, (tuple, list)):
            return f"it returned {_describe_type(value)}; expected a tuple ({', '.join(names)})"
        if len(value) != len(names):
            return f"it returned {len(value)} values; expected {len(names)}: ({', '.join(names)})"
    _, got = _parts(case.op, value)
    for name, g, e in zip(names, got, want):
        if case.op == "out_size":
            if isinstance(g, bool) or not isinstance(g, (int, np.integer)):
                return f"it returned {_describe_type(g)}; expected the int {e}"
            if g != e:
                return f"it returned {g}; expected {e}"
            continue
        if not isinstance(g, np.ndarray):
            return f"{name} is {_describe_type(g)}; expected a NumPy array of shape {e.shape}"
        if g.shape != e.shape:
            return f"{name} has shape {g.shape}; expected {e.shape}"
        if g.dtype != e.dtype:
            return f"{name} is {g.dtype}; expected {e.dtype}"
        if not battery.close(g, e, case.rtol, case.exact):
            return f"{name} has the right shape but not the right values"
    if outcome.modified:
        return f"it wrote into its input{'s' * (len(outcome.modified) > 1)} {', '.join(outcome.modified)}"
    return None


_OUTCOME_HINTS = {
    TIMED_OUT: "A loop that never ends is the usual cause (a while loop whose variable never changes, or a "
               "step of 0). A Numba function also compiles on its first call with each new dtype, which "
               "can take several seconds: if that is it, give it more time with --timeout.",
    RAISED: "Run your function on the arguments above in Python to see where it goes wrong; the last line of "
            "the traceback says what happened, the line above it where.",
    CRASHED: "In Numba code that is most often an index past the end of an array: Numba does not check "
             "bounds. Run the check with NUMBA_DISABLE_JIT=1 in the environment: your function then runs as "
             "plain Python, which raises IndexError at the line that reads too far.",
}
_TYPE_HINT = ("Return NumPy arrays, as the op does: allocate the result with np.zeros(shape, dtype=x.dtype) "
              "and fill it in, and return several results as a tuple, in the order of the signature.")

_STAGE_HINTS = {
    "float32": "Given float32 arrays, return float32 ones (allocate with dtype=x.dtype, and let NumPy keep "
               "the dtype): a network trains in float32, half the memory and twice the SIMD width of float64.",
    "non-contiguous inputs": "The same values, but passed as views that are not C-contiguous (every other "
                             "element of a larger array, or Fortran order), give another result: your code "
                             "reads memory as if it were contiguous (through .data, np.frombuffer, ravel() "
                             "with computed offsets...). Index as x[n, c, i, j], or call "
                             "np.ascontiguousarray(x) first.",
    "numerical gradients": "Your gradient differs from the slope measured by nudging each input by "
                           "1e-6 (central differences) on the reference forward pass.",
}


def _dtype_hint(case, failure_problem) -> str:
    if " is float64; expected float32" in failure_problem:
        return _STAGE_HINTS["float32"]
    return ""


def run_case(runner, case) -> Failure | None:
    """Run one case; the Failure, diagnosed, or None if it passed."""
    outcome = runner.call(case.args, case.names, VIEWS if case.stage == battery.STAGES[4] else "C")
    expected = case.expected()
    found = problem(case, outcome, expected)
    if found is None:
        return None
    diagnosed = []
    if outcome.kind not in (RAISED, TIMED_OUT, CRASHED):
        diagnosed = mistakes.diagnose(case, outcome.value, expected)
    if outcome.modified:
        diagnosed.append(mistakes.INPUT_MODIFIED)
    if diagnosed:
        hint = ""
    elif outcome.kind in _OUTCOME_HINTS:
        hint = _OUTCOME_HINTS[outcome.kind]
    elif "expected a NumPy array" in found or "expected a tuple" in found or "values; expected" in found:
        hint = _TYPE_HINT
    else:
        hint = _dtype_hint(case, found) or _STAGE_HINTS.get(case.stage, "")
    return Failure(case, outcome, expected, found, diagnosed, hint)


# ------------------------------------------------------------ the battery


class _Failed(Exception):
    """Raised inside the hypothesis test: shrink me."""


class _Stopped(BaseException):
    """Raised inside the hypothesis test for a case that hung or crashed:
    not an Exception, so hypothesis stops at once instead of shrinking
    (each try could cost the whole time limit)."""


def _hypothesis_stage(runner, op, examples, count) -> Failure | None:
    failures = []

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False)
    @given(battery.hypothesis_cases(op))
    def check(case):
        failure = run_case(runner, case)
        if failure is None:
            count[0] += 1
            return
        failures.append(failure)
        if failure.outcome.kind in (TIMED_OUT, CRASHED):
            raise _Stopped
        raise _Failed

    try:
        check()
    except (_Failed, _Stopped, Flaky):
        return failures[-1]  # the last one run is the smallest hypothesis found
    except Exception as error:  # noqa: BLE001  (e.g. a flaky function: different results for one case)
        if failures:
            return failures[-1]
        raise error
    return None


DEFAULT_EXAMPLES = 30


def grade(runner, op: str, examples: int = DEFAULT_EXAMPLES, target: str = "") -> Report:
    """Run the battery of ``op`` (one of :data:`fastconv.battery.CHECKED_OPS`)
    on the function ``runner`` calls, ``examples`` hypothesis shapes;
    stops at the first failure."""
    if op not in battery.CHECKED_OPS:
        raise ValueError(f"unknown op {op!r}; choose from {battery.CHECKED_OPS}")
    report = Report(op, target, runner.description)
    fixed = battery.fixed_cases(op)
    for stage in battery.STAGES:
        cases = fixed[stage]
        if not cases and stage != battery.STAGES[1]:
            continue
        report.passed[stage] = 0
        report.stage_sizes[stage] = len(cases)
        for case in cases:
            failure = run_case(runner, case)
            if failure is not None:
                report.failure = failure
                return report
            report.passed[stage] += 1
        if stage == battery.STAGES[1] and examples > 0:
            count = [0]
            failure = _hypothesis_stage(runner, op, examples, count)
            report.passed[stage] += count[0]
            if failure is not None:
                report.failure = failure
                return report
    return report


# ------------------------------------------------------------ the report


MAX_PRINTED = 200
"""Arrays with more elements are summarised, not printed."""


def _array_text(a, indent="      ") -> str:
    """A small array as planes of rows; a large one as its shape and range."""
    if not isinstance(a, np.ndarray):
        return indent + repr(a)
    if a.size > MAX_PRINTED:
        return indent + f"({a.size} values from {np.nanmin(a):.4g} to {np.nanmax(a):.4g}: too many to print)"
    options = {"precision": 4, "suppress_small": True, "max_line_width": 100}
    if a.ndim == 4 and a.shape[:2] != (1, 1):
        lines = []
        for n, c in np.ndindex(a.shape[:2]):
            body = np.array2string(a[n, c], **options).replace("\n", "\n" + indent + "  ")
            lines.append(f"{indent}[{n}, {c}]: {body}")
        return "\n".join(lines)
    shown = a[0, 0] if a.ndim == 4 else a
    return indent + np.array2string(shown, **options).replace("\n", "\n" + indent)


def _argument_text(case) -> str:
    parts = []
    for name, value in zip(case.names, case.args):
        if isinstance(value, np.ndarray):
            parts.append(f"    {name} {value.shape} {value.dtype}{', not C-contiguous' * (case.stage == battery.STAGES[4])}:\n"
                         + _array_text(value))
        else:
            parts.append(f"    {name} = {value!r}")
    return "\n".join(parts)


def _where_differs(name, g, e, rtol) -> str:
    if not isinstance(g, np.ndarray) or not isinstance(e, np.ndarray) or g.shape != e.shape:
        return ""
    ge, ee = g.astype(np.float64), e.astype(np.float64)
    scale = float(np.max(np.abs(np.nan_to_num(ee)), initial=0.0))
    wrong = ~np.isclose(ge, ee, rtol=rtol, atol=rtol * scale, equal_nan=True)
    if not wrong.any():
        return ""
    at = tuple(int(i) for i in np.argwhere(wrong)[0])
    return (f"  {name} differs at {int(wrong.sum())} of {wrong.size} positions; the first, {name}{list(at)}: "
            f"expected {e[at]:.6g}, got {g[at]:.6g}")


def _results_text(case, failure) -> str:
    names, want = _parts(case.op, failure.expected)
    lines = []
    value = failure.outcome.value
    got = None
    if failure.outcome.kind not in (RAISED, TIMED_OUT, CRASHED):
        if len(names) == 1:
            got = (value,)
        elif isinstance(value, (tuple, list)) and len(value) == len(names):
            got = tuple(value)
    for k, (name, e) in enumerate(zip(names, want)):
        shape = f" {e.shape} {e.dtype}" if isinstance(e, np.ndarray) else ""
        lines.append(f"  expected {name}{shape}:\n" + _array_text(e))
        if got is not None:
            g = got[k]
            gshape = f" {g.shape} {g.dtype}" if isinstance(g, np.ndarray) else ""
            lines.append(f"  got {name}{gshape}:\n" + _array_text(g))
            differs = _where_differs(name, g, e, case.rtol)
            if differs:
                lines.append(differs)
    if got is None and failure.outcome.kind == "returned":
        lines.append(f"  got {_describe_type(value)}")
    return "\n".join(lines)


def _case_title(report, failure) -> str:
    case = failure.case
    sizes = report.stage_sizes.get(case.stage, 0)
    if case.stage == battery.STAGES[0]:
        return f"teaching case {report.passed.get(case.stage, 0) + 1} of {sizes}: {case.label}"
    if case.stage == battery.STAGES[1]:
        return (f"hypothesis shapes, the smallest failing case found (after {report.passed.get(case.stage, 0)} "
                f"passed): {case.label or _out_size_label(case)}")
    return f"{case.stage}: {case.label}"


def _out_size_label(case) -> str:
    return ", ".join(f"{n} {v}" for n, v in zip(case.names, case.args))


def format_report(report: Report) -> str:
    """The report as a teacher would write it."""
    who = f"{report.target} as {report.op}" if report.target else report.op
    if report.ok:
        lines = [f"PASS  {who}: all {report.total} checks passed"]
        for stage, count in report.passed.items():
            lines.append(f"  {stage:<22} {count:>3} passed")
        lines.append(f"  Each call ran {report.runner}; its inputs were compared before and after.")
        return "\n".join(lines)
    failure = report.failure
    case = failure.case
    lines = [f"FAIL  {who}", f"  on {_case_title(report, failure)}", "",
             f"  called {report.op}({', '.join(case.names)}) with", _argument_text(case), ""]
    if failure.outcome.kind in (RAISED, CRASHED, TIMED_OUT):
        lines.append(_results_text(case, failure))
        lines.append("")
        if failure.outcome.kind == RAISED:
            lines.append("  but it raised:")
            lines += ["    " + line for line in failure.outcome.error.splitlines()]
        elif failure.outcome.kind == TIMED_OUT:
            lines.append(f"  but it {failure.outcome.error}: the check runs your function {report.runner}.")
        else:
            lines.append(f"  but {failure.problem}.")
    else:
        lines.append(_results_text(case, failure))
        lines.append("")
        lines.append(f"  Wrong: {failure.problem}.")
    lines.append("")
    if failure.mistakes:
        for m in failure.mistakes:
            lines.append(f"Diagnosis: {m.title}.")
            lines.append("  " + _wrap(m.explain(report.op), "  "))
    elif failure.hint:
        lines.append("Hint: " + _wrap(failure.hint, "  "))
    elif failure.outcome.kind == "returned":
        lines.append("No common mistake explains this difference: work this case out by hand with the formula "
                     "(in the exercise, or the op's docstring in fastconv.ops) and compare your loops with it.")
    passed = [f"{n} {s.removesuffix('s') if n == 1 else s}" for s, n in report.passed.items() if n]
    later = [s for s in battery.STAGES if s not in report.passed and s in _stages_of(report.op)]
    lines.append("")
    lines.append("Passed before it: " + (", ".join(passed) if passed else "none")
                 + (". Not run yet: " + ", ".join(later) if later else "") + ".")
    return "\n".join(lines)


def _stages_of(op):
    fixed = battery.fixed_cases(op)
    return [s for s in battery.STAGES if fixed[s] or s == battery.STAGES[1]]


def _wrap(text, indent, width=92) -> str:
    import textwrap

    return textwrap.fill(text, width, subsequent_indent=indent)


# ------------------------------------------------------------ speed


@dataclass
class SpeedRow:
    layer: str
    variant: str
    batch: int
    seconds: float | None
    rate: float | None
    unit: str
    note: str = ""


TIMED_OPS = tuple(op for op in battery.CHECKED_OPS if op not in battery.EXERCISE_OPS)
"""The ops whose speed is compared (the exercises' out_size and im2col are not)."""


def speed_network(op: str) -> str:
    """The benchmark network whose layers time ``op``: the reference CNN's
    (conv1, pool1, conv2, pool2), or its fused blocks."""
    return "cnn-fused" if op in (op_table.FUSED.name, op_table.FUSED_BACKWARD.name) else "cnn"


def speed_rows(runner, op: str, batch: int = 64, repeat: int = 3, builtins=None, budget: float = 10.0):
    """Time the learner's function (through ``runner``) and the built-in
    variants of ``op`` at the MNIST CNN's layers, batch ``batch``.

    Each layer is first timed once at batch 1: a function that would take
    over ``budget`` seconds a call at ``batch`` on some layer is compared
    at batch 1, every variant with it. ``builtins``: the (backend,
    algorithm) pairs to time beside it (default: every compiled variant
    that can run the layer). Returns (rows, batch used).
    """
    from fastconv.workloads import Workload, median_seconds, workloads

    direction = "backward" if op_table.op(op).is_backward else "forward"
    works = workloads([speed_network(op)], [batch], [op], [direction])
    probes = {w.layer: runner.time(op, Workload(w.layer, 1, direction), 0, limit=budget * 3) for w in works}
    used = batch
    if any(p.kind == "returned" and p.value * batch > budget for p in probes.values()):
        used = 1
        works = workloads([speed_network(op)], [1], [op], [direction])
    rows = []
    for work in works:
        outcome = probes[work.layer]
        if outcome.kind == "returned":
            outcome = runner.time(op, work, repeat, limit=budget * 3)
        if outcome.kind == "returned":
            rate, unit = work.rate(outcome.value)
            rows.append(SpeedRow(work.layer.name, "yours", used, outcome.value, rate, unit))
        else:
            rows.append(SpeedRow(work.layer.name, "yours", used, None, None, "",
                                 f"{outcome.kind}: {outcome.error.splitlines()[-1] if outcome.error else ''}"))
        for variant in builtin_variants(work) if builtins is None else builtins:
            seconds = median_seconds(work.call(*variant), repeat)
            rate, unit = work.rate(seconds)
            rows.append(SpeedRow(work.layer.name, "/".join(variant), used, seconds, rate, unit))
    return rows, used


def builtin_variants(work) -> list[tuple[str, str]]:
    """The compiled variants that can run the benchmark workload ``work``."""
    return [v for v in work.variants() if v[0] in registry.COMPILED_BACKENDS]


def speed_table(rows) -> str:
    """Aligned columns: layer, variant, ms, throughput, and how many times
    faster than yours."""
    from fastconv.workloads import plain_number

    yours = {r.layer: r.seconds for r in rows if r.variant == "yours"}
    table = [("layer", "variant", "ms", "throughput", "as fast as yours")]
    for r in rows:
        if r.seconds is None:
            table.append((r.layer, r.variant, "-", "-", r.note))
            continue
        mine = yours.get(r.layer)
        ratio = "" if r.variant == "yours" or not mine else f"{plain_number(mine / r.seconds)}x"
        table.append((r.layer, r.variant, plain_number(r.seconds * 1e3), f"{plain_number(r.rate)} {r.unit}", ratio))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = []
    for k, row in enumerate(table):
        if k > 1 and row[0] != table[k - 1][0]:
            lines.append("")
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)
