"""fastconv-exercise: six exercises in order, each a stub with its
instructions that fastconv-check grades; the stub itself fails, a correct
solution (tests/exercise_solutions/) passes, and exercise 6 must also beat
the naive Numba kernel."""
import shutil
from pathlib import Path

import pytest

from fastconv import check, exercise, grading
from fastconv.exercises import EXERCISES
from fastconv.runner import InProcessRunner
from fastconv.user_variants import load_function

SOLUTIONS = Path(__file__).parent / "exercise_solutions"


def test_six_exercises_in_the_order_a_learner_does_them(capsys):
    assert [(e.number, [c.op for c in e.checks]) for e in EXERCISES] == [
        (1, ["conv2d"]), (2, ["out_size"]), (3, ["max_pool2d", "max_pool2d_backward"]), (4, ["conv2d_backward"]),
        (5, ["im2col", "conv2d"]), (6, ["conv2d"])]
    assert EXERCISES[5].checks[0].options == ("--faster-than", "numba/naive")
    assert exercise.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. the convolution forward pass, as plain loops (conv2d_naive.py; graded as conv2d)\n"
                          "2. output-size arithmetic")
    assert "6. a parallel Numba convolution that beats the naive loops" in out


@pytest.mark.parametrize("number", [e.number for e in EXERCISES])
def test_each_stub_says_what_to_write_the_shapes_a_hint_and_how_it_is_graded(number):
    found = EXERCISES[number - 1]
    text = found.instructions()
    assert text.startswith(f"Exercise {number}: ")
    for part in ("Write ", "Shapes", "Hint: ", "Grade it with:"):
        assert part in text, part
    for one in found.checks:  # the index's commands, as the stub states them
        assert "    " + one.command(found.file) in text


def test_start_copies_the_stub_and_prints_its_instructions(tmp_path, capsys):
    folder = tmp_path / "mine"
    assert exercise.main(["start", "3", str(folder)]) == 0
    out = capsys.readouterr().out
    assert (folder / "max_pool.py").read_text() == EXERCISES[2].stub()
    assert f"wrote {folder}/max_pool.py:" in out
    assert "  Exercise 3: max pooling, forward and backward." in out
    assert f"  fastconv-check {folder}/max_pool.py:max_pool2d_backward --op max_pool2d_backward" in out
    assert f"or: fastconv-exercise check 3 {folder}" in out
    (folder / "max_pool.py").write_text("# my work\n")
    assert exercise.main(["start", "3", str(folder)]) == 1
    assert "exists already (your work?); --force overwrites it" in capsys.readouterr().err
    assert (folder / "max_pool.py").read_text() == "# my work\n"
    assert exercise.main(["start", "3", str(folder), "--force"]) == 0
    with pytest.raises(SystemExit) as exit_:
        exercise.main(["start", "7", str(folder)])
    assert exit_.value.code == 2
    assert "no exercise 7; choose from 1 to 6" in capsys.readouterr().err


# Exercise 6's stub asks Numba for parallel=True around a body that only
# raises, so compiling it warns that nothing could run in parallel: expected.
@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
@pytest.mark.parametrize("number", [e.number for e in EXERCISES])
def test_the_stub_as_given_fails_its_checks_saying_what_to_write(number):
    found = EXERCISES[number - 1]
    for one in found.checks:
        function = load_function(f"{Path(exercise.__file__).parent / 'exercises' / found.file}:{one.function}")
        report = grading.grade(InProcessRunner(function), one.op, examples=0)
        assert not report.ok
        assert f"NotImplementedError: exercise {number}: write" in report.text()


def solved(number, folder) -> Path:
    """Exercise ``number`` started in ``folder`` and solved."""
    exercise.start(number, str(folder))
    name = EXERCISES[number - 1].file
    shutil.copy(SOLUTIONS / name, folder / name)
    return folder / name


@pytest.mark.parametrize("number", [1, 3, 4, 5])
def test_a_correct_solution_passes_each_check(number, tmp_path, capsys):
    path = solved(number, tmp_path)
    capsys.readouterr()
    for one in EXERCISES[number - 1].checks:
        status = check.main(one.argv(path) + ["--no-speed", "--examples", "10"])
        out = capsys.readouterr().out
        assert status == 0, out
        assert out.startswith(f"PASS  {path}:{one.function} as {one.op}: all ")


def test_fastconv_exercise_check_grades_the_copy(tmp_path, capsys):
    solved(2, tmp_path)
    capsys.readouterr()
    assert exercise.main(["check", "2", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"$ fastconv-check {tmp_path}/out_size.py:out_size --op out_size\nPASS  ")
    assert exercise.main(["check", "1", str(tmp_path / "elsewhere")]) == 1
    assert "start with fastconv-exercise start 1" in capsys.readouterr().err


def test_the_numba_exercise_must_be_correct_and_beat_the_naive_numba_kernel(tmp_path, capsys):
    path = solved(6, tmp_path)
    capsys.readouterr()
    options = ["--examples", "5", "--batch", "16", "--repeat", "3", "--compare", "numba/naive"]
    status = check.main(EXERCISES[5].checks[0].argv(path) + options)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "PASS  speed: " in out and "faster than numba/naive" in out
    # Exercise 1's correct but slow loops do not clear the bar.
    shutil.copy(SOLUTIONS / "conv2d_naive.py", path)
    status = check.main(EXERCISES[5].checks[0].argv(path) + options)
    out = capsys.readouterr().out
    assert status == 1
    assert out.startswith(f"PASS  {path}:conv2d as conv2d")
    assert "FAIL  speed: " in out and "numba/naive takes" in out and "not faster yet" in out
