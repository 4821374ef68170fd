"""The ``auto`` choice: its disk cache (round trip, other machines, corrupt
and unwritable files) and forcing a variant through the environment."""
import json

import numpy as np
import pytest

from fastconv import autotune, ops, registry

MACHINE = {"cpu": "Test CPU", "llvm_cpu": "generic", "simd": ["avx2", "fma"], "fastconv": "0.0.0"}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh cache directory and no choice in memory (as a new process)."""
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path))
    monkeypatch.delenv("FASTCONV_BACKEND", raising=False)
    monkeypatch.delenv("FASTCONV_ALGORITHM", raising=False)
    autotune.forget()
    yield tmp_path
    autotune.forget()


@pytest.fixture
def kernel_calls(monkeypatch):
    """The (backend, algorithm) of every kernel fetched from the registry."""
    calls, real = [], registry.kernel

    def spy(op, backend, algorithm):
        calls.append((backend, algorithm))
        return real(op, backend, algorithm)

    monkeypatch.setattr(registry, "kernel", spy)
    return calls


# ------------------------------------------------------------ the store


def test_store_round_trip(tmp_path):
    path = tmp_path / "autotune.json"
    autotune.ChoiceStore(path, MACHINE).put("sig", ("cython", "im2col"))
    assert autotune.ChoiceStore(path, MACHINE).get("sig") == ("cython", "im2col")
    assert autotune.ChoiceStore(path, MACHINE).get("other") is None
    # no temporary file left; the lock file stays, for the next writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autotune.json", "autotune.json.lock"]


def test_store_keeps_machines_apart(tmp_path):
    path = tmp_path / "autotune.json"
    other = dict(MACHINE, fastconv="9.9.9")
    autotune.ChoiceStore(path, other).put("sig", ("numba", "naive"))
    autotune.ChoiceStore(path, MACHINE).put("sig", ("cython", "vectorized"))
    assert autotune.ChoiceStore(path, other).get("sig") == ("numba", "naive")
    assert autotune.ChoiceStore(path, MACHINE).get("sig") == ("cython", "vectorized")
    sections = json.loads(path.read_text())["machines"].values()
    assert sorted(s["machine"]["fastconv"] for s in sections) == ["0.0.0", "9.9.9"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[1, 2]",
        '{"format": 1, "machines": []}',
        json.dumps({"format": 1, "machines": {autotune.fingerprint(MACHINE): {"choices": {"sig": "cython"}}}}),
    ],
)
def test_corrupt_cache_is_a_miss_and_gets_rewritten(tmp_path, content):
    path = tmp_path / "autotune.json"
    path.write_text(content)
    store = autotune.ChoiceStore(path, MACHINE)
    assert store.get("sig") is None
    store.put("sig", ("numba", "im2col"))
    assert autotune.ChoiceStore(path, MACHINE).get("sig") == ("numba", "im2col")


def test_unwritable_cache_is_ignored(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = autotune.ChoiceStore(blocker / "autotune.json", MACHINE)
    store.put("sig", ("cython", "naive"))  # its directory cannot be made: no error
    assert store.get("sig") is None


def test_machine_description_names_this_cpu():
    description = autotune.machine()
    assert description["cpu"] and description["llvm_cpu"]
    assert description["fastconv"] == __import__("fastconv").__version__
    assert autotune.fingerprint(description) != autotune.fingerprint(dict(description, cpu="other"))


def test_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path))
    assert autotune.cache_path() == tmp_path / "autotune.json"


# ------------------------------------------------------------ auto with the store

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)


def saved_choices(cache_dir):
    """``{signature: [backend, algorithm]}`` of this machine's cache section."""
    saved = json.loads((cache_dir / "autotune.json").read_text())
    return saved["machines"][autotune.fingerprint(autotune.machine())]["choices"]


def test_auto_choice_is_saved_and_read_back_without_measuring(cache_dir, monkeypatch):
    ops.max_pool2d(X, 2, backend="cython")
    (choice,) = autotune.chosen("max_pool2d", "cython").values()
    assert list(saved_choices(cache_dir).values()) == [list(choice)]

    autotune.forget()  # as a new process: the choice must come from disk

    def no_measuring(*args):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(autotune, "_measure", no_measuring)
    ops.max_pool2d(X, 2, backend="cython")
    assert list(autotune.chosen("max_pool2d", "cython").values()) == [choice]


def test_saved_choice_is_used(cache_dir, kernel_calls):
    ops.max_pool2d(X, 2, backend="numba")
    ((signature, choice),) = saved_choices(cache_dir).items()
    # Plant another variant, as a previous process could have saved it.
    planted = ("numba", "im2col" if choice[1] == "vectorized" else "vectorized")
    autotune.ChoiceStore(autotune.cache_path()).put(signature, planted)
    autotune.forget()
    kernel_calls.clear()
    ops.max_pool2d(X, 2, backend="numba")
    assert kernel_calls == [planted]


