"""How many threads the kernels use: one number for Numba, OpenMP and BLAS.

``FASTCONV_NUM_THREADS`` (default: every core this process may run on) sets
Numba's thread count (``numba.set_num_threads``) and, through
``threadpoolctl``, the OpenMP threads of the Cython kernels and the BLAS
threads of NumPy's matrix products. :func:`set_num_threads` changes it while
running.

The threads never nest: a kernel parallelises its own loops (``prange``)
*outside* any BLAS call, and the im2col algorithm runs its unfold (parallel
loops) and its GEMM (parallel BLAS) one after the other. So at most this
many threads are busy at any moment, never prange threads times BLAS
threads.

They do interfere, though, when idle threads of one pool spin on the cores
that the other pool needs: OpenBLAS spins for about 2**28 cycles after each
call and libgomp (OpenMP, which Numba's threading layer uses too) for about
5 ms after each parallel loop, so an unfold that follows a GEMM waits for
the scheduler to preempt a spinning BLAS thread (a 4 ms time slice). On 2
cores that made two threads slower than one. Sleeping at once costs too,
though: waking a sleeping thread took about 0.1 ms on a virtual machine,
more than a small batch's whole work (at batch 4 an inference pass of the
reference CNN took 0.44-0.50 ms with sleeping threads, 0.18-0.26 with
briefly spinning ones, 0.24-0.32 on one thread: ``bench/idle_threads.py``).
:func:`wait_quietly`, run when fastconv is imported, therefore makes idle
BLAS threads sleep at once (``OPENBLAS_THREAD_TIMEOUT=4``) and idle OpenMP
threads spin for about 0.3 ms, long enough to carry over to the next
kernel of a pass, before they sleep (``GOMP_SPINCOUNT=30000``; not if
``OMP_WAIT_POLICY`` is set), each unless already set. A library reads them when it loads, which is why
fastconv's own matrix products go through SciPy's BLAS and not NumPy's
(:mod:`fastconv.kernels.blas`).

Numba's and OpenMP's counts hold for the thread that sets them, the one
that calls the kernels: a server's worker thread starts at every core
whatever the main thread set. So :func:`fastconv.ops` calls
:func:`in_this_thread` before each kernel, which applies the count in force
to a thread that has not had it yet (a dictionary look-up when it has).
Numba fixes the size of its pool when it starts (``NUMBA_NUM_THREADS``,
default: the cores); a larger request leaves Numba at that size.
"""
from __future__ import annotations

import os
import threading

from fastconv import settings
from fastconv.integers import positive_int, positive_int_text

ENV_VAR = settings.NUM_THREADS

_requested: int | None = None
_blas_pools = None  # threadpoolctl's view of the BLAS libraries, made by apply()
_applied = threading.local()  # .count: what apply() set in this thread


IDLE_THREADS_WAIT = {"GOMP_SPINCOUNT": "30000", "OPENBLAS_THREAD_TIMEOUT": "4"}
"""What :func:`wait_quietly` sets (see the module docstring)."""
WAIT_VARIABLES = ("OMP_WAIT_POLICY", *IDLE_THREADS_WAIT)
"""Every variable that decides how idle threads wait."""


def wait_quietly() -> None:
    """Ask thread pools loaded from now on to put idle threads to sleep
    soon rather than spin: BLAS at once, OpenMP after a brief spin (each
    variable only if not set already; the spin not if the user chose an
    ``OMP_WAIT_POLICY``)."""
    for name, value in IDLE_THREADS_WAIT.items():
        if name == "GOMP_SPINCOUNT" and settings.raw("OMP_WAIT_POLICY") is not None:
            continue
        os.environ.setdefault(name, value)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def num_threads() -> int:
    """The thread count in force: the last :func:`set_num_threads`, else
    ``FASTCONV_NUM_THREADS``, else :func:`available_cores`."""
    if _requested is not None:
        return _requested
    value = settings.num_threads()
    return positive_int_text(value, ENV_VAR) if value else available_cores()


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads from now on, in Numba, OpenMP and BLAS alike
    (``None``: back to ``FASTCONV_NUM_THREADS`` or every core)."""
    global _requested
    _requested = None if n is None else positive_int(n, "number of threads")
    apply()


def apply() -> None:
    """Impose :func:`num_threads` on every thread pool loaded so far.

    Called again after a kernel module loads (see :mod:`fastconv.registry`),
    because ``threadpoolctl`` reaches only libraries already in memory.
    """
    import numba
    from threadpoolctl import threadpool_limits

    global _blas_pools
    n = num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=n)
    _blas_pools = None  # a library may have loaded since: look again
    _applied.count = n


def in_this_thread() -> int:
    """The thread count in force, applied first (:func:`apply`) if the
    calling thread has not had that count applied yet: a new thread, or
    one that ran before :func:`set_num_threads` changed it."""
    n = num_threads()
    if getattr(_applied, "count", None) != n:
        apply()
    return n


def single_threaded_blas():
    """A context in which every BLAS runs on one thread: for kernels that
    call BLAS from each of their own threads (the ``gemm`` algorithm), so
    that loop threads and BLAS threads never multiply."""
    global _blas_pools
    if _blas_pools is None:
        from threadpoolctl import ThreadpoolController

        _blas_pools = ThreadpoolController().select(user_api="blas")
    return _blas_pools.limit(limits=1)
