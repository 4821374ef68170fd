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
from hypothesis import given, note, settings
from hypothesis import strategies as st

from fastconv import checkpoint, explain, train, viz
from fastconv.checkpoint import CheckpointError
from fastconv.layers import BatchNorm2D, Conv2D, Dense, Flatten
from fastconv.model import Sequential
from fastconv.optim import SGD, Adam


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
    "layers that do not fit": (lambda p: rewrite(p, lambda a, m: a.__setitem__("input_shape", np.array([1, 2, 3]))),
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


WRONG_KIND = {
    "optimizer not an object": (lambda a, m: m.update({"optimizer": ["Adam"]}),
                                r"its optimizer entry must be an object \{\"class\", \"config\", \"steps\"\} "
                                r"or null, found \['Adam'\]"),
    "optimizer without config": (lambda a, m: m["optimizer"].pop("config"), "its optimizer entry lacks 'config'"),
    "optimizer without steps": (lambda a, m: m["optimizer"].pop("steps"), "its optimizer entry lacks 'steps'"),
    "optimizer state without a layer": (lambda a, m: a.__setitem__("optimizer/m", np.zeros(3, np.float32)),
                                        "the entry 'optimizer/m' is not named optimizer/<state>/<layer>/<param>"),
    "optimizer state without a parameter": (
        lambda a, m: a.__setitem__("optimizer/m/dense", np.zeros(3, np.float32)),
        "the entry 'optimizer/m/dense' is not named optimizer/<state>/<layer>/<param>"),
    "infinite step count": (lambda a, m: m["optimizer"].update({"steps": float("inf")}),
                            "its optimizer step count must be a non-negative integer, found inf"),
    "optimizer setting beyond float range": (lambda a, m: m["optimizer"]["config"].update({"lr": 10**400}),
                                             "bad Adam settings .*: int too large to convert to float"),
    "layer class not a string": (lambda a, m: m["architecture"][1].update({"class": ["Dense"]}),
                                 r"unknown layer class \['Dense'\] \(this fastconv knows"),
    "optimizer class not a string": (lambda a, m: m["optimizer"].update({"class": {"name": "Adam"}}),
                                     r"unknown optimizer class \{'name': 'Adam'\} \(this fastconv knows"),
    "history a list": (lambda a, m: m.update({"history": [1, "loss"]}),
                       r"its training history needs the lists epoch, loss, .* found \[1, 'loss'\]"),
    "history a number": (lambda a, m: m.update({"history": 3}),
                         "its training history needs the lists epoch, loss, .* found 3"),
    "random state out of range": (lambda a, m: m["rng_state"]["state"].update({"state": -1}),
                                  "damaged checkpoint, bad random generator state"),
    "dtype null": (lambda a, m: m.update({"dtype": None}),
                   "its dtype None is not the name of a floating-point type"),
    "dtype of integers": (lambda a, m: m.update({"dtype": "int64"}),
                          "its dtype 'int64' is not the name of a floating-point type"),
    "weights of another float type": (with_param("dense/b", np.zeros(3, np.float64)),
                                      "saved weights: 'dense/b' holds float64 values, the model's dtype is float32"),
    "optimizer state of another float type": (
        lambda a, m: a.__setitem__("optimizer/v/dense/w", np.zeros((4, 3), np.float16)),
        "saved Adam state 'v': 'dense/w' holds float16 values, the model's dtype is float32"),
    "a layer too big for memory": (lambda a, m: m["architecture"][1]["config"].update({"out_features": 10**12}),
                                   r"saved weights: 'dense/w' has shape \(4, 3\), the architecture needs "
                                   r"\(4, 1000000000000\)"),
}


@pytest.mark.parametrize("case", WRONG_KIND)
def test_an_entry_of_the_wrong_kind_is_a_checkpoint_error(saved, case):
    """Damage that used to escape as AttributeError, KeyError, TypeError,
    OverflowError, MemoryError or a bare ValueError, or to load a model
    other than the one saved (a null dtype gave float64, float64 weights
    were cast silently)."""
    change, message = WRONG_KIND[case]
    rewrite(saved, change)
    with pytest.raises(CheckpointError, match=message) as raised:
        Sequential.load(saved)
    assert str(raised.value).startswith(f"{saved}: ")


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


# ------------------------------------------------------- any damage at all


@pytest.fixture(scope="module")
def sound_entries(tmp_path_factory):
    """The entries of two sound checkpoints, by model: Dense with Adam state,
    and an untrained Conv2D + BatchNorm2D (running statistics) with an SGD
    that has not stepped yet."""
    untrained = Sequential([Conv2D(1, 2, 3, padding="same"), BatchNorm2D(2), Flatten(), Dense(8, 3)],
                           input_shape=(1, 2, 2), seed=0)
    untrained.optimizer = SGD(0.1, momentum=0.9)
    folder = tmp_path_factory.mktemp("sound")
    found = {}
    for name, model in (("dense", tiny_model()), ("batch norm", untrained)):
        model.save(folder / f"{name}.npz")
        found[name] = entries(folder / f"{name}.npz")
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Where each damaged checkpoint is written, one after the other."""
    return tmp_path_factory.mktemp("damaged") / "model.npz"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4,
)
OTHER_DTYPES = ["float16", "float64", "int64", "uint8", "bool", "complex64", "U3", [("a", "<f4")]]
# entry names from letters np.savez cannot mistake for its own arguments (file, allow_pickle)
ENTRY_NAMES = st.text(alphabet="abdmnrsuvw_/", max_size=12)


def damage_meta(meta, data):
    """Delete, replace or rename one value somewhere in ``meta``, in place:
    a top-level value, or (three times in four) one further down."""
    parent, key = meta, data.draw(st.sampled_from(sorted(meta)))
    path = [key]
    while isinstance(parent[key], (dict, list)) and parent[key] and data.draw(st.integers(0, 3)) > 0:
        parent = parent[key]
        key = data.draw(st.sampled_from(sorted(parent) if isinstance(parent, dict) else range(len(parent))))
        path.append(key)
    how = data.draw(st.sampled_from(["delete", "replace", "rename"] if isinstance(parent, dict) else ["replace"]))
    note(f"meta: {how} {path}")
    if how == "replace":
        parent[key] = data.draw(JSON_VALUES)
    else:
        value = parent.pop(key)
        if how == "rename":
            parent[data.draw(st.text(max_size=6))] = value


def damage_entry(arrays, data):
    """Delete, rename, retype or reshape one entry of ``arrays``, in place."""
    key = data.draw(st.sampled_from(sorted(arrays)))
    how = data.draw(st.sampled_from(["delete", "rename", "retype", "reshape"]))
    value = arrays.pop(key)
    note(f"entry: {how} {key}")
    if how == "rename":
        parts = key.split("/")
        arrays[data.draw(st.sampled_from(["/".join(parts[:-1]), key + "/b", "/".join(parts[1:])]) | ENTRY_NAMES
                         | st.sampled_from(sorted(arrays)))] = value
    elif how == "retype":
        dtype = np.dtype(data.draw(st.sampled_from(OTHER_DTYPES)))
        try:
            arrays[key] = value.astype(dtype)
        except (TypeError, ValueError):  # text that is not a number
            arrays[key] = np.zeros(value.shape, dtype)
    elif how == "reshape":
        flat = value.reshape(-1)
        arrays[key] = data.draw(st.sampled_from([flat, value[None], value.T, flat[:0], flat[: max(flat.size // 2, 1)],
                                                 flat[:1].reshape(()) if flat.size else value]))


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")  # retyping complex to real
@settings(max_examples=100)
@given(data=st.data())
def test_any_damage_is_a_checkpoint_error_or_a_sound_load(sound_entries, scratch, data):
    """Whatever is deleted, renamed, retyped, reshaped or cut off, loading
    either succeeds or raises CheckpointError naming the file: never any
    other exception."""
    model = data.draw(st.sampled_from(sorted(sound_entries)))
    arrays = {key: value.copy() for key, value in sound_entries[model].items()}
    meta = json.loads(arrays["meta"].item())
    for _ in range(data.draw(st.integers(0, 2))):
        if meta:
            damage_meta(meta, data)
    arrays["meta"] = np.array(json.dumps(meta))
    for _ in range(data.draw(st.integers(0, 2))):
        if arrays:
            damage_entry(arrays, data)
    path = scratch
    np.savez(path, **arrays)
    if data.draw(st.integers(0, 4)) == 4:  # one file in five, or so, cut short
        size = data.draw(st.integers(0, path.stat().st_size - 1))
        note(f"cut to {size} bytes")
        path.write_bytes(path.read_bytes()[:size])
    try:
        Sequential.load(path)
    except CheckpointError as error:
        assert str(error).startswith(str(path))


# ------------------------------------------------------- the commands


CLI_CASES = ["truncated", "bad CRC", "text file", "unknown layer", "wrong shape", "newer format", "NaN weights"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_train_resume_prints_one_line_and_exits_1(saved, case, capsys):
    DAMAGE[case][0](saved)
    assert train.main(["--resume", str(saved), "--quiet"]) == 1
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
