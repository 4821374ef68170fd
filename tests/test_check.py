"""fastconv-check: a correct kernel passes; each common mistake, planted
in a learner-style kernel (tests/learner_kernels.py), is diagnosed as
itself for every op where it applies; a function that raises, returns the
wrong shape or type, hangs or crashes gets a clear report, never a crash
of the checker; the smallest failing case is the one reported."""
import functools
import textwrap

import numpy as np
import pytest

import learner_kernels
from fastconv import battery, check, grading, mistakes, ops, registry
from fastconv.runner import InProcessRunner

MISTAKES = {  # op: the mistakes that can show in it; the issue's list first, then the others
    "conv2d": ["flipped_filter", "off_by_one", "padding_ignored", "stride_ignored", "channels_swapped",
               "channel_sum_missing", "bias_forgotten", "bias_per_pixel", "input_modified"],
    "conv2d_backward": ["flipped_filter", "padding_ignored", "stride_ignored", "channels_swapped",
                        "channel_sum_missing", "bias_forgotten", "averaged", "overwritten", "input_modified"],
    "max_pool2d": ["off_by_one", "padding_ignored", "stride_ignored", "channels_swapped", "input_modified",
                   "max_padded_with_zeros"],
    "max_pool2d_backward": ["padding_ignored", "stride_ignored", "channels_swapped", "ties_to_last", "overwritten",
                            "input_modified", "ties_to_all", "max_padded_with_zeros"],
    "avg_pool2d": ["off_by_one", "padding_ignored", "stride_ignored", "channels_swapped", "input_modified",
                   "avg_divisor"],
    "avg_pool2d_backward": ["padding_ignored", "stride_ignored", "channels_swapped", "overwritten",
                            "input_modified", "avg_divisor"],
    "conv2d_relu_maxpool2d": ["flipped_filter", "off_by_one", "padding_ignored", "stride_ignored",
                              "channels_swapped", "channel_sum_missing", "bias_forgotten", "bias_per_pixel",
                              "ties_to_last", "input_modified", "relu_missing"],
    "conv2d_relu_maxpool2d_backward": ["flipped_filter", "padding_ignored", "channels_swapped", "bias_forgotten",
                                       "averaged", "input_modified"],
    "out_size": ["off_by_one", "padding_ignored", "stride_ignored", "true_division"],
    "im2col": ["off_by_one", "padding_ignored", "stride_ignored", "channels_swapped", "input_modified"],
}
ISSUE_LIST = ("flipped_filter", "off_by_one", "padding_ignored", "stride_ignored", "channels_swapped",
              "channel_sum_missing", "bias_forgotten", "bias_per_pixel", "ties_to_last", "averaged",
              "input_modified")
"""The mistakes issue 22 names (the sum of gradients: averaged, and overwritten for pooling)."""


def grade(function, op, examples=10):
    return grading.grade(InProcessRunner(function), op, examples=examples)


def test_every_op_and_every_mistake_of_the_catalogue_are_covered():
    assert set(MISTAKES) == set(battery.CHECKED_OPS)
    planted = {m for keys in MISTAKES.values() for m in keys}
    assert planted == set(mistakes.BY_KEY)
    assert set(ISSUE_LIST) <= planted
    for op, keys in MISTAKES.items():  # a mistake is planted wherever the catalogue says it applies
        applies = {m.key for m in mistakes.CATALOGUE if m.explains is None and op in m.produce}
        assert applies - {"input_modified"} <= set(keys), op


@pytest.mark.parametrize("op", battery.CHECKED_OPS)
def test_a_correct_kernel_passes_every_stage(op):
    report = grade(getattr(learner_kernels, op), op, examples=5)
    assert report.ok, report.text()
    assert list(report.passed) == grading._stages_of(op)
    assert report.text().startswith(f"PASS  {op}: all {report.total} checks passed")


@pytest.mark.parametrize("op", [o for o in battery.CHECKED_OPS if o not in battery.EXERCISE_OPS])
def test_the_reference_through_ops_passes_the_battery(op):
    def through_ops(*args):
        return getattr(ops, op)(*args, backend="numpy", algorithm="reference")

    assert grade(through_ops, op, examples=5).ok


GENERAL_VARIANTS = [(op, *v) for op in grading.TIMED_OPS for v in registry.variants(op, include_reference=False)
                    if v[0] in registry.COMPILED_BACKENDS and v[1] not in ops.inapplicable_algorithms(2, 2)]
"""Every built-in variant that computes any geometry (Winograd is for 3x3 at stride 1 only)."""


