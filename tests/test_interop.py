"""Interop: the PyTorch state_dict view, safetensors and ONNX files, and the
fastconv-export / fastconv-import commands, checked against onnxruntime and
PyTorch on real MNIST test digits.

onnxruntime and torch are test-only: without them those tests skip with a
reason, except under CI=true, where they must run.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv import interop, models
from fastconv.data import load_dataset
from fastconv.interop_cli import export_main, import_main
from fastconv.layers import LAYERS, Layer
from fastconv.model import Sequential
from fastconv.state_dict import InteropError
from optional_imports import optional

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
IMAGES = 1000
TOLERANCE = 1e-4  # of the largest logit


@pytest.fixture(scope="module")
def digits():
    """The first 1,000 MNIST test images (N, 1, 28, 28) float32, or random
    images of that shape when the MNIST files are not here."""
    if MNIST.is_dir():
        return load_dataset("mnist", MNIST, download=False).x_test[:IMAGES]
    return np.random.default_rng(0).random((IMAGES, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def trained(digits):
    """Every built-in model, the reference CNN trained for a few seconds (so
    its predicted classes are not near-ties of an untrained net)."""
    built = {name: models.build(name, seed=0) for name in models.MODELS}
    if MNIST.is_dir():
        data = load_dataset("mnist", MNIST, download=False)
        built["cnn"].fit(data.x_train[:2000], data.y_train[:2000], epochs=1, verbose=False)
        built["cnn-deep"].fit(data.x_train[:512], data.y_train[:512], epochs=1, verbose=False)
    else:  # running statistics away from their initial 0 and 1 all the same
        built["cnn-deep"].fit(digits[:128], np.arange(128) % 10, epochs=1, verbose=False)
    return built


def assert_same_logits(got, expected):
    """Within TOLERANCE of the largest logit, and the same class for every image."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error <= TOLERANCE, f"relative error {error:.2e}"
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def torch_logits(net, x):
    torch = optional("torch")
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------- state_dict


def test_reference_cnn_state_dict_has_torch_names_and_layouts():
    model = models.build("cnn")
    weights = model.state_dict()
    assert list(weights) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                             "10.weight", "10.bias"]
    assert weights["0.weight"].shape == (32, 1, 3, 3) and weights["7.weight"].shape == (128, 1600)
    np.testing.assert_array_equal(weights["7.weight"], model.layers[7].params["w"].T)
    np.testing.assert_array_equal(weights["3.weight"], model.layers[3].params["w"])
    weights["0.bias"][:] = 1  # a copy: the model is untouched
    assert not model.layers[0].params["b"].any()


def test_batch_norm_state_dict_carries_running_statistics_under_torch_names():
    model = models.build("cnn-deep")
    model.layers[3].buffers["running_var"][:] = 2.5
    weights = model.state_dict()
    assert [k for k in weights if k.startswith("3.")] == ["3.weight", "3.bias", "3.running_mean", "3.running_var"]
    assert (weights["3.running_var"] == 2.5).all() and weights["13.running_mean"].shape == (128,)
    with pytest.raises(InteropError, match=r"missing keys 3.running_var"):
        model.load_state_dict({k: v for k, v in weights.items() if k != "3.running_var"})
    with pytest.raises(InteropError, match=r"unexpected keys 0.num_batches_tracked"):
        model.load_state_dict({**weights, "0.num_batches_tracked": np.zeros((), np.int64)})


@pytest.mark.parametrize("name", models.MODELS)
def test_state_dict_round_trip_gives_the_same_logits(name, digits):
    source, target = models.build(name, seed=0), models.build(name, seed=1)
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target.forward(digits[:64]), source.forward(digits[:64]))


def test_float64_weights_are_cast_to_the_model_dtype():
    model = models.build("logreg")
    model.load_state_dict({k: v.astype(np.float64) + 1 for k, v in model.state_dict().items()})
    assert model.layers[1].params["b"].dtype == np.float32 and (model.layers[1].params["b"] == 1).all()


def test_another_architectures_state_dict_names_each_bad_key():
    model = models.build("cnn")
    before = model.state_dict()
    with pytest.raises(InteropError) as error:
        model.load_state_dict(models.build("lenet5").state_dict())
    message = str(error.value)
    assert "missing keys 10.weight, 10.bias;" in message
    assert "unexpected keys 9.weight, 9.bias, 11.weight, 11.bias (this model's keys: 0.weight, " in message
    assert "'0.weight' has shape (6, 1, 5, 5), this model needs (32, 1, 3, 3)" in message
    assert "'7.weight' has shape (120, 256), this model needs (128, 1600)" in message
    for key, value in model.state_dict().items():  # nothing half loaded
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_loads_what_fits_and_still_checks_shapes():
    model = models.build("dense")
    weights = models.build("dense", seed=3).state_dict()
    model.load_state_dict({"1.weight": weights["1.weight"], "extra": np.zeros(2)}, strict=False)
    np.testing.assert_array_equal(model.state_dict()["1.weight"], weights["1.weight"])
    with pytest.raises(InteropError, match=r"'1.weight' has shape \(784, 128\), this model needs \(128, 784\)"):
        model.load_state_dict({"1.weight": weights["1.weight"].T}, strict=False)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.bool_])
