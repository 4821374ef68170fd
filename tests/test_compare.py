"""fastconv-compare: the zero-fill shift, the translation test, and a real
run whose printed and saved numbers are checked against the trained models.

The end-to-end run trains logreg and dense (no conv layers: fast) on 256
real MNIST images for one epoch; it is skipped without the MNIST files.
"""
import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from fastconv import compare, models
from fastconv.data import load_dataset
from fastconv.model import Sequential

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


# ----------------------------------------------------------------- shifting

IMAGE = np.arange(1, 13, dtype=np.float32).reshape(1, 1, 3, 4)
# [[ 1  2  3  4]
#  [ 5  6  7  8]
#  [ 9 10 11 12]]


@pytest.mark.parametrize("down, right, expected", [
    (0, 1, [[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]]),
    (0, -2, [[3, 4, 0, 0], [7, 8, 0, 0], [11, 12, 0, 0]]),
    (1, 0, [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]]),
    (-1, 0, [[5, 6, 7, 8], [9, 10, 11, 12], [0, 0, 0, 0]]),
    (1, -1, [[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0]]),
    (0, 0, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
    (3, 0, [[0] * 4] * 3),  # the whole height: nothing left
    (0, -7, [[0] * 4] * 3),
])
def test_shift_moves_pixels_and_fills_with_zeros(down, right, expected):
    shifted = compare.shift_images(IMAGE, down, right)
    assert shifted.shape == IMAGE.shape and shifted.dtype == IMAGE.dtype
    np.testing.assert_array_equal(shifted[0, 0], expected)


def test_shift_returns_a_copy_and_leaves_the_input_alone():
    before = IMAGE.copy()
    shifted = compare.shift_images(IMAGE, 0, 0)
    shifted[...] = -1
    np.testing.assert_array_equal(IMAGE, before)


def test_shift_rejects_bad_arguments():
    with pytest.raises(TypeError, match="down must be an int, got 1.5"):
        compare.shift_images(IMAGE, 1.5, 0)
    with pytest.raises(TypeError, match="right must be an int"):
        compare.shift_images(IMAGE, 0, True)
    with pytest.raises(ValueError, match=r"x must be \(..., H, W\), got shape \(4,\)"):
        compare.shift_images(np.zeros(4), 1, 0)


def test_translation_test_averages_the_four_directions():
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    model = models.build("logreg")
    model.fit(x, y, epochs=2, verbose=False)
    results = compare.translation_test(model, x, y, shifts=(1, 3))
    assert list(results) == [1, 3]
    for distance, by_direction in results.items():
        assert set(by_direction) == {"right", "left", "down", "up", "mean"}
        expected = {"right": model.evaluate(compare.shift_images(x, 0, distance), y)[1],
                    "left": model.evaluate(compare.shift_images(x, 0, -distance), y)[1],
                    "down": model.evaluate(compare.shift_images(x, distance, 0), y)[1],
                    "up": model.evaluate(compare.shift_images(x, -distance, 0), y)[1]}
        for direction, accuracy in expected.items():
            assert by_direction[direction] == accuracy
        assert by_direction["mean"] == pytest.approx(sum(expected.values()) / 4)


# ------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def mnist_dir():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST files are not in {MNIST}")
    return str(MNIST)


@pytest.fixture(scope="module")
def run(mnist_dir, tmp_path_factory):
    """One real run: logreg and dense, 1 epoch on 256 images, tested on 300."""
    out = tmp_path_factory.mktemp("compare")
    argv = ["--models", "logreg,dense", "--epochs", "1", "--limit", "256", "--test-limit", "300",
            "--data-dir", mnist_dir, "--json", str(out / "numbers.json"), "--save", str(out / "models"),
            "--quiet"]
    stdout = StringIO()
    with redirect_stdout(stdout):
        assert compare.main(argv) == 0
    numbers = json.loads((out / "numbers.json").read_text())
    return stdout.getvalue(), numbers, out / "models"


