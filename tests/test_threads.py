"""One thread count for Numba, OpenMP and BLAS."""
import json
import os
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_info

from fastconv import threads


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("FASTCONV_NUM_THREADS", raising=False)
    yield
    monkeypatch.delenv("FASTCONV_NUM_THREADS", raising=False)
    threads.set_num_threads(None)


def test_default_is_every_core(restore_threads):
    assert threads.num_threads() == threads.available_cores() >= 1


def test_environment_sets_the_count(restore_threads, monkeypatch):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "1")
    assert threads.num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_environment_value_is_refused(restore_threads, monkeypatch, value):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"FASTCONV_NUM_THREADS must be a positive integer, got '{value}'"):
        threads.num_threads()


def test_set_num_threads_reaches_numba_and_every_pool(restore_threads):
    threads.set_num_threads(1)
    assert threads.num_threads() == 1
    assert numba.get_num_threads() == 1
    assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    threads.set_num_threads(None)
    assert threads.num_threads() == threads.available_cores()
    assert numba.get_num_threads() == min(threads.available_cores(), numba.config.NUMBA_NUM_THREADS)


def test_set_num_threads_refuses_zero(restore_threads):
    with pytest.raises(ValueError, match="number of threads must be a positive integer"):
        threads.set_num_threads(0)


PROBE = """
import json, numba
from threadpoolctl import threadpool_info
from fastconv import registry
registry.family_kernels("cython", "conv")
registry.family_kernels("numba", "pool")
print(json.dumps({"numba": numba.get_num_threads(),
                  "pools": {p["internal_api"]: p["num_threads"] for p in threadpool_info()}}))
"""


def test_environment_reaches_kernel_modules_loaded_later(tmp_path):
    env = dict(os.environ, FASTCONV_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["numba"] == 1
    assert "openmp" in seen["pools"]
    assert set(seen["pools"].values()) == {1}


def test_idle_threads_are_asked_to_sleep_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "10")
    threads.wait_quietly()
    assert os.environ["GOMP_SPINCOUNT"] == "30000"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "10"


def test_a_chosen_openmp_wait_policy_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    threads.wait_quietly()
    assert "GOMP_SPINCOUNT" not in os.environ


def test_importing_fastconv_sets_the_wait_policy(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    probe = "import os, fastconv; print(os.environ['GOMP_SPINCOUNT'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split() == ["30000", "4"]


IDLE_PROBE = """
import time
import numpy as np
import fastconv
from fastconv import ops, threads
threads.set_num_threads(2)
x, w = np.ones((8, 8, 12, 12), np.float32), np.ones((16, 8, 3, 3), np.float32)
ops.conv2d(x, w, backend="cython", algorithm="vectorized")
start = time.process_time()
time.sleep(0.05)
print(time.process_time() - start)
"""


@pytest.mark.skipif(threads.available_cores() < 2, reason="an idle OpenMP thread needs a second core")
def test_idle_openmp_threads_stop_spinning_soon(tmp_path):
    """After a kernel, OpenMP's idle thread spins briefly, then sleeps: in
    50 ms of the program sleeping it uses under 2 ms of CPU (libgomp's
    default spin, without fastconv's setting, used about 5)."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    out = subprocess.run([sys.executable, "-c", IDLE_PROBE], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    assert float(out.stdout) < 0.002


NUMBA_GEMM_PROBE = """
import json
import numpy as np
from threadpoolctl import threadpool_info
from fastconv import ops, threads
x, w = np.ones((4, 2, 6, 6), np.float32), np.ones((3, 2, 3, 3), np.float32)
ops.conv2d(x, w, backend="numba", algorithm="gemm")
with threads.single_threaded_blas():
    print(json.dumps([(p["filepath"], p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"]))
"""


def test_numba_gemm_never_runs_a_multithreaded_blas_in_its_threads(tmp_path):
    # Numba's np.dot calls SciPy's BLAS. Were that library loaded only when
    # the first gemm kernel compiles, after the thread counts were applied,
    # no limit would reach it: each of the kernel's threads would run a
    # BLAS of every core (2.4 to 5 ms, and up to 39 ms, at conv2's shape).
    out = subprocess.run([sys.executable, "-c", NUMBA_GEMM_PROBE], env=dict(os.environ, FASTCONV_NUM_THREADS="2"),
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    pools = json.loads(out.stdout)
    assert any("scipy" in path for path, _ in pools)
    assert {threads for _, threads in pools} == {1}


def test_a_worker_thread_runs_kernels_at_the_count_in_force(tmp_path):
    # Numba's and OpenMP's counts belong to the thread that set them: a
    # server's worker thread started at every core whatever
    # FASTCONV_NUM_THREADS said, and auto's key named a count that was not
    # the one running.
    script = (
        "import json, threading, numba, numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "from fastconv import ops\n"
        "x, w = np.ones((4, 2, 8, 8), np.float32), np.ones((3, 2, 3, 3), np.float32)\n"
        "ops.conv2d(x, w, backend='numba', algorithm='vectorized')  # loaded in the main thread, as a server does\n"
        "ops.conv2d(x, w, backend='cython', algorithm='gemm')\n"
        "seen = {}\n"
        "def work():\n"
        "    ops.conv2d(x, w, backend='numba', algorithm='vectorized')\n"
        "    ops.conv2d(x, w, backend='cython', algorithm='gemm')\n"
        "    seen['numba'] = numba.get_num_threads()\n"
        "    seen['openmp'] = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'openmp']\n"
        "thread = threading.Thread(target=work); thread.start(); thread.join()\n"
        "print(json.dumps(seen))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "FASTCONV_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["numba"] == 1
    assert seen["openmp"] and set(seen["openmp"]) == {1}