def test_non_float_weights_are_refused_by_key(dtype):
    model = models.build("logreg")
    weights = model.state_dict()
    weights["1.bias"] = weights["1.bias"].astype(dtype)
    with pytest.raises(InteropError, match=rf"'1.bias' holds {np.dtype(dtype)} values, weights must be float32 or "
                                           "float64"):
        model.load_state_dict(weights)


def test_non_finite_weights_are_refused_by_key():
    model = models.build("logreg")
    weights = model.state_dict()
    weights["1.weight"][0, 0] = np.nan
    with pytest.raises(InteropError, match=r"'1.weight' holds non-finite values"):
        model.load_state_dict(weights)


class Square(Layer):
    """A layer neither PyTorch's Sequential nor the ONNX export knows."""

    kind = "square"

    def param_shapes(self):
        return {"scale": (1,)}

    def initialize(self, rng, dtype=np.float32):
        self.params = {"scale": np.ones(1, dtype)}

    def forward(self, x, training):
        return x * x * self.params["scale"]


def test_a_model_that_cannot_be_expressed_is_refused_and_nothing_written(tmp_path, monkeypatch):
    optional("onnx")
    monkeypatch.setitem(LAYERS, "Square", Square)
    model = Sequential([LAYERS["Flatten"](), Square(), LAYERS["Dense"](784, 10)])
    with pytest.raises(InteropError, match=r"layer 1 \(Square 'square'\) has no PyTorch counterpart"):
        model.state_dict()
    with pytest.raises(InteropError, match=r"layer 1 \(Square 'square'\) cannot be exported to ONNX"):
        interop.save_onnx(model, tmp_path / "square.onnx")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", models.MODELS)
