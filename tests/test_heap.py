"""import fastconv keeps the memory a kernel call frees for the next call
(fastconv.heap): allocating and freeing the same scratch again no longer
faults its pages in every time, unless the user set glibc's variables."""
import os
import platform
import subprocess
import sys

import pytest

from fastconv import heap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# 40 rounds of a 3 MiB array (below NumPy's 4 MiB huge-page hint), written
# whole and freed, each beside a small array that stays: the minor page
# faults of the rounds after the first.
ROUNDS = """
import resource
import fastconv
import numpy as np
kept = []
def round_trip():
    scratch = np.empty(3 << 18, np.float32)
    scratch[:] = 1.0
    kept.append(np.ones(16))
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (3 << 20) // 4096


def faults(env):
    result = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, env=env, check=True)
    return int(result.stdout)


def test_freed_scratch_is_reused_without_faulting_its_pages_in_again():
    env = {k: v for k, v in os.environ.items() if k not in heap.GLIBC_VARIABLES}
    assert faults(env) < PAGES  # less than one round's pages in 40 rounds
    # the user's own setting wins: here glibc maps and unmaps the block each round
    assert faults({**env, "MALLOC_MMAP_THRESHOLD_": "131072"}) > 20 * PAGES


def test_the_thresholds_are_left_alone_when_the_user_set_any(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap.keep_freed_memory() is False
