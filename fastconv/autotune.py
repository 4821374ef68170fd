"""``auto`` variant selection: time each candidate once per call signature and
remember the fastest, in memory and on disk.

A choice is kept per (op, requested backend and algorithm, shapes, dtype,
thread count) in ``autotune.json`` in the cache folder
(:func:`fastconv.settings.cache_dir`). The file holds one section per
machine fingerprint (CPU model, SIMD features, fastconv version, the
installed kernels), so a shared home directory, a new CPU, an upgrade or a
rebuild measures afresh. The file is replaced atomically, under a lock, so
two processes tuning at once keep each other's choices; when it cannot be
read or written the choices simply live in memory for the process.

Which variants a first call times: when both backends may serve it
(``backend="auto"``), only those compiled ahead of time (Cython's), which
run at once; timing Numba's would first compile each of them, seconds of
waiting on a new machine for a choice that differs little (the twins run
the same algorithms). ``fastconv-bench --tune`` (:func:`tune`) compiles and
times every variant, Numba's too, at the shapes of the built-in networks
and saves those choices, which ``auto`` then uses. A call that asks for
Numba by name times Numba's variants, compiling them once.

``FASTCONV_BACKEND`` and ``FASTCONV_ALGORITHM`` force a variant for every
call that leaves ``backend`` or ``algorithm`` at ``"auto"``; an explicit
argument wins over them. ``FASTCONV_DEBUG=1`` logs every choice with the
timings it rests on (logger ``fastconv.autotune``, on stderr).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import fastconv
from fastconv import cpu, op_table, registry, settings, threads, user_variants
from fastconv.atomic import locked, write_atomically

BACKEND_ENV, ALGORITHM_ENV = settings.BACKEND, settings.ALGORITHM
CACHE_FILE = "autotune.json"
_FORMAT = 1

AHEAD_OF_TIME = ("cython",)
"""Backends whose kernels are compiled when fastconv is installed: timing
them costs no compilation."""

log = logging.getLogger(__name__)

# SIMD feature names (as LLVM reports them) that decide which kernel is fastest.
_SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "neon", "asimd", "sve", "altivec", "vsx")

_fastest: dict = {}
_tuning = False  # inside tuning(): measure every backend, saved choices or not


# ------------------------------------------------------------ what is asked


def forced(backend: str, algorithm: str, op: str | None = None) -> tuple[str, str]:
    """``backend``/``algorithm`` with each ``"auto"`` replaced by its
    environment variable when that is set (ValueError for unknown names).
    Given ``op``, a forced algorithm that op does not have at all (im2col
    for batch norm, gemm for pooling) leaves it at ``"auto"``, so one
    variable can force the convolutions of a whole network."""
    if backend == "auto" and settings.forced_backend():
        backend = settings.forced_backend()
        if backend not in registry.available_backends():
            raise ValueError(
                f"{BACKEND_ENV}={backend!r} is not a backend; "
                f"choose from {registry.available_backends()}"
            )
    if algorithm == "auto" and settings.forced_algorithm():
        algorithm = settings.forced_algorithm()
        known = registry.ALGORITHMS + (registry.REFERENCE[1],)
        if algorithm not in known:
            raise ValueError(f"{ALGORITHM_ENV}={algorithm!r} is not an algorithm; choose from {known}")
        if op is not None and algorithm not in op_table.op(op).algorithms + (registry.REFERENCE[1],):
            algorithm = "auto"
    return backend, algorithm


def candidates(op, backend, algorithm, *, ahead_of_time_only=False, excluded=()):
    """Variants of ``op`` matching ``backend``/``algorithm`` (either may be
    ``"auto"``). The NumPy reference and the naive loops take part only when
    asked for by name: they are the documentation versions, never the
    fastest on a real shape, and timing naive on a large batch would cost
    seconds for nothing. A learner's variant (backend ``"user"``) takes part
    only when asked for by its name or with ``backend="user"``: ``auto``
    never picks one. ``ahead_of_time_only`` keeps only the
    :data:`AHEAD_OF_TIME` backends' variants where ``backend`` is
    ``"auto"`` (see the module docstring). ``excluded`` algorithms cannot
    compute the call (Winograd for a 5x5 kernel) and take no part."""
    found = [
        (b, a) for b, a in registry.variants(op, backend=backend) if algorithm in ("auto", a) and a not in excluded
    ]
    if algorithm == "auto" and backend != user_variants.BACKEND:
        found = [v for v in found if v[0] != user_variants.BACKEND]
    if algorithm == "auto":
        found = [v for v in found if v[1] != "naive"] or found
    if backend == "auto" and algorithm == "auto":
        found = [v for v in found if v != registry.REFERENCE]
    if backend == "auto" and ahead_of_time_only:
        found = [v for v in found if v[0] in AHEAD_OF_TIME] or found
    if not found:
        raise ValueError(
            f"no variant of {op} matches backend={backend!r}, algorithm={algorithm!r}; "
            f"available: {registry.variants(op)}{user_variants.hint(op, algorithm)}"
        )
    return found


# ------------------------------------------------------------ the disk cache


def kernels_digest() -> str:
    """A short hash of the installed kernel modules (names, sizes, times):
    it changes with every rebuild or upgrade of the kernels, whose timings
    the choices saved before no longer describe."""
    from fastconv import kernels

    folder = Path(kernels.__file__).parent
    entries = sorted(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.suffix in (".py", ".so", ".pyd")
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


@functools.cache
def machine() -> dict:
    """What makes timings of this machine comparable: CPU model, the Cython
    build in use, LLVM's name for the CPU, its SIMD features, the fastconv
    version and the kernels installed (:func:`kernels_digest`)."""
    import llvmlite.binding as llvm

    from fastconv import isa

    features = llvm.get_host_cpu_features()
    return {
        "cpu": cpu.model_name(),
        "cython_build": isa.chosen(),
        "llvm_cpu": llvm.get_host_cpu_name(),
        "simd": sorted(f for f, on in features.items() if on and f.startswith(_SIMD_PREFIXES)),
        "fastconv": fastconv.__version__,
        "kernels": kernels_digest(),
    }


def fingerprint(description: dict) -> str:
    """Short stable hash of a :func:`machine` description."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def cache_path() -> Path:
    """Where the choices are kept (``FASTCONV_CACHE`` read on every call)."""
    return settings.cache_dir() / CACHE_FILE