def test_onnx_export_runs_in_onnxruntime_with_fastconvs_logits(name, trained, digits, tmp_path):
    onnx, ort = optional("onnx"), optional("onnxruntime")
    model, path = trained[name], tmp_path / f"{name}.onnx"
    interop.save_onnx(model, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # any batch size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_same_logits(session.run(["logits"], {"x": digits})[0], model.forward(digits))
    assert session.run(["logits"], {"x": digits[:1]})[0].shape == (1, 10)


# ----------------------------------------------------------- PyTorch, files


@pytest.mark.parametrize("name", models.MODELS)
def test_safetensors_export_loads_into_torch_strictly(name, trained, digits, tmp_path):
    safetensors_torch = optional("safetensors.torch")
    optional("torch")
    model, path = trained[name], tmp_path / f"{name}.safetensors"
    interop.save_safetensors(model, path)
    net = interop.torch_sequential(model)
    net.load_state_dict(safetensors_torch.load_file(path), strict=True)
    assert_same_logits(torch_logits(net, digits), model.forward(digits))


@pytest.mark.parametrize("name", models.MODELS)
def test_torch_made_weights_import_to_torchs_logits(name, digits):
    torch = optional("torch")
    torch.manual_seed(0)
    net = interop.torch_sequential(models.build(name))
    for module in net:  # batch norm: statistics and affine terms PyTorch does not start from
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            for tensor in (module.running_mean, module.weight, module.bias):
                torch.nn.init.normal_(tensor, 0.0, 0.5)
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
    model = models.build(name)
    weights = {k: v.numpy() for k, v in net.state_dict().items()}
    assert any(k.endswith("num_batches_tracked") for k in weights) == (name in models.WITH_BATCH_NORM)
    model.load_state_dict(weights)  # strict: the batch counter is the one key accepted and ignored
    assert_same_logits(model.forward(digits), torch_logits(net, digits))


def test_import_command_builds_a_checkpoint_from_torch_weights(digits, tmp_path, capsys):
    torch, safetensors_torch = optional("torch"), optional("safetensors.torch")
    torch.manual_seed(1)
    net = interop.torch_sequential(models.build("cnn"))
    weights, checkpoint = tmp_path / "torch.safetensors", tmp_path / "imported.npz"
    safetensors_torch.save_file(net.state_dict(), weights)
    assert import_main([str(weights), "--model", "cnn", "--out", str(checkpoint)]) == 0
    assert f"wrote {checkpoint} (cnn, 225,034 parameters from {weights})" in capsys.readouterr().out
    assert_same_logits(Sequential.load(checkpoint).forward(digits), torch_logits(net, digits))


def test_export_then_import_gives_back_the_model(trained, digits, tmp_path, capsys):
    optional("onnx"), optional("safetensors")
    saved, onnx_path, st_path = tmp_path / "cnn.npz", tmp_path / "cnn.onnx", tmp_path / "cnn.safetensors"
    trained["cnn"].save(saved)
    assert export_main([str(saved), "--onnx", str(onnx_path), "--safetensors", str(st_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in printed] == [f"wrote {onnx_path}", f"wrote {st_path}"]
    for source in (st_path, onnx_path):  # an ONNX file's initializers are a state_dict too
        out = tmp_path / f"from-{source.suffix[1:]}.npz"
        assert import_main([str(source), "--model", "cnn", "--out", str(out)]) == 0
        np.testing.assert_array_equal(Sequential.load(out).forward(digits[:32]), trained["cnn"].forward(digits[:32]))


def test_installed_commands_exist():
    for command in ("fastconv-export", "fastconv-import"):
        script = Path(sys.executable).with_name(command)
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and command in result.stdout


# ---------------------------------------------------------------- bad input


def run_failing(main, argv, capsys, status=1):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture
def cnn_safetensors(tmp_path):
    optional("safetensors")
    path = tmp_path / "cnn.safetensors"
    interop.save_safetensors(models.build("cnn"), path)
    return path


def test_truncated_safetensors_is_one_line_naming_the_file(cnn_safetensors, tmp_path, capsys):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(cnn_safetensors.read_bytes()[:5000])
    err = run_failing(import_main, [str(cut), "--model", "cnn", "--out", str(tmp_path / "o.npz")], capsys)
    assert err.startswith(f"fastconv-import: error: {cut}: not a readable safetensors file") and err.count("\n") == 1
    assert not (tmp_path / "o.npz").exists()


def test_corrupt_onnx_is_one_line_naming_the_file(tmp_path, capsys):
    optional("onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\xffnot a protobuf at all" * 10)
    err = run_failing(import_main, [str(bad), "--model", "cnn", "--out", str(tmp_path / "o.npz")], capsys)
    assert err.startswith(f"fastconv-import: error: {bad}: not a readable ONNX file") and err.count("\n") == 1


def test_weights_of_another_architecture_name_the_file_and_keys(cnn_safetensors, tmp_path, capsys):
    err = run_failing(import_main, [str(cnn_safetensors), "--model", "lenet5", "--out", str(tmp_path / "o.npz")],
                      capsys)
    assert err.startswith(f"fastconv-import: error: {cnn_safetensors}: state_dict does not fit this model: ")
    assert "missing keys 9.weight" in err and "'0.weight' has shape (32, 1, 3, 3)" in err


def test_integer_weights_in_a_file_name_the_file_and_key(tmp_path, capsys):
    save_file = optional("safetensors.numpy").save_file
    weights = models.build("logreg").state_dict()
    weights["1.weight"] = weights["1.weight"].astype(np.int32)
    path = tmp_path / "int.safetensors"
    save_file(weights, path)
    err = run_failing(import_main, [str(path), "--model", "logreg", "--out", str(tmp_path / "o.npz")], capsys)
    assert f"{path}: state_dict does not fit this model: '1.weight' holds int32 values" in err


def test_missing_file_and_unusable_checkpoint_are_one_line(tmp_path, capsys):
    err = run_failing(import_main, [str(tmp_path / "none.safetensors"), "--model", "cnn", "--out", "x.npz"], capsys)
    assert f"{tmp_path / 'none.safetensors'}: no such file" in err
    err = run_failing(export_main, [str(tmp_path / "none.npz"), "--onnx", str(tmp_path / "o.onnx")], capsys)
    assert "none.npz: no such checkpoint file" in err


def test_export_needs_something_to_write(tmp_path, capsys):
    err = run_failing(export_main, [str(tmp_path / "m.npz")], capsys, status=2)
    assert "--onnx OUT.onnx, --safetensors OUT.safetensors, or both" in err


def test_without_the_extra_the_message_says_what_to_install(tmp_path, monkeypatch, capsys):
    saved = tmp_path / "m.npz"
    models.build("logreg").save(saved)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    err = run_failing(export_main, [str(saved), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert 'the onnx package is needed for this: pip install "fastconv[interop]"' in err
    assert not (tmp_path / "m.onnx").exists()
