"""Timing policy shared by every benchmark of the suite.

Each benchmark is one call timed with ``benchmark.pedantic``: a first call
pays JIT compilation and first touch of memory, a second one sizes the run,
then a fixed number of rounds fills about ``--round-budget`` seconds (at
least 3 rounds, at most 100; short calls are repeated within a round so
that a round lasts at least a millisecond). Slow variants (naive loops at
batch 256) thus get 3 rounds, fast ones up to 100.

With ``--benchmark-disable`` every body runs exactly once (CI smoke mode).
``auto`` starts from an empty choice cache in every run.
"""
import math
import time

import pytest

from fastconv import autotune, settings, threads

MIN_ROUNDS, MAX_ROUNDS = 3, 100
MIN_ROUND_SECONDS = 1e-3


def pytest_addoption(parser):
    parser.addoption(
        "--round-budget",
        type=float,
        default=0.25,
        help="seconds of timed rounds per benchmark (default 0.25)",
    )


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastconv"] = dict(autotune.machine(), threads=threads.num_threads())


def _plan(seconds_per_call, budget):
    """(rounds, iterations) that fill ``budget`` seconds."""
    iterations = max(1, math.ceil(MIN_ROUND_SECONDS / seconds_per_call))
    rounds = round(budget / (seconds_per_call * iterations))
    return min(MAX_ROUNDS, max(MIN_ROUNDS, rounds)), iterations


@pytest.fixture(scope="session", autouse=True)
def fresh_autotune_cache(tmp_path_factory):
    """``auto`` measures its choices in this run, not in an earlier one
    (whose saved choices may date from another load or build)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(settings.CACHE, str(tmp_path_factory.mktemp("autotune")))
        yield


@pytest.fixture(scope="session", autouse=True)
def thread_count():
    """Every benchmark runs with FASTCONV_NUM_THREADS threads (default: all cores)."""
    threads.apply()
    return threads.num_threads()


@pytest.fixture
def measure(benchmark, request, thread_count):
    """``measure(group, fn, rate, **info)`` times ``fn()`` under ``group``.

    ``info`` (op, FLOPs, bytes, images per call) goes into extra_info, with
    the throughput ``rate(seconds) -> (value, name)`` of the median call.
    """

    def run(group, fn, rate, **info):
        benchmark.group = group
        benchmark.extra_info.update(info, threads=thread_count)
        if benchmark.disabled:
            benchmark.pedantic(fn)
            return
        fn()
        start = time.perf_counter()
        fn()
        rounds, iterations = _plan(time.perf_counter() - start, request.config.getoption("round_budget"))
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations)
        value, name = rate(benchmark.stats.stats.median)
        benchmark.extra_info[name] = round(value, 3)

    return run