@pytest.mark.parametrize("op, backend, algorithm", GENERAL_VARIANTS)
def test_every_builtin_variant_passes_the_battery_learners_are_graded_with(op, backend, algorithm):
    def variant(*args):
        return getattr(ops, op)(*args, backend=backend, algorithm=algorithm)

    report = grade(variant, op, examples=10)
    assert report.ok, report.text()


@pytest.mark.parametrize("op, mistake", [(op, m) for op, keys in MISTAKES.items() for m in keys])
def test_each_mistake_is_diagnosed_as_itself(op, mistake):
    report = grade(functools.partial(getattr(learner_kernels, op), mistake=mistake), op, examples=20)
    assert not report.ok
    found = [m.key for m in report.failure.mistakes]
    assert mistake in found, report.text()
    text = report.text()
    assert f"Diagnosis: {mistakes.BY_KEY[mistake].title}." in text
    assert mistakes.BY_KEY[mistake].explain(op) in " ".join(text.split())


def test_the_report_shows_the_case_expected_and_got_as_arrays():
    report = grade(functools.partial(learner_kernels.conv2d, mistake="flipped_filter"), "conv2d")
    assert report.text().splitlines()[:12] == [
        "FAIL  conv2d",
        "  on teaching case 1 of 6: one 3x3 image, one 2x2 filter",
        "",
        "  called conv2d(x, w, b, stride, padding) with",
        "    x (1, 1, 3, 3) float64:",
        "      [[1. 2. 3.]",
        "       [4. 5. 6.]",
        "       [7. 8. 9.]]",
        "    w (1, 1, 2, 2) float64:",
        "      [[ 1.  2.]",
        "       [ 0. -1.]]",
        "    b (1,) float64:",
    ]
    text = report.text()
    assert "  expected y (1, 1, 2, 2) float64:\n      [[1. 3.]\n       [7. 9.]]" in text
    assert "  got y (1, 1, 2, 2) float64:\n      [[13. 15.]\n       [19. 21.]]" in text
    assert "y differs at 4 of 4 positions; the first, y[0, 0, 0, 0]: expected 1, got 13" in text


def test_hypothesis_reports_the_smallest_failing_case():
    # Wrong only for images at least 7 wide (every teaching case is narrower).
    def wide_images_wrong(x, w, b=None, stride=1, padding=0):
        y = learner_kernels.conv2d(x, w, b, stride, padding)
        return y + 1 if x.shape[3] >= 7 else y

    report = grade(wide_images_wrong, "conv2d", examples=50)
    case = report.failure.case
    assert case.stage == "hypothesis shapes"
    assert case.args[0].shape == (1, 1, 1, 7)  # shrunk: one image, one channel, one row
    assert "hypothesis shapes, the smallest failing case found" in report.text()
    assert "1 image of 1 channel, 1x7" in report.text()


def test_float32_and_non_contiguous_failures_say_what_to_do():
    def always_float64(x, w, b=None, stride=1, padding=0):
        return learner_kernels.conv2d(x, w, b, stride, padding).astype(np.float64)

    def assumes_c_order(x, w, b=None, stride=1, padding=0):
        # offsets computed from the shape, as if the memory were C-contiguous
        w = np.lib.stride_tricks.as_strided(w, w.shape, np.empty(w.shape, w.dtype).strides)
        return learner_kernels.conv2d(x, w, b, stride, padding)

    report = grade(always_float64, "conv2d")
    assert report.failure.case.stage == "float32"
    assert report.failure.problem == "y is float64; expected float32"
    assert "allocate with dtype=x.dtype" in report.text()
    report = grade(assumes_c_order, "conv2d")
    assert report.failure.case.stage == "non-contiguous inputs"
    assert "reads memory as if it were contiguous" in " ".join(report.text().split())


@pytest.mark.parametrize("returned, problem", [
    (None, "y is a NoneType (None); expected a NumPy array of shape (1, 1, 2, 2)"),
    ([[1.0, 2.0]], "y is a list; expected a NumPy array of shape (1, 1, 2, 2)"),
    (np.zeros((2, 2)), "y has shape (2, 2); expected (1, 1, 2, 2)"),
    (np.zeros((1, 1, 2, 2), np.int64), "y is int64; expected float64"),
])
def test_a_wrong_type_or_shape_is_named(returned, problem):
    report = grade(lambda *args: returned, "conv2d")
    assert report.failure.problem == problem
    assert "Return NumPy arrays" in report.text() or "shape" in problem or "int64" in problem


def test_a_backward_pass_must_return_three_arrays():
    report = grade(lambda dy, x, w, stride=1, padding=0: (x, w), "conv2d_backward")
    assert report.failure.problem == "it returned 2 values; expected 3: (dx, dw, db)"
    report = grade(lambda dy, x, w, stride=1, padding=0: x, "conv2d_backward")
    assert report.failure.problem.startswith("it returned a float64 array of shape (1, 1, 3, 3); expected a tuple")