def test_unwritable_cache_falls_back_to_memory(cache_dir, monkeypatch):
    blocker = cache_dir / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FASTCONV_CACHE", str(blocker))
    measured = []
    real = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda *a: measured.append(1) or real(*a))
    first = ops.avg_pool2d(X, 2, backend="cython")
    second = ops.avg_pool2d(X, 2, backend="cython")
    assert measured == [1]
    np.testing.assert_array_equal(first, second)


def test_auto_leaves_out_naive_and_reference_but_naive_can_be_asked_for(cache_dir, kernel_calls):
    ops.max_pool2d(X, 2)
    assert kernel_calls and all(a not in ("naive", "reference") for _, a in kernel_calls)
    assert {a for _, a in kernel_calls} == {"im2col", "vectorized"}
    kernel_calls.clear()
    ops.max_pool2d(X, 2, algorithm="naive")
    assert {v for v in kernel_calls} == {("cython", "naive")}


def test_a_first_call_times_only_the_variants_compiled_ahead_of_time(cache_dir, kernel_calls):
    # Numba's would compile first: seconds on a new machine, for a choice
    # between twins of the same algorithms.
    ops.max_pool2d(X, 2)
    assert {b for b, _ in kernel_calls} == {"cython"}
    kernel_calls.clear()
    ops.max_pool2d(X, 2, backend="numba")  # asked for by name: timed, compiled if need be
    assert {b for b, _ in kernel_calls} == {"numba"}


def test_tuning_times_every_backend_and_replaces_the_saved_choice(cache_dir, kernel_calls):
    ops.avg_pool2d(X, 2)
    ((signature, quick_choice),) = saved_choices(cache_dir).items()
    autotune.ChoiceStore(autotune.cache_path()).put(signature, ("cython", "im2col"))
    kernel_calls.clear()
    with autotune.tuning():
        ops.avg_pool2d(X, 2)
    assert {b for b, _ in kernel_calls} == {"cython", "numba"}
    (tuned,) = autotune.chosen("avg_pool2d").values()
    assert saved_choices(cache_dir) == {signature: list(tuned)}
    autotune.forget()
    kernel_calls.clear()
    ops.avg_pool2d(X, 2)  # a later process uses the tuned choice without measuring
    assert kernel_calls == [tuned]


def test_two_processes_tuning_at_once_keep_each_others_choices(tmp_path):
    # Each process saves 40 choices of its own into one file; without the
    # lock, a read-merge-write overwrites the other's choices saved since
    # its read.
    import subprocess
    import sys

    path = tmp_path / "autotune.json"
    script = (
        "import sys; from fastconv import autotune\n"
        "store = autotune.ChoiceStore(sys.argv[1], {'cpu': 'Test CPU'})\n"
        "for i in range(40): store.put(f'{sys.argv[2]}-{i}', ('cython', 'gemm'))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = autotune.ChoiceStore(path, {"cpu": "Test CPU"})
    missing = [f"{name}-{i}" for name in "ab" for i in range(40) if store.get(f"{name}-{i}") is None]
    assert missing == []


def test_debug_logs_each_choice_with_its_timings(cache_dir, monkeypatch, caplog):
    monkeypatch.setenv("FASTCONV_DEBUG", "1")
    with caplog.at_level("DEBUG", logger="fastconv.autotune"):
        ops.max_pool2d(X, 2)
        autotune.forget()
        ops.max_pool2d(X, 2)
    timed, read = caplog.messages
    assert timed.startswith("max_pool2d: timed cython/") and " ms" in timed and "; chose cython/" in timed
    assert read.startswith("max_pool2d: cython/") and "as saved in" in read


def test_backward_without_dx_is_chosen_apart(cache_dir, monkeypatch):
    # Without dx another variant may be fastest: the flag is part of the key.
    w, dy = np.zeros((4, 3, 3, 3), np.float32), np.zeros((2, 4, 6, 6), np.float32)
    measured = []
    real = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda *a: measured.append(1) or real(*a))
    for compute_dx in (True, False):
        ops.conv2d_backward(dy, X, w, compute_dx=compute_dx, backend="cython")
    assert measured == [1, 1]
    assert sorted(key[-1] for key in autotune.chosen("conv2d_backward", "cython")) == [False, True]
    assert len(saved_choices(cache_dir)) == 2