def test_json_numbers_are_those_of_the_trained_models(run, mnist_dir):
    _, numbers, saved = run
    data = load_dataset(data_dir=mnist_dir)
    x_test, y_test = data.x_test[:300], data.y_test[:300]
    assert numbers["settings"] == {
        "dataset": "mnist", "epochs": 1, "batch_size": 64, "optimizer": "Adam", "lr": 1e-3, "seed": 0,
        "train_images": 256, "test_images": 300, "backend": "auto", "algorithm": "auto",
    }
    assert [r["model"] for r in numbers["models"]] == ["logreg", "dense"]
    for result in numbers["models"]:
        model = Sequential.load(saved / f"{result['model']}.npz")
        assert result["params"] == model.param_count() == models.build(result["model"]).param_count()
        loss, accuracy = model.evaluate(x_test, y_test)
        assert (result["test_loss"], result["test_accuracy"]) == (loss, accuracy)
        assert result["test_errors"] == int(np.count_nonzero(model.predict(x_test).argmax(axis=1) != y_test))
        assert result["errors_per_1000"] == pytest.approx(1000 * result["test_errors"] / 300)
        assert [e["epoch"] for e in result["epochs"]] == [1]
        assert result["train_seconds"] == pytest.approx(result["epochs"][0]["seconds"])
        assert result["train_images_per_second"] == pytest.approx(256 / result["train_seconds"])
        shifted = compare.shift_images(x_test, -3, 0)
        assert result["shifted_accuracy"]["3"]["up"] == model.evaluate(shifted, y_test)[1]


def test_saved_models_were_trained_with_the_requested_settings(run):
    _, numbers, saved = run
    for result in numbers["models"]:
        model = Sequential.load(saved / f"{result['model']}.npz")
        assert model.epoch == 1 and model.seed == 0
        assert type(model.optimizer).__name__ == "Adam" and model.optimizer.lr == 1e-3
        assert model.optimizer.steps == 4  # 256 images in batches of 64
        assert model.history.loss == [result["epochs"][0]["loss"]]


def test_printed_table_shows_the_json_numbers_side_by_side(run):
    stdout, numbers, _ = run
    rows = {line[:30].strip(): line[30:].split() for line in stdout.splitlines()}
    logreg, dense = numbers["models"]
    assert rows[""] == ["logreg", "dense"]
    assert rows["parameters"] == ["7,850", "101,770"]
    assert rows["test accuracy"] == [f"{logreg['test_accuracy']:.4f}", f"{dense['test_accuracy']:.4f}"]
    assert rows["errors per 1,000 test images"] == [f"{r['errors_per_1000']:.1f}" for r in (logreg, dense)]
    assert rows["training images/second"] == [f"{r['train_images_per_second']:,.0f}" for r in (logreg, dense)]
    for d in compare.SHIFTS:
        assert rows[f"accuracy, shifted {d} px"] == [f"{r['shifted_accuracy'][str(d)]['mean']:.4f}"
                                                    for r in (logreg, dense)]
    assert "1 epoch on 256 training images, tested on 300" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--models", "dense,resnet"], "expected distinct names from cnn, cnn-deep, lenet5, dense, logreg"),
    (["--models", "dense,dense"], "expected distinct names"),
    (["--epochs", "0"], "expected an integer >= 1, got 0"),
    (["--lr", "-1"], "expected a number > 0"),
    (["--limit", "many"], "expected an integer, got 'many'"),
    (["--backend", "gpu"], "invalid choice: 'gpu'"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_limits_beyond_the_data_and_unwritable_paths_are_usage_errors(mnist_dir, tmp_path, capsys):
    for argv, message in (
        (["--limit", "60001"], "--limit 60001 is more than the 60,000 images available"),
        (["--test-limit", "10001"], "--test-limit 10001 is more than the 10,000 images available"),
        (["--json", str(tmp_path / "missing" / "n.json")], "its directory does not exist"),
        (["--data-dir", str(tmp_path)], "files missing in"),
    ):
        with pytest.raises(SystemExit):
            compare.main(["--data-dir", mnist_dir, *argv])
        assert message in capsys.readouterr().err
