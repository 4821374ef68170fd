"""The one integer check: what counts as an integer, and a count (>= 1),
for values and for the text of an environment variable."""
import re

import numpy as np
import pytest

from fastconv import layers, schedules, shapes, threads
from fastconv.integers import is_integer, positive_int, positive_int_text


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2), np.int32(1)])
def test_positive_int_accepts_python_and_numpy_integers(value):
    result = positive_int(value, "channels")
    assert result == value and type(result) is int


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, True, False, "2", None, np.float32(3), np.int64(0)])
def test_positive_int_refuses_the_rest_naming_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=re.escape(f"channels must be a positive integer, got {value!r}")):
        positive_int(value, "channels")


def test_is_integer_refuses_bools_and_whole_floats():
    assert is_integer(0) and is_integer(-3) and is_integer(np.int16(5))
    assert not any(is_integer(v) for v in (True, np.bool_(True), 1.0, "1", None))


@pytest.mark.parametrize("text, value", [("1", 1), ("12", 12), (" 4 ", 4), ("+2", 2)])
def test_positive_int_text_reads_what_int_reads(text, value):
    assert positive_int_text(text, "FASTCONV_NUM_THREADS") == value


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "two", "", "True"])
def test_positive_int_text_refuses_the_rest_quoting_the_text(text):
    with pytest.raises(ValueError, match=re.escape(f"FASTCONV_NUM_THREADS must be a positive integer, got {text!r}")):
        positive_int_text(text, "FASTCONV_NUM_THREADS")


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Conv2D(1, True, 3), "out_channels must be a positive integer, got True"),
    (lambda: layers.Dense(np.int64(0), 2), "in_features must be a positive integer, got np.int64(0)"),
    (lambda: layers.BatchNorm2D(2.0), "num_features must be a positive integer, got 2.0"),
    (lambda: threads.set_num_threads(1.5), "number of threads must be a positive integer, got 1.5"),
    (lambda: schedules.StepLR(0.1, "2"), "StepLR: step_epochs must be a positive integer, got '2'"),
    (lambda: schedules.ConstantLR(0.1).lr(-1), "ConstantLR: epoch must be a positive integer, got -1"),
    (lambda: shapes.conv_out_size(8, 3, stride=0), "stride must be a positive integer, got 0"),
])
def test_every_count_in_the_package_goes_through_the_one_check(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
