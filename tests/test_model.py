"""Sequential and the named models: shapes and parameter counts, backward
through the whole stack, training, reproducibility, checkpoints.

Conv and pool layers run the NumPy reference (``backend="numpy"``) on small
synthetic images so the suite stays fast.
"""
import gzip
import io
import os

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastconv import models, ops
from fastconv.gradcheck import numerical_gradient
from fastconv.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastconv.losses import softmax_cross_entropy
from fastconv.model import Sequential
from fastconv.optim import SGD, Adam

REF = {"backend": "numpy", "algorithm": "reference"}
CLASSES = 3
IMAGE = (1, 6, 6)


def small_cnn(seed=0, dtype=np.float32, dropout=0.2):
    """Conv 4@3x3 -> ReLU -> MaxPool 2 -> Flatten (16) -> Dropout -> Dense 3, on 1x6x6."""
    layers = [Conv2D(1, 4, 3, **REF), ReLU(), MaxPool2D(2, **REF), Flatten(),
              Dropout(dropout), Dense(16, CLASSES)]
    return Sequential(layers, input_shape=IMAGE, seed=seed, dtype=dtype)


def separable_data(n=96, seed=0):
    """Class k: a bright 2x2 block at the k-th of three places, on faint noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.uniform(0, 0.3, (n,) + IMAGE).astype(np.float32)
    corners = [(0, 0), (2, 3), (4, 1)]
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, 0, r : r + 2, c : c + 2] += 1
    return x, y


def weights(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


# ----------------------------------------------------- shapes and summaries

MODEL_SPECS = {
    "cnn": (225_034, [(32, 26, 26), (32, 26, 26), (32, 13, 13), (64, 11, 11), (64, 11, 11),
                      (64, 5, 5), (1600,), (128,), (128,), (128,), (10,)]),
    "lenet5": (44_426, [(6, 24, 24), (6, 24, 24), (6, 12, 12), (16, 8, 8), (16, 8, 8), (16, 4, 4),
                        (256,), (120,), (120,), (84,), (84,), (10,)]),
    "dense": (101_770, [(784,), (128,), (128,), (10,)]),
    "logreg": (7_850, [(784,), (10,)]),
    "cnn-deep": (897_610, [(32, 28, 28), (32, 28, 28), (32, 14, 14), (32, 14, 14), (64, 14, 14), (64, 14, 14),
                           (64, 7, 7), (64, 7, 7), (128, 7, 7), (128, 7, 7), (128, 7, 7), (6272,), (128,),
                           (128,), (128,), (128,), (10,)]),
}
NON_TRAINABLE = {"cnn-deep": 2 * (32 + 64 + 128 + 128)}  # running mean and variance per batch norm channel


def test_models_lists_every_builder():
    assert set(models.MODELS) == set(MODEL_SPECS)


@pytest.mark.parametrize("name", MODEL_SPECS)
def test_model_param_count_shapes_and_summary(name):
    count, shapes = MODEL_SPECS[name]
    model = models.build(name, **REF)
    assert model.param_count() == count
    assert sum(p.size for p in model.params.values()) == count
    assert model.output_shapes == shapes
    out = io.StringIO()
    model.summary(file=out)
    table = out.getvalue()
    fixed = NON_TRAINABLE.get(name, 0)
    assert model.buffer_count() == fixed == sum(b.size for b in model.buffers.values())
    assert f"Total params: {count + fixed:,}" in table
    assert f"Trainable params: {count:,}" in table
    assert f"Non-trainable params: {fixed:,}" in table
    for layer, shape in zip(model.layers, shapes):
        row = next(line for line in table.splitlines() if line.startswith(f"{layer.name} ("))
        assert "(None, " + ", ".join(map(str, shape)) + ")" in row
        assert row.rstrip().endswith(f"{layer.param_count() + layer.buffer_count():,}")


def test_summary_prints_to_stdout_by_default(capsys):
    models.build("logreg").summary()
    assert "Total params: 7,850" in capsys.readouterr().out


def test_build_passes_backend_to_conv_and_pool_layers():
    model = models.build("cnn", backend="numpy", algorithm="reference", seed=3)
    kernel_layers = [l for l in model.layers if hasattr(l, "backend")]
    assert len(kernel_layers) == 4
    assert all((l.backend, l.algorithm) == ("numpy", "reference") for l in kernel_layers)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build("resnet")


def test_named_model_forward_gives_logits_for_ten_classes():
    model = models.build("lenet5", **REF)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    logits = model.forward(x)
    assert logits.shape == (3, 10) and logits.dtype == np.float32


# ------------------------------------------------------------- bad input


def test_mismatched_layers_are_rejected_at_build_time():
    with pytest.raises(ValueError, match=r"Dense 'dense': expected per-sample input \(100,\), got \(784,\)"):
        Sequential([Flatten(), Dense(100, 10)], input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d_1': expected per-sample input \(8, H, W\), got \(4, 26, 26\)"):
        Sequential([Conv2D(1, 4, 3), Conv2D(8, 4, 3)], input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        Sequential([Flatten(name="a"), Dense(784, 10, name="a")])


def test_forward_rejects_wrong_input_shape():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 6, 6\) with N >= 1, got \(2, 1, 7, 6\)"):
        model.forward(np.zeros((2, 1, 7, 6), np.float32))
    with pytest.raises(ValueError, match=r"got \(0, 1, 6, 6\)"):
        model.predict(np.zeros((0,) + IMAGE, np.float32))
    with pytest.raises(ValueError, match=r"y must be integer labels of shape \(2,\)"):
        model.fit(np.zeros((2,) + IMAGE, np.float32), np.zeros(3, int), verbose=False)


# -------------------------------------------------- backward through the stack


def test_whole_model_gradients_match_numerical_in_float64():
    model = small_cnn(dtype=np.float64, dropout=0.0)
    x, y = separable_data(n=4)
    x = x.astype(np.float64)

    def loss(_):
        return np.array(softmax_cross_entropy(model.forward(x, training=True), y)[0])

    _, dlogits = softmax_cross_entropy(model.forward(x, training=True), y)
    dx = model.backward(dlogits, input_grad=True)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    assert_allclose(dx, numerical_gradient(loss, x, 1.0), rtol=1e-5, atol=1e-9)
    for name, p in model.params.items():
        assert_allclose(analytic[name], numerical_gradient(loss, p, 1.0), rtol=1e-5, atol=1e-9,
                        err_msg=name)


def test_layers_below_the_first_trained_one_skip_input_gradients():
    model = Sequential([Flatten(), Dense(36, 5), ReLU(), Dense(5, CLASSES)], input_shape=IMAGE)
    assert [l.needs_input_grad for l in model.layers] == [False, False, True, True]
    x, y = separable_data(n=4)
    _, dlogits = softmax_cross_entropy(model.forward(x, training=True), y)
    assert model.backward(dlogits) is None
    assert model.backward(dlogits, input_grad=True).shape == x.shape
    assert model.backward(dlogits) is None
    assert [l.needs_input_grad for l in model.layers] == [False, False, True, True]


def test_first_conv_skips_dx_and_no_gradient_changes(monkeypatch):
    model = Sequential([Conv2D(1, 2, 3, **REF), ReLU(), Conv2D(2, 3, 3, **REF), Flatten(),
                        Dense(12, CLASSES)], input_shape=IMAGE, dtype=np.float64)
    x, y = separable_data(n=4)
    _, dlogits = softmax_cross_entropy(model.forward(x, training=True), y)
    asked = []  # (w.shape[:2], compute_dx) of each conv backward call, last layer first
    real = ops.conv2d_backward

    def spy(dy, x, w, *args, **kwargs):
        asked.append((w.shape[:2], kwargs["compute_dx"]))
        return real(dy, x, w, *args, **kwargs)

    monkeypatch.setattr(ops, "conv2d_backward", spy)
    assert model.backward(dlogits) is None
    assert asked == [((3, 2), True), ((2, 1), False)]
    without_dx = {k: g.copy() for k, g in model.grads.items()}
    asked.clear()
    model.backward(dlogits, input_grad=True)
    assert asked == [((3, 2), True), ((2, 1), True)]
    for name, g in model.grads.items():
        assert_allclose(without_dx[name], g, rtol=1e-12, atol=0, err_msg=name)


# ------------------------------------------------------------------- training


def test_fit_learns_separable_data():
    x, y = separable_data()
    model = small_cnn()
    before_loss, before_acc = model.evaluate(x, y)
    history = model.fit(x, y, epochs=6, batch_size=16, optimizer=Adam(0.02), verbose=False)
    assert len(history) == 6 and history.epoch == [1, 2, 3, 4, 5, 6]
    assert history.loss[-1] < history.loss[0] / 2
    assert history.accuracy[-1] > history.accuracy[0]
    loss, acc = model.evaluate(x, y)
    assert loss < before_loss / 2 and acc > max(before_acc, 0.9)
    assert all(s > 0 for s in history.seconds) and all(r > 0 for r in history.images_per_second)
    assert history.val_loss == [None] * 6
    assert model.epoch == 6 and len(model.history) == 6


def test_fit_records_validation_and_prints_progress(capsys):
    x, y = separable_data()
    x_val, y_val = separable_data(n=30, seed=1)
    model = small_cnn()
    history = model.fit(x, y, epochs=2, batch_size=32, optimizer=SGD(0.1, momentum=0.9),
                        validation_data=(x_val, y_val), verbose=True)
    assert (history.val_loss[-1], history.val_accuracy[-1]) == model.evaluate(x_val, y_val)
    progress = capsys.readouterr().err
    for key in ("epoch 2/2", "loss=", "acc=", "img_s=", "val_loss=", "val_acc="):
        assert key in progress


def test_same_seed_same_run_and_other_seed_differs():
    x, y = separable_data()
    runs = []
    for seed in (5, 5, 6):
        model = small_cnn(seed=seed)
        history = model.fit(x, y, epochs=2, batch_size=16, optimizer=Adam(0.01), verbose=False)
        runs.append((weights(model), history.loss))
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0]["conv2d/w"], runs[2][0]["conv2d/w"])


def test_predict_gives_probabilities_consistent_with_evaluate():
    x, y = separable_data()
    model = small_cnn()
    model.fit(x, y, epochs=2, batch_size=16, optimizer=Adam(0.02), verbose=False)
    probs = model.predict(x, batch_size=10)  # batches that do not divide N
    assert probs.shape == (len(x), CLASSES)
    assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    _, acc = model.evaluate(x, y, batch_size=7)
    assert np.mean(probs.argmax(axis=1) == y) == acc
    assert np.array_equal(model.predict(x), model.predict(x))  # dropout off at inference


def mnist_slice(folder, images, labels, n):
    """The first n images of an MNIST IDX pair in ``folder``, scaled to [0, 1]
    (read here with gzip so this test does not depend on fastconv's data module)."""
    with gzip.open(folder / images) as f:
        x = np.frombuffer(f.read(16 + n * 784)[16:], np.uint8).reshape(n, 1, 28, 28)
    with gzip.open(folder / labels) as f:
        y = np.frombuffer(f.read(8 + n)[8:], np.uint8)
    return x.astype(np.float32) / 255, y.astype(np.int64)


def test_dense_model_learns_a_slice_of_mnist(mnist_dir):
    x, y = mnist_slice(mnist_dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 2000)
    x_test, y_test = mnist_slice(mnist_dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 500)
    model = models.build("dense", seed=0)
    history = model.fit(x, y, epochs=3, batch_size=64, validation_data=(x_test, y_test), verbose=False)
    assert history.loss[-1] < history.loss[0] and history.accuracy[-1] > history.accuracy[0]
    assert history.val_accuracy[-1] > 0.8  # measured 0.86 after 3 epochs on 2,000 images; chance is 0.1


# ---------------------------------------------------------------- checkpoints


def test_save_load_round_trip(tmp_path):
    x, y = separable_data()
    model = small_cnn()
    model.fit(x, y, epochs=2, batch_size=16, optimizer=Adam(0.01, weight_decay=1e-4), verbose=False)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert_same_weights(weights(loaded), weights(model))
    assert [l.config() for l in loaded.layers] == [l.config() for l in model.layers]
    assert loaded.input_shape == IMAGE and loaded.dtype == np.float32
    assert loaded.epoch == 2 and loaded.history == model.history
    assert type(loaded.optimizer) is Adam and loaded.optimizer.config() == model.optimizer.config()
    saved_state, restored = model.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert restored["steps"] == saved_state["steps"] == 12
    for slot in ("m", "v"):
        assert_same_weights(restored["slots"][slot], saved_state["slots"][slot])
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state


def test_load_can_switch_backend(tmp_path):
    model = small_cnn()
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz", backend="numpy", algorithm="reference")
    assert loaded.optimizer is None and loaded.epoch == 0
    assert all(l.backend == "numpy" for l in loaded.layers if hasattr(l, "backend"))


def test_resumed_training_equals_uninterrupted(tmp_path):
    x, y = separable_data()
    straight = small_cnn(seed=1)
    straight.fit(x, y, epochs=3, batch_size=16, optimizer=SGD(0.05, momentum=0.9), verbose=False)
    first = small_cnn(seed=1)
    first.fit(x, y, epochs=1, batch_size=16, optimizer=SGD(0.05, momentum=0.9), verbose=False)
    first.save(tmp_path / "ckpt.npz")
    resumed = Sequential.load(tmp_path / "ckpt.npz")
    resumed.fit(x, y, epochs=3, batch_size=16, initial_epoch=resumed.epoch, verbose=False)
    assert_same_weights(weights(resumed), weights(straight))
    assert resumed.epoch == 3 and resumed.history.loss == straight.history.loss


def temporaries(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("failure", ["os.replace", "savez"])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, failure):
    x, y = separable_data()
    model = small_cnn()
    path = tmp_path / "model.npz"
    model.save(path)
    good = model.predict(x)
    model.fit(x, y, epochs=1, batch_size=16, verbose=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if failure == "os.replace":
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        expected = OSError
    else:
        monkeypatch.setattr(np, "savez", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        model.save(path)
    monkeypatch.undo()
    old = Sequential.load(path)
    assert old.epoch == 0 and np.array_equal(old.predict(x), good)
    assert temporaries(tmp_path) == []


def test_keyboard_interrupt_during_fit_leaves_last_checkpoint_good(tmp_path):
    x, y = separable_data()
    model = small_cnn()
    path = tmp_path / "ckpt.npz"
    saved = {}

    def checkpoint(epoch, logs):
        model.save(path)
        saved[epoch] = weights(model)

    optimizer = Adam(0.01)
    real_step, calls = optimizer.step, []

    def step_then_interrupt(params, grads):
        calls.append(1)
        if len(calls) == 9:  # third step of epoch 2 (6 steps per epoch)
            raise KeyboardInterrupt
        real_step(params, grads)

    optimizer.step = step_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=16, optimizer=optimizer, on_epoch_end=checkpoint, verbose=False)
    assert model.epoch == 1 and len(model.history) == 1 and list(saved) == [1]
    loaded = Sequential.load(path)
    assert loaded.epoch == 1
    assert_same_weights(weights(loaded), saved[1])
    assert temporaries(tmp_path) == []


def test_load_rejects_foreign_file(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz is not a fastconv checkpoint"):
        Sequential.load(tmp_path / "other.npz")
