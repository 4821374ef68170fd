"""``auto`` variant selection: time each candidate once per call signature
and remember the fastest for the rest of the process."""
from __future__ import annotations

import time

from fastconv import registry

_fastest: dict = {}


def candidates(op, backend, algorithm):
    """Variants of ``op`` matching ``backend``/``algorithm`` (either may be
    ``"auto"``). The NumPy reference takes part only when asked for by name."""
    found = [
        (b, a) for b, a in registry.variants(op, backend=backend) if algorithm in ("auto", a)
    ]
    if backend == "auto" and algorithm == "auto":
        found = [v for v in found if v != registry.REFERENCE]
    if not found:
        raise ValueError(
            f"no variant of {op} matches backend={backend!r}, algorithm={algorithm!r}; "
            f"available: {registry.variants(op)}"
        )
    return found


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_fastest(op, backend, algorithm, key, run):
    """Return ``run(kernel)`` for the fastest candidate variant; the first
    call for a ``key`` runs every candidate twice (compile, then time)."""
    memo = (op, backend, algorithm, key)
    choice = _fastest.get(memo)
    if choice is None:
        options = candidates(op, backend, algorithm)
        if len(options) == 1:
            choice = options[0]
        else:
            timings = {}
            for variant in options:
                kernel = registry.kernel(op, *variant)
                run(kernel)  # warm-up: JIT compilation, first-touch of buffers
                timings[variant] = _seconds(lambda: run(kernel))
            choice = min(timings, key=timings.get)
        _fastest[memo] = choice
    return run(registry.kernel(op, *choice))


def chosen(op, backend="auto", algorithm="auto"):
    """``{key: (backend, algorithm)}`` picked so far for ``op`` (for reports)."""
    return {m[3]: v for m, v in _fastest.items() if m[:3] == (op, backend, algorithm)}
