"""Calling a learner's function safely: what ``fastconv-check`` runs each
case through.

A learner's function may raise, return anything, write into its inputs,
loop for ever or crash the interpreter (a Numba kernel indexing past an
array: Numba does no bounds checking). :class:`ProcessRunner` therefore
loads it in a process of its own (``multiprocessing``, started with
"spawn": a fork of a process whose OpenMP and Numba thread pools have
started can deadlock) and sends it one case at a time through a pipe; a
call that has not answered within the time limit is stopped by killing
that process: a pure-Python loop cannot be interrupted from another
thread, and a compiled one not even by a signal. The process lives for the
whole battery, so a Numba function compiles once per argument type, not
once per case. :class:`InProcessRunner` calls the function directly, with
no time limit (for tests and notebooks, with functions that cannot be
pickled).

Every call reports an :class:`Outcome`: what the function returned or the
traceback of what it raised, the inputs it wrote into (compared with
copies taken before the call), and the seconds it took.

Library only, and light: the worker process imports NumPy and
:mod:`fastconv.user_variants`, and the benchmark modules only to time.
"""
from __future__ import annotations

import multiprocessing
import time
import traceback
from dataclasses import dataclass

import numpy as np

RETURNED, RAISED, TIMED_OUT, CRASHED = "returned", "raised", "timed out", "crashed"

VIEWS = "views"
"""A case's layout when each array argument is to be passed as a
non-C-contiguous view of its values (:func:`non_contiguous`)."""


@dataclass
class Outcome:
    """What one call of the learner's function did.

    kind: :data:`RETURNED`, :data:`RAISED`, :data:`TIMED_OUT` (stopped at
    the time limit) or :data:`CRASHED` (the worker process died);
    value: what it returned (:class:`Unpicklable` if that could not be sent
    back); error: the traceback, or what happened; modified: the names of
    the inputs whose values changed during the call; seconds: wall time.
    """

    kind: str
    value: object = None
    error: str = ""
    modified: tuple = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Unpicklable:
    """Stands for a returned object that could not be sent back."""

    type_name: str
    text: str


def non_contiguous(a):
    """The values of ``a`` in memory that is not C-contiguous: a strided
    view (every other element of a doubled array) for 1-D and 4-D
    arrays, Fortran order for the rest."""
    a = np.asarray(a)
    if a.size <= 1:
        return a
    if a.ndim in (1, 4):
        return np.repeat(a, 2, axis=a.ndim - 1)[..., ::2]
    view = np.asfortranarray(a)
    return view if not view.flags.c_contiguous else a[::-1][::-1]


def _arranged(args, layout):
    if layout != VIEWS:
        return tuple(args)
    return tuple(non_contiguous(a) if isinstance(a, np.ndarray) else a for a in args)


def _learner_traceback(error: BaseException) -> str:
    """The traceback without the frames of this module: where in the
    learner's code it went wrong."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


def call_once(function, args, names, layout="C") -> Outcome:
    """Call ``function(*args)`` here, reporting what it did (never raises
    for what the function raises; a KeyboardInterrupt still stops)."""
    # Copies: a function that writes into its arguments must not change the
    # caller's arrays (the battery's cases, in this process).
    args = _arranged([a.copy() if isinstance(a, np.ndarray) else a for a in args], layout)
    before = {n: a.copy() for n, a in zip(names, args) if isinstance(a, np.ndarray)}
    start = time.perf_counter()
    try:
        value = function(*args)
    except (Exception, SystemExit) as error:  # noqa: BLE001  (the learner's code may raise anything)
        return Outcome(RAISED, error=_learner_traceback(error), seconds=time.perf_counter() - start,
                       modified=_modified(before, args, names))
    seconds = time.perf_counter() - start
    return Outcome(RETURNED, value, modified=_modified(before, args, names), seconds=seconds)


def _modified(before, args, names):
    return tuple(n for n, a in zip(names, args)
                 if n in before and not np.array_equal(before[n], a, equal_nan=before[n].dtype.kind == "f"))


def time_variant(op, work, name, repeat):
    """Seconds per call of the user variant ``name`` of ``op`` on the
    benchmark workload ``work`` (through :mod:`fastconv.ops`), after a
    warm-up call (which compiles a Numba function): the median of
    ``repeat`` samples, or one call when ``repeat`` is 0 or a call takes
    over a second."""
    from fastconv.workloads import median_seconds

    call = work.call("user", name)
    call()
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    return once if once > 1.0 or repeat == 0 else median_seconds(call, repeat)


def _timed(function, op, work, repeat) -> Outcome:
    """:func:`time_variant` of ``function`` registered as the user variant
    "yours" of ``op``, as an Outcome."""
    from fastconv import user_variants

    user_variants.register_variant(op, function, name=TIMED_NAME)
    try:
        return Outcome(RETURNED, time_variant(op, work, TIMED_NAME, repeat))
    except (Exception, SystemExit) as error:  # noqa: BLE001
        return Outcome(RAISED, error=_learner_traceback(error))
    finally:
        user_variants.unregister_variant(op, TIMED_NAME)


TIMED_NAME = "yours"
"""The name a learner's function is timed under (as a user variant)."""