def test_measurement_keeps_the_best_of_several_runs(monkeypatch):
    # A variant whose one slow run (a preempted thread) would lose it the choice.
    costs = {("cython", "vectorized"): iter([1e-3, 5.0, 1e-3, 1e-3]),  # warm-up, then 5 s once
             ("numba", "vectorized"): iter([2e-3] * 4)}
    assert _measure_on_fake_clock(monkeypatch, costs) == ("cython", "vectorized")


def test_measurement_takes_the_variants_runs_in_turns(monkeypatch):
    # The machine runs 10x slower during the 2nd to 4th calls: had the first
    # variant's warm-up and three timed runs come before the second's, all
    # three would have been slow and the second variant (1.5 ms against 1
    # ms) chosen. In turns, each variant has a slow run and two fast ones.
    calls = [0]

    def cost(seconds):
        while True:
            calls[0] += 1
            yield seconds * (10 if 2 <= calls[0] <= 4 else 1)

    costs = {("cython", "vectorized"): cost(1e-3), ("numba", "vectorized"): cost(1.5e-3)}
    assert _measure_on_fake_clock(monkeypatch, costs) == ("cython", "vectorized")


def _measure_on_fake_clock(monkeypatch, costs):
    """autotune._measure over the variants of ``costs``, each run of a
    variant taking the next of its costs (seconds) on a fake clock."""
    now = [0.0]
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(autotune.registry, "kernel", lambda op, b, a: (b, a))

    def run(kernel):
        now[0] += next(costs[kernel])

    return autotune._measure("conv2d", list(costs), run)


# ------------------------------------------------------------ forcing


def test_environment_forces_auto_arguments(cache_dir, monkeypatch, kernel_calls):
    monkeypatch.setenv("FASTCONV_BACKEND", "numba")
    monkeypatch.setenv("FASTCONV_ALGORITHM", "naive")
    ops.max_pool2d(X, 2)
    assert kernel_calls == [("numba", "naive")]


def test_explicit_arguments_win_over_the_environment(cache_dir, monkeypatch, kernel_calls):
    monkeypatch.setenv("FASTCONV_BACKEND", "numba")
    monkeypatch.setenv("FASTCONV_ALGORITHM", "naive")
    ops.max_pool2d(X, 2, backend="cython")
    ops.max_pool2d(X, 2, algorithm="im2col")
    ops.max_pool2d(X, 2, backend="numpy", algorithm="reference")
    assert kernel_calls == [("cython", "naive"), ("numba", "im2col"), ("numpy", "reference")]


@pytest.mark.parametrize("variable, value", [("FASTCONV_BACKEND", "cuda"), ("FASTCONV_ALGORITHM", "fft")])
def test_unknown_forced_variant_is_refused(cache_dir, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}='{value}' is not"):
        ops.max_pool2d(X, 2)


def test_a_rebuild_of_the_kernels_changes_the_fingerprint(tmp_path, monkeypatch):
    from pathlib import Path

    from fastconv import kernels

    before = autotune.kernels_digest()
    assert autotune.machine()["kernels"] == before
    module = Path(kernels.__file__).parent / "unfold.py"
    stat = module.stat()
    try:
        import os

        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert autotune.kernels_digest() != before
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert autotune.kernels_digest() == before


def test_a_forced_algorithm_reaches_only_the_ops_that_have_it(cache_dir, monkeypatch, kernel_calls):
    # FASTCONV_ALGORITHM=gemm forces the convolutions; pooling has no gemm
    # and is chosen as auto instead of failing the whole network.
    monkeypatch.setenv("FASTCONV_ALGORITHM", "gemm")
    ops.conv2d(X, np.ones((2, 3, 3, 3), np.float32), backend="cython")
    ops.max_pool2d(X, 2, backend="cython")
    assert kernel_calls[0] == ("cython", "gemm")
    assert {a for _, a in kernel_calls[1:]} <= {"im2col", "vectorized"} and kernel_calls[1:]


def test_a_forced_algorithm_that_cannot_compute_a_conv_is_refused_with_the_reason(cache_dir, monkeypatch):
    monkeypatch.setenv("FASTCONV_ALGORITHM", "winograd")
    with pytest.raises(ValueError, match="algorithm 'winograd' does not apply: it computes 3x3 kernels"):
        ops.conv2d(X, np.ones((2, 3, 5, 5), np.float32))


def test_cnn_deep_trains_with_a_forced_conv_algorithm(cache_dir, monkeypatch):
    from fastconv import models, optim

    monkeypatch.setenv("FASTCONV_ALGORITHM", "im2col")
    model = models.build("cnn-deep")
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    loss, _ = model.train_step(x, np.arange(4), optim.SGD(0.01))
    assert np.isfinite(loss)