# ------------------------------------------------ the command, its own process

LEARNER_FILE = '''
import os
import numpy as np


def conv2d(x, w, b=None, stride=1, padding=0):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, f, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    return y if b is None else y + b.reshape(1, -1, 1, 1).astype(x.dtype)


def flipped(x, w, b=None, stride=1, padding=0):
    return conv2d(x, w[:, :, ::-1, ::-1], b, stride, padding)


def raises(x, w, b=None, stride=1, padding=0):
    return x[0, 0, 5, 5]


def hangs(x, w, b=None, stride=1, padding=0):
    while True:
        pass


def crashes(x, w, b=None, stride=1, padding=0):
    os._exit(3)
'''


@pytest.fixture(scope="module")
def learner_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("learner") / "my_conv.py"
    path.write_text(textwrap.dedent(LEARNER_FILE))
    return path


def run_check(capsys, *argv):
    status = check.main([str(a) for a in argv])
    return status, capsys.readouterr().out


def test_the_command_passes_a_correct_kernel(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:conv2d", "--op", "conv2d", "--no-speed", "--examples", "10")
    assert status == 0, out
    assert out.startswith(f"PASS  {learner_file}:conv2d as conv2d: all ")
    assert "Each call ran in a separate process, stopped after 10 s per case (--timeout)" in out


def test_the_command_fails_a_wrong_kernel_with_its_diagnosis(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:flipped", "--op", "conv2d")
    assert status == 1
    assert "Diagnosis: the filter is flipped: convolution instead of cross-correlation." in out
    assert "Speed" not in out


def test_an_exception_is_reported_with_the_learners_traceback(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:raises", "--op", "conv2d")
    assert status == 1
    assert "  but it raised:" in out and "return x[0, 0, 5, 5]" in out
    assert "IndexError: index 5 is out of bounds" in out
    assert "runner.py" not in out  # the checker's own frames are left out


def test_a_function_that_never_returns_is_stopped_at_the_time_limit(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:hangs", "--op", "conv2d", "--timeout", "0.5")
    assert status == 1
    assert "but it did not finish within 0.5 s, so it was stopped: the check runs your function in a separate " \
           "process, stopped after 0.5 s per case (--timeout)." in out
    assert "A loop that never ends" in out


def test_a_crash_ends_the_worker_not_the_checker(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:crashes", "--op", "conv2d")
    assert status == 1
    assert "but it crashed the process running it (the worker process ended (exit code 3))." in out
    assert "NUMBA_DISABLE_JIT=1" in out


@pytest.mark.parametrize("target, message", [
    ("{folder}/none.py:conv2d", "none.py: no such file"),
    ("{path}", "expected FILE.py:FUNCTION"),
    ("{path}:conv3d", "has no function 'conv3d'; it defines conv2d, crashes, flipped, hangs, raises"),
    ("{bad}:conv2d", "raised SyntaxError while it was loaded"),
])
def test_a_file_that_cannot_be_loaded_is_a_failure_saying_why(learner_file, capsys, target, message):
    bad = learner_file.with_name("bad.py")
    bad.write_text("def conv2d(:\n")
    target = target.format(folder=learner_file.parent, path=learner_file, bad=bad)
    status, out = run_check(capsys, target, "--op", "conv2d")
    assert status == 1
    assert "it could not be loaded" in out and message in out


def test_the_speed_table_compares_it_with_builtin_variants(learner_file, capsys):
    status, out = run_check(capsys, f"{learner_file}:conv2d", "--op", "conv2d", "--examples", "0", "--batch", "2",
                            "--repeat", "1", "--compare", "cython/naive", "cython/gemm")
    assert status == 0, out
    table = out[out.index("Speed at the MNIST CNN's layers"):]
    for layer in ("conv1", "conv2"):
        for variant in ("yours", "cython/naive", "cython/gemm"):
            assert any(line.split()[:2] == [layer, variant] or line.split()[:1] == [variant]
                       for line in table.splitlines()), (layer, variant, table)
    assert "GFLOP/s" in table


def test_bad_options_are_usage_errors(learner_file, capsys):
    for argv in (["--op", "conv2d", "--faster-than", "numba/fft"], ["--op", "out_size", "--faster-than", "numba/naive"],
                 ["--op", "conv2d", "--no-speed", "--faster-than", "numba/naive"], ["--op", "conv3d"]):
        with pytest.raises(SystemExit) as exit_:
            check.main([f"{learner_file}:conv2d", *argv])
        assert exit_.value.code == 2
