"""fastconv-train end to end on small slices of the real MNIST files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv import inspection, train
from fastconv.model import Sequential


def run(mnist_dir, *args):
    return train.main(["--data-dir", str(mnist_dir), "--quiet", "--validation", "500", *args])


def test_trains_saves_and_reports(mnist_dir, tmp_path, capsys):
    checkpoint, metrics_path = tmp_path / "dense.npz", tmp_path / "metrics.json"
    code = run(mnist_dir, "--model", "dense", "--limit", "3000", "--epochs", "2",
               "--save", str(checkpoint), "--metrics-out", str(metrics_path))
    assert code == 0
    printed = capsys.readouterr().out
    metrics = json.loads(metrics_path.read_text())
    assert metrics["params"] == 101_770
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][1]["loss"] < metrics["epochs"][0]["loss"]
    assert all(e["val_accuracy"] is not None and e["images_per_second"] > 0 for e in metrics["epochs"])
    # The reported test accuracy is the saved model's, on the real test set.
    model = Sequential.load(checkpoint)
    from fastconv.data import load_dataset

    test = load_dataset("mnist", mnist_dir)
    assert model.epoch == 2
    assert model.evaluate(test.x_test, test.y_test)[1] == pytest.approx(metrics["test_accuracy"])
    assert metrics["test_accuracy"] > 0.85
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in printed


def test_summary_progress_and_confusion_matrix_when_not_quiet(mnist_dir, capsys):
    code = train.main(["--data-dir", str(mnist_dir), "--model", "logreg", "--limit", "1000",
                     "--epochs", "1", "--validation", "0", "--save", ""])
    assert code == 0
    out = capsys.readouterr()
    assert "Total params: 7,850" in out.out
    assert "true \\ predicted" in out.out
    matrix_rows = [line.split() for line in out.out.splitlines() if line[:1].isdigit() and len(line.split()) == 11]
    assert sum(int(v) for row in matrix_rows for v in row[1:]) == 10_000
    assert "epoch 1/1" in out.err  # the tqdm bar


def test_resume_continues_the_epoch_count(mnist_dir, tmp_path):
    checkpoint, metrics_path = tmp_path / "m.npz", tmp_path / "m.json"
    assert run(mnist_dir, "--model", "logreg", "--limit", "500", "--epochs", "1", "--save", str(checkpoint)) == 0
    assert run(mnist_dir, "--resume", str(checkpoint), "--limit", "500", "--epochs", "3",
               "--save", str(checkpoint), "--metrics-out", str(metrics_path)) == 0
    assert [e["epoch"] for e in json.loads(metrics_path.read_text())["epochs"]] == [1, 2, 3]
    assert Sequential.load(checkpoint).epoch == 3


def test_resume_without_save_updates_the_resumed_file(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the --model default, fastconv-cnn.npz, would land
    checkpoint = tmp_path / "fastconv-logreg.npz"
    assert run(mnist_dir, "--model", "logreg", "--limit", "300", "--epochs", "1", "--save", str(checkpoint)) == 0
    assert run(mnist_dir, "--resume", str(checkpoint), "--limit", "300", "--epochs", "2") == 0
    assert Sequential.load(checkpoint).epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastconv-logreg.npz"]


def test_resume_with_empty_save_writes_nothing(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "m.npz"
    assert run(mnist_dir, "--model", "logreg", "--limit", "300", "--epochs", "1", "--save", str(checkpoint)) == 0
    before = checkpoint.read_bytes()
    assert run(mnist_dir, "--resume", str(checkpoint), "--limit", "300", "--epochs", "2", "--save", "") == 0
    assert checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_resume_with_save_writes_there_and_keeps_the_resumed_file(mnist_dir, tmp_path):
    resumed, elsewhere = tmp_path / "m.npz", tmp_path / "more.npz"
    assert run(mnist_dir, "--model", "logreg", "--limit", "300", "--epochs", "1", "--save", str(resumed)) == 0
    assert run(mnist_dir, "--resume", str(resumed), "--limit", "300", "--epochs", "2", "--save", str(elsewhere)) == 0
    assert Sequential.load(resumed).epoch == 1 and Sequential.load(elsewhere).epoch == 2


def test_resume_is_the_same_as_training_straight_through(mnist_dir, tmp_path):
    straight, resumed = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ("--model", "dense", "--limit", "600", "--batch-size", "32")
    assert run(mnist_dir, *common, "--epochs", "2", "--save", str(straight)) == 0
    assert run(mnist_dir, *common, "--epochs", "1", "--save", str(resumed)) == 0
    assert run(mnist_dir, "--resume", str(resumed), *common, "--epochs", "2", "--save", str(resumed)) == 0
    a, b = Sequential.load(straight).params, Sequential.load(resumed).params
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_ctrl_c_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "c.npz"
    calls = {"n": 0}
    original = Sequential.train_step

    def interrupted_in_epoch_two(self, x, y, optimizer, *clock):
        calls["n"] += 1
        if calls["n"] == 12:  # 500 images / 64 = 8 steps per epoch: this is epoch 2
            raise KeyboardInterrupt
        return original(self, x, y, optimizer, *clock)

    monkeypatch.setattr(Sequential, "train_step", interrupted_in_epoch_two)
    code = run(mnist_dir, "--model", "logreg", "--limit", "500", "--epochs", "3", "--save", str(checkpoint))
    assert code == 130
    assert "interrupted during epoch 2" in capsys.readouterr().err
    assert Sequential.load(checkpoint).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_ctrl_c_during_the_save_reports_the_epoch_on_disk(mnist_dir, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "c.npz"
    saves = {"n": 0}
    savez = np.savez

    def interrupted_second_save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:  # the end-of-epoch-2 save
            raise KeyboardInterrupt
        return savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", interrupted_second_save)
    code = run(mnist_dir, "--model", "logreg", "--limit", "500", "--epochs", "3", "--save", str(checkpoint))
    assert code == 130
    assert f"interrupted while saving epoch 2; the checkpoint {checkpoint} holds epoch 1" in capsys.readouterr().err
    assert Sequential.load(checkpoint).epoch == 1


def test_ctrl_c_before_any_save_says_there_is_no_checkpoint(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "c.npz"
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sequential, "fit", interrupt)
    monkeypatch.setattr(train.data, "load_dataset", lambda *args, **kwargs: _TinyData)
    assert train.main(["--quiet", "--validation", "2", "--save", str(checkpoint)]) == 130
    assert f"interrupted during epoch 1; no usable checkpoint ({checkpoint}: no such checkpoint file)" \
        in capsys.readouterr().err


class _TinyData:
    x_train, y_train = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    code = train.main(["--data-dir", str(tmp_path), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "fastconv-train: error:" in err and "train-images-idx3-ubyte.gz" in err and str(tmp_path) in err


def test_truncated_data_file_is_a_clear_error(mnist_dir, tmp_path, capsys):
    for path in mnist_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    assert train.main(["--data-dir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte.gz" in err and "Traceback" not in err


def test_mnist_folder_is_refused_as_fashion_mnist(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("FASTCONV_DATA", str(mnist_dir))
    assert train.main(["--dataset", "fashion-mnist", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastconv-train: error: ") and err.count("\n") == 1
    assert "is the MNIST file train-labels-idx1-ubyte.gz" in err and "not Fashion-MNIST" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-3"], "--batch-size"),
        (["--lr", "0"], "--lr"),
        (["--model", "resnet"], "--model"),
        (["--backend", "cuda"], "--backend"),
    ],
)
def test_bad_arguments_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_past_the_requested_epochs_is_refused(mnist_dir, tmp_path, capsys):
    checkpoint = tmp_path / "m.npz"
    assert run(mnist_dir, "--model", "logreg", "--limit", "300", "--epochs", "2", "--save", str(checkpoint)) == 0
    assert run(mnist_dir, "--resume", str(checkpoint), "--epochs", "2") == 1
    assert "already holds 2 epochs" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("fastconv-train")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--metrics-out" in result.stdout and "--resume" in result.stdout


def test_confusion_matrix_counts():
    matrix = inspection.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


# ------------------------------------------------- cnn-deep and its options


def test_help_shows_each_models_defaults(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 12; cnn-deep: 20" in text
    assert "over --epochs); default: constant; cnn-deep: cosine" in text
    assert "(default: off; cnn-deep: on)" in text


def test_model_defaults_and_explicit_options():
    parser = train.build_parser()
    deep = train.settings(parser.parse_args(["--model", "cnn-deep"]), "cnn-deep")
    assert deep == {"epochs": 20, "lr_schedule": "cosine", "augment": True}
    plain = train.settings(parser.parse_args(["--model", "cnn"]), "cnn")
    assert plain == {"epochs": 12, "lr_schedule": "constant", "augment": False}
    chosen = train.settings(parser.parse_args(["--model", "cnn-deep", "--no-augment", "--lr-schedule", "step",
                                             "--epochs", "3"]), "cnn-deep")
    assert chosen == {"epochs": 3, "lr_schedule": "step", "augment": False}


def test_cnn_deep_trains_with_schedule_and_augmentation_and_reports_them(mnist_dir, tmp_path, capsys):
    metrics_path, checkpoint = tmp_path / "m.json", tmp_path / "deep.npz"
    code = train.main(["--data-dir", str(mnist_dir), "--model", "cnn-deep", "--limit", "640", "--epochs", "2",
                     "--validation", "200", "--save", str(checkpoint), "--metrics-out", str(metrics_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 epochs, Adam lr 0.001, cosine schedule, augmentation RandomAffine(max_shift=2" in out
    assert "Trainable params: 897,610" in out and "Non-trainable params: 704" in out
    metrics = json.loads(metrics_path.read_text())
    assert [e["lr"] for e in metrics["epochs"]] == pytest.approx([1e-3, 5e-4])
    assert metrics["augment"] == {"max_shift": 2, "max_rotation": 10.0, "max_scale": 0.1}
    assert metrics["params"] == 897_610 and metrics["non_trainable_params"] == 704
    assert "epoch 2: lr 0.0005," in out
    # resumed, the checkpoint is recognised as cnn-deep and keeps its defaults
    assert train.named_model(Sequential.load(checkpoint)) == "cnn-deep"


def test_options_a_model_cannot_take_are_refused(mnist_dir, capsys):
    assert run(mnist_dir, "--model", "cnn", "--no-batch-norm", "--limit", "100", "--epochs", "1", "--save", "") == 1
    assert "--no-batch-norm: model cnn has no batch norm layers" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["dense", "logreg"])
def test_augment_trains_the_flat_models_too(mnist_dir, tmp_path, model):
    # they flatten the image, yet moved digits teach them to answer for
    # moved digits (docs/concepts.md, section 16, measures it)
    metrics_path = tmp_path / "metrics.json"
    assert run(mnist_dir, "--model", model, "--augment", "--limit", "200", "--epochs", "1", "--save", "",
               "--metrics-out", str(metrics_path)) == 0
    assert json.loads(metrics_path.read_text())["augment"] == {"max_shift": 2, "max_rotation": 10.0,
                                                               "max_scale": 0.1}


def test_no_batch_norm_builds_cnn_deep_without_it(mnist_dir, tmp_path):
    metrics_path = tmp_path / "m.json"
    assert run(mnist_dir, "--model", "cnn-deep", "--no-batch-norm", "--no-augment", "--limit", "128", "--epochs",
               "1", "--save", "", "--metrics-out", str(metrics_path)) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics["non_trainable_params"] == 0 and metrics["params"] == 897_610 - 2 * (32 + 64 + 128 + 128)
    assert metrics["augment"] is None