class ChoiceStore:
    """The choices of one machine in one JSON file.

    Layout: ``{"format": 1, "machines": {fingerprint: {"machine": {...},
    "choices": {signature: [backend, algorithm]}}}}``; sections of other
    machines are kept untouched. Never raises for an unreadable, corrupt or
    unwritable file: a miss, or a choice not saved, is the worst outcome.
    """

    def __init__(self, path, description=None):
        self.path = Path(path)
        self.description = machine() if description is None else description
        self.section = fingerprint(self.description)

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                document = json.load(f)
        except (OSError, ValueError):
            return {}
        valid = isinstance(document, dict) and document.get("format") == _FORMAT
        return document if valid and isinstance(document.get("machines"), dict) else {}

    def _choices(self, document) -> dict:
        section = document.get("machines", {}).get(self.section)
        choices = section.get("choices") if isinstance(section, dict) else None
        return choices if isinstance(choices, dict) else {}

    def get(self, signature: str):
        """The ``(backend, algorithm)`` saved for ``signature``, else None."""
        choice = self._choices(self._read()).get(signature)
        valid = isinstance(choice, list) and len(choice) == 2 and all(isinstance(s, str) for s in choice)
        return tuple(choice) if valid else None

    def put(self, signature: str, choice) -> None:
        """Save a choice, merged into the file as it is now, atomically and
        under the file's lock: another process's read-merge-write waits, so
        neither loses the other's choices."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with locked(self.path):
                document = self._read() or {"format": _FORMAT, "machines": {}}
                choices = self._choices(document)
                choices[signature] = list(choice)
                document["machines"][self.section] = {"machine": self.description, "choices": choices}
                write_atomically(self.path, lambda f: json.dump(document, f, indent=1, sort_keys=True),
                                 binary=False)
        except OSError:
            pass  # an unwritable cache: the choice lives in memory only


# ------------------------------------------------------------ choosing


def _signature(memo) -> str:
    """The cache key of a memo tuple; dtypes are written by name."""
    return json.dumps(memo, default=str)


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


TIMED_RUNS = 3


def _measure(op, options, run):
    """The variant with the shortest best-of-:data:`TIMED_RUNS` time. The
    best of a few, not one: a single timing on a shared machine can be
    several times too long, and a wrong choice is kept on disk. The runs
    take turns (each variant once, then each again, ...): a machine slowed
    for a while (a busy neighbour, a lower clock) then slows every variant
    alike, where all of one variant's runs before the next's gave the
    choice to whichever ran in the faster spell."""
    kernels = {variant: registry.kernel(op, *variant) for variant in options}
    for kernel in kernels.values():
        run(kernel)  # warm-up: JIT compilation, first-touch of buffers
    timings = dict.fromkeys(kernels, math.inf)
    for _ in range(TIMED_RUNS):
        for variant, kernel in kernels.items():
            timings[variant] = min(timings[variant], _seconds(lambda: run(kernel)))
    choice = min(timings, key=timings.get)
    if settings.debug():
        _debug(f"{op}: timed " + ", ".join(f"{b}/{a} {t * 1e3:.3f} ms" for (b, a), t in timings.items())
               + f"; chose {choice[0]}/{choice[1]}")
    return choice


def _debug(message: str) -> None:
    """Log ``message`` for FASTCONV_DEBUG, on stderr unless the program
    configured logging itself."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fastconv auto: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.debug(message)


