"""fastconv.checkpoint: the on-disk layout, and every kind of damaged file
turned into one CheckpointError naming the file, through each reader
(Sequential.load, fastconv-train --resume, fastconv-explain/-viz --checkpoint).

Each damaged file is real: a checkpoint written by Sequential.save, then cut,
flipped or rewritten entry by entry.
"""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastconv import checkpoint, cli, explain, viz
from fastconv.checkpoint import CheckpointError
from fastconv.layers import BatchNorm2D, Conv2D, Dense, Flatten
from fastconv.model import Sequential
from fastconv.optim import Adam


def tiny_model():
    """Flatten -> Dense 12 -> 3 on 1x2x2 inputs, trained a few Adam steps."""
    model = Sequential([Flatten(), Dense(4, 3)], input_shape=(1, 2, 2), seed=0)
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 1, 2, 2)), rng.integers(0, 3, 32), epochs=2, batch_size=8,
              optimizer=Adam(0.01), verbose=False)
    return model


@pytest.fixture
def saved(tmp_path):
    """Path of a sound checkpoint of :func:`tiny_model`."""
    path = tmp_path / "model.npz"
    tiny_model().save(path)
    return path


def entries(path):
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def rewrite(path, change):
    """Apply ``change(arrays, meta)`` to the checkpoint's entries and write them back."""
    arrays = entries(path)
    meta = json.loads(arrays["meta"].item())
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def flip_a_weight_byte(path):
    """Flip one byte inside the stored data of params/dense/w (zip CRC now wrong)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("params/dense/w.npy")
    raw = bytearray(path.read_bytes())
    name_length, extra_length = (int.from_bytes(raw[info.header_offset + o : info.header_offset + o + 2], "little")
                                 for o in (26, 28))
    raw[info.header_offset + 30 + name_length + extra_length + info.file_size - 5] ^= 0xFF
    path.write_bytes(bytes(raw))


def with_param(name, value):
    return lambda arrays, meta: arrays.__setitem__(f"params/{name}", value)


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "truncated or damaged checkpoint"),
    "bad CRC": (flip_a_weight_byte, "damaged checkpoint, entry 'params/dense/w' cannot be read (Bad CRC-32"),
    "text file": (lambda p: p.write_text("my notes, not a model\n"),
                  "is not a fastconv checkpoint (those are .npz archives written by fastconv-train --save"),
    "empty file": (lambda p: p.write_bytes(b""), "is not a fastconv checkpoint"),
    "other npz": (lambda p: np.savez(p, a=np.zeros(3)), "is not a fastconv checkpoint (a .npz archive without the 'meta'"),
    "pickled objects": (lambda p: np.savez(p, meta=np.array([{"format": "x"}], dtype=object)),
                        "entry 'meta' holds pickled Python objects, which fastconv never loads"),
    "missing entry": (lambda p: rewrite(p, lambda a, m: a.pop("epoch")), "the entry 'epoch' is missing"),
    "missing meta key": (lambda p: rewrite(p, lambda a, m: m.pop("rng_state")), "its metadata lacks 'rng_state'"),
    "missing parameter": (lambda p: rewrite(p, lambda a, m: a.pop("params/dense/b")),
                          "saved weights: missing dense/b"),
    "unknown layer": (lambda p: rewrite(p, lambda a, m: m["architecture"][1].update({"class": "Conv3D"})),
                      "unknown layer class 'Conv3D' (this fastconv knows AvgPool2D, BatchNorm, BatchNorm2D, Conv2D"),
    "unknown optimizer": (lambda p: rewrite(p, lambda a, m: m["optimizer"].update({"class": "Lion"})),
                          "unknown optimizer class 'Lion'"),
    "wrong shape": (lambda p: rewrite(p, with_param("dense/w", np.zeros((3, 4), np.float32))),
                    "saved weights: 'dense/w' has shape (3, 4), the architecture needs (4, 3)"),
    "wrong optimizer shape": (lambda p: rewrite(p, lambda a, m: a.__setitem__("optimizer/m/dense/b", np.zeros(7))),
                              "saved Adam state 'm': 'dense/b' has shape (7,), the architecture needs (3,)"),
    "layers that do not fit": (lambda p: rewrite(p, lambda a, m: m["architecture"][1]["config"].update({"in_features": 5})),
                               "the saved architecture cannot be built"),
    "newer format": (lambda p: rewrite(p, lambda a, m: m.update({"format": "fastconv.Sequential/2"})),
                     "was written by a newer fastconv (format fastconv.Sequential/2; this version reads up to /1)"),
    "other format": (lambda p: rewrite(p, lambda a, m: m.update({"format": "keras.Model/1"})),
                     "is not a fastconv checkpoint (format 'keras.Model/1'"),
    "NaN weights": (lambda p: rewrite(p, with_param("dense/w", np.full((4, 3), np.nan, np.float32))),
                    "params/dense/w holds 12 non-finite value(s) (NaN or infinity) of 12"),
    "infinite optimizer state": (lambda p: rewrite(p, lambda a, m: a["optimizer/v/dense/b"].fill(np.inf)),
                                 "optimizer/v/dense/b holds 3 non-finite value(s)"),
    "extra weight": (lambda p: rewrite(p, with_param("conv2d/w", np.zeros(3, np.float32))),
                     "saved weights: not in the architecture: conv2d/w"),
    "integer weights": (lambda p: rewrite(p, with_param("dense/b", np.zeros(3, np.int64))),
                        "params/dense/b holds int64 values; weights are floating point"),
    "epoch not a number": (lambda p: rewrite(p, lambda a, m: a.__setitem__("epoch", np.array("two"))),
                           "'epoch' must be an integer"),
    "SGD state in an Adam checkpoint": (lambda p: rewrite(p, lambda a, m: a.__setitem__("optimizer/velocity/dense/b",
                                                                                          np.zeros(3))),
                                        "saved optimizer state ['m', 'v', 'velocity'] is not Adam's (its state: m, v)"),
    "bad history": (lambda p: rewrite(p, lambda a, m: m["history"]["loss"].pop()),
                    "its training history needs the lists epoch, loss"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_checkpoint_is_one_error_naming_the_file(saved, case):
    damage, message = DAMAGE[case]
    damage(saved)
    with pytest.raises(CheckpointError) as raised:
        Sequential.load(saved)
    assert str(raised.value).startswith(str(saved))
    assert message in str(raised.value)
    assert "allow_pickle" not in str(raised.value)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.npz: no such checkpoint file"):
        Sequential.load(tmp_path / "missing.npz")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_a_sound_checkpoint_passes_every_check(saved):
    model = tiny_model()
    loaded = Sequential.load(saved)
    for name, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)
    assert loaded.epoch == 2 and loaded.optimizer.steps == model.optimizer.steps == 8


def test_format_1_layout_is_unchanged(saved):
    """Files written before the format moved to its own module stay readable:
    the entries and metadata are those of fastconv.Sequential/1."""
    arrays = entries(saved)
    assert sorted(arrays) == ["epoch", "input_shape", "meta", "optimizer/m/dense/b", "optimizer/m/dense/w",
                              "optimizer/v/dense/b", "optimizer/v/dense/w", "params/dense/b", "params/dense/w"]
    meta = json.loads(arrays["meta"].item())
    assert meta["format"] == "fastconv.Sequential/1"
    assert sorted(meta) == ["architecture", "dtype", "format", "history", "optimizer", "rng_state", "seed"]
    assert meta["architecture"][1] == {"class": "Dense", "config": Dense(4, 3).config()}
    assert meta["optimizer"] == {"class": "Adam", "config": Adam(0.01).config(), "steps": 8}


def test_a_file_from_before_the_per_epoch_learning_rate_loads_with_none_there(saved):
    rewrite(saved, lambda arrays, meta: meta["history"].pop("lr"))
    loaded = Sequential.load(saved)
    assert loaded.history.lr == [None, None] and loaded.history.epoch == [1, 2]


def bn_model():
    model = Sequential([Conv2D(1, 2, 3, padding="same"), BatchNorm2D(2), Flatten(), Dense(8, 3)],
                       input_shape=(1, 2, 2), seed=0)
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 1, 2, 2)), rng.integers(0, 3, 16), epochs=1, batch_size=8, verbose=False)
    return model


def test_running_statistics_are_saved_as_buffers(tmp_path):
    path = tmp_path / "bn.npz"
    bn_model().save(path)
    assert {k for k in entries(path) if k.startswith("buffers/")} == {"buffers/batch_norm2d/running_mean",
                                                                       "buffers/batch_norm2d/running_var"}


@pytest.mark.parametrize("change, message", [
    (lambda arrays, meta: arrays.pop("buffers/batch_norm2d/running_var"),
     "saved running statistics: missing batch_norm2d/running_var"),
    (lambda arrays, meta: arrays.__setitem__("buffers/batch_norm2d/running_mean", np.zeros(3, np.float32)),
     r"'batch_norm2d/running_mean' has shape \(3,\), the architecture needs \(2,\)"),
    (lambda arrays, meta: arrays.__setitem__("buffers/batch_norm2d/running_var", np.array([1, np.nan], np.float32)),
     "buffers/batch_norm2d/running_var holds 1 non-finite value"),
])
def test_damaged_running_statistics_are_refused(tmp_path, change, message):
    path = tmp_path / "bn.npz"
    bn_model().save(path)
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        Sequential.load(path)


def test_model_description_is_what_the_model_computes(saved):
    description = checkpoint.read(saved).model
    assert [entry["class"] for entry in description.architecture] == ["Flatten", "Dense"]
    assert description.input_shape == (1, 2, 2) and description.dtype == "float32"
    assert {name: p.shape for name, p in description.params.items()} == {"dense/w": (4, 3), "dense/b": (3,)}


# ------------------------------------------------------- the commands


CLI_CASES = ["truncated", "bad CRC", "text file", "unknown layer", "wrong shape", "newer format", "NaN weights"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_train_resume_prints_one_line_and_exits_1(saved, case, capsys):
    DAMAGE[case][0](saved)
    assert cli.main(["--resume", str(saved), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"fastconv-train: error: {err.split(': error: ', 1)[1]}"
    assert err.count("\n") == 1 and str(saved) in err and DAMAGE[case][1] in err


@pytest.mark.parametrize("case", CLI_CASES)
def test_explain_checkpoint_prints_one_line_and_exits_1(saved, case, capsys):
    DAMAGE[case][0](saved)
    with pytest.raises(SystemExit) as exit_info:
        explain.main(["--checkpoint", str(saved)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastconv-explain: error: {saved}") and err.count("\n") == 1
    assert DAMAGE[case][1] in err


def test_viz_checkpoint_prints_one_line_and_exits_1(saved, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    DAMAGE["bad CRC"][0](saved)
    with pytest.raises(SystemExit) as exit_info:
        viz.main(["filters", "--checkpoint", str(saved), "--out", str(tmp_path / "png")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastconv-viz filters: error: {saved}: damaged checkpoint") and err.count("\n") == 1


@pytest.mark.parametrize("command, args", [
    ("fastconv-train", ["--resume"]),
    ("fastconv-explain", ["--checkpoint"]),
    ("fastconv-viz", ["curves", "--out", "unused", "--checkpoint"]),
])
def test_installed_commands_print_no_traceback(tmp_path, command, args):
    notes = tmp_path / "notes.npz"
    notes.write_text("not a model")
    script = Path(sys.executable).with_name(command)
    result = subprocess.run([str(script), *args, str(notes)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "allow_pickle" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"{command}{' curves' if command == 'fastconv-viz' else ''}: "
                                                  f"error: {notes} is not a fastconv checkpoint (those are .npz "
                                                  "archives written by fastconv-train --save or Sequential.save; "
                                                  "this file starts with b'not ')"]
