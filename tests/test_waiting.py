"""Never a silent wait: a slow first call says what it is doing, a quick
one says nothing."""
import time

import numpy as np

from fastconv.waiting import FirstCallNotice, said_if_slow


def test_a_slow_block_is_announced_while_it_runs(capsys):
    with said_if_slow("compiling something", after=0.05):
        time.sleep(0.3)
        assert capsys.readouterr().err == "fastconv: compiling something\n"  # before the block ends
    assert capsys.readouterr().err == ""


def test_a_quick_block_says_nothing(capsys):
    with said_if_slow("compiling something", after=0.5):
        pass
    time.sleep(0.6)
    assert capsys.readouterr().err == ""


def test_only_the_first_call_with_each_kind_of_arguments_is_watched(capsys, monkeypatch):
    import fastconv.waiting as waiting

    monkeypatch.setattr(waiting, "said_if_slow", lambda message: said_if_slow(message, after=0.05))
    slow = FirstCallNotice(lambda a, b: time.sleep(0.15), "compiling f")
    slow(np.zeros(2, np.float32), None)
    slow(np.zeros(3, np.float32), None)  # same kinds: not watched
    slow(np.zeros(2, np.float64), None)  # another dtype: watched again
    slow([np.zeros(2, np.float32)], np.zeros(1))  # a list of float32: watched
    assert capsys.readouterr().err == "fastconv: compiling f\n" * 3