def fastest_kernel(op, backend, algorithm, key, run, excluded=()):
    """The kernel of the fastest candidate variant for this call.

    ``key`` describes the call (shapes, geometry, dtype). The first call of
    a signature in a process reads the disk cache, or else runs every
    candidate through ``run(kernel)`` (once to compile and warm up, then
    the best of :data:`TIMED_RUNS` timed calls) and saves the fastest.
    ``excluded`` algorithms do not apply to this call (see
    :func:`candidates`).
    """
    backend, algorithm = forced(backend, algorithm, op)
    memo = (op, backend, algorithm, key, threads.num_threads())
    choice = _fastest.get(memo)
    if choice is None:
        choice = _choose(op, backend, algorithm, memo, run, excluded, every_backend=_tuning)
        _fastest[memo] = choice
    return registry.kernel(op, *choice)


def _choose(op, backend, algorithm, memo, run, excluded, *, every_backend=False):
    """The saved choice for ``memo``, else the fastest candidate, measured
    and saved; ``every_backend`` measures Numba's variants too, and again
    even when a choice is saved (:func:`tune`)."""
    options = candidates(op, backend, algorithm, excluded=excluded)
    if len(options) == 1:
        return options[0]
    store = ChoiceStore(cache_path())
    signature = _signature(memo)
    choice = None if every_backend else store.get(signature)
    if choice in options:
        if settings.debug():
            _debug(f"{op}: {choice[0]}/{choice[1]}, as saved in {store.path} for {signature}")
        return choice
    # none saved, or a variant that is gone
    if not every_backend:
        options = candidates(op, backend, algorithm, ahead_of_time_only=True, excluded=excluded)
    choice = _measure(op, options, run)
    store.put(signature, choice)
    return choice


@contextlib.contextmanager
def tuning():
    """Within the ``with`` block, each ``auto`` call measures every
    candidate of every backend (compiling Numba's first) and saves its
    choice over any saved before; what :func:`fastconv.bench` runs for
    ``--tune``. Choices held in memory are dropped first."""
    global _tuning
    forget()
    _tuning = True
    try:
        yield
    finally:
        _tuning = False


def chosen(op, backend="auto", algorithm="auto"):
    """``{key: (backend, algorithm)}`` picked so far in this process for
    ``op`` at the current thread count (for reports)."""
    backend, algorithm = forced(backend, algorithm, op)
    now = threads.num_threads()
    return {m[3]: v for m, v in _fastest.items() if m[:3] == (op, backend, algorithm) and m[4] == now}


def forget() -> None:
    """Drop the choices held in memory; the disk cache stays (the next call
    of each signature reads it, or measures again)."""
    _fastest.clear()