class InProcessRunner:
    """Calls the function in this process: no time limit, no protection
    against a crash, but any function (a closure, a lambda) will do."""

    description = "in this process, with no time limit"

    def __init__(self, function):
        self.function = function

    def call(self, args, names, layout="C") -> Outcome:
        return call_once(self.function, args, names, layout)

    def time(self, op, work, repeat=3, limit=None) -> Outcome:
        """An Outcome whose value is the seconds per call (see :func:`time_variant`)."""
        return _timed(self.function, op, work, repeat)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(conn, target):
    """The worker process: load ``target`` (FILE.py:FUNCTION), answer each
    request on ``conn`` until told to stop or the pipe closes."""
    from fastconv import user_variants

    try:
        function = user_variants.load_function(target)
    except user_variants.LoadError as error:
        conn.send(("load failed", str(error)))
        return
    conn.send(("loaded", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request[0] == "stop":
            return
        if request[0] == "call":
            _, args, names, layout = request
            outcome = call_once(function, args, names, layout)
        else:  # "time"
            _, op, work, repeat = request
            outcome = _timed(function, op, work, repeat)
        try:
            conn.send(outcome)
        except Exception:  # noqa: BLE001  (what cannot be pickled raises one of several errors)
            outcome.value = Unpicklable(type(outcome.value).__name__, repr(outcome.value)[:200])
            conn.send(outcome)


class ProcessRunner:
    """Runs ``target`` ("FILE.py:FUNCTION") in a worker process of its own,
    each call stopped after ``timeout`` seconds (by killing the worker; the
    next call starts a new one). :class:`fastconv.user_variants.LoadError`
    if the file cannot be loaded."""

    def __init__(self, target: str, timeout: float = 10.0):
        self.target, self.timeout = target, float(timeout)
        self.description = f"in a separate process, stopped after {self.timeout:g} s per case (--timeout)"
        self._process = self._conn = None
        self._start()

    def _start(self):
        from fastconv.user_variants import LoadError

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.target), daemon=True,
                                        name="fastconv-check worker")
        self._process.start()
        child.close()
        # Loading runs the learner's file: a module-level loop may hang too.
        answer = self._receive(max(self.timeout, 60.0))
        if answer.kind != RETURNED:
            self.close()
            raise LoadError(f"{self.target}: loading the file {answer.kind}: {answer.error}")
        kind, message = answer.value
        if kind == "load failed":
            self.close()
            raise LoadError(message)

    def _receive(self, timeout) -> Outcome:
        start = time.perf_counter()
        if not self._conn.poll(timeout):
            self.close()
            return Outcome(TIMED_OUT, error=f"did not finish within {timeout:g} s, so it was stopped",
                           seconds=time.perf_counter() - start)
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(1)
            code = self._process.exitcode
            self.close()
            return Outcome(CRASHED, error=f"the worker process ended (exit code {code})",
                           seconds=time.perf_counter() - start)
        return message if isinstance(message, Outcome) else Outcome(RETURNED, message)

    def _request(self, message, timeout) -> Outcome:
        if self._process is None:
            self._start()
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError):
            self.close()
            return Outcome(CRASHED, error="the worker process had ended")
        return self._receive(timeout)

    def call(self, args, names, layout="C") -> Outcome:
        return self._request(("call", tuple(args), tuple(names), layout), self.timeout)

    def time(self, op, work, repeat=3, limit=None) -> Outcome:
        """An Outcome whose value is the seconds per call (see
        :func:`time_variant`), stopped after ``limit`` seconds."""
        return self._request(("time", op, work, repeat), limit or 4 * self.timeout)

    def close(self):
        if self._process is not None:
            if self._process.is_alive():
                try:
                    self._conn.send(("stop",))
                except (BrokenPipeError, OSError):
                    pass
                self._process.join(0.2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._conn.close()
        self._process = self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
