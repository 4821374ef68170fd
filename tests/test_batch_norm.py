"""BatchNorm2D and BatchNorm: gradients by central differences in float64,
running statistics against a hand computation, training vs evaluation mode,
equality with PyTorch's BatchNorm2d/BatchNorm1d (skipped without torch,
except under CI=true), checkpoints, and every bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv.gradcheck import numerical_gradient
from fastconv.layers import BatchNorm, BatchNorm2D, Conv2D, Flatten, Dense
from fastconv.model import Sequential
from optional_imports import optional


def built(layer, dtype=np.float64):
    layer.initialize(np.random.default_rng(0), dtype)
    return layer


def randomised(layer, rng):
    """gamma and beta away from their initial 1 and 0, so a swapped or
    dropped term shows."""
    layer.params["gamma"][:] = rng.uniform(0.5, 2.0, layer.num_features)
    layer.params["beta"][:] = rng.normal(size=layer.num_features)
    return layer


CASES = [(BatchNorm2D, (4, 3, 5, 6)), (BatchNorm2D, (1, 2, 3, 3)), (BatchNorm, (7, 5)), (BatchNorm, (2, 3))]


@pytest.mark.parametrize("cls, shape", CASES)
def test_gradients_match_central_differences(cls, shape):
    # In training only: an evaluation pass keeps nothing for backward.
    training = True
    rng = np.random.default_rng(1)
    layer = randomised(built(cls(shape[1])), rng)
    layer.buffers["running_mean"][:] = rng.normal(size=shape[1])
    layer.buffers["running_var"][:] = rng.uniform(0.5, 2, shape[1])
    x = rng.normal(2.0, 3.0, shape)
    dy = rng.normal(size=shape)
    saved = {k: v.copy() for k, v in layer.buffers.items()}

    def output(_):
        for k, v in saved.items():  # every call sees the same running statistics
            layer.buffers[k][:] = v
        return layer.forward(x, training)

    layer.forward(x, training)
    dx = layer.backward(dy)
    dgamma, dbeta = layer.grads["gamma"].copy(), layer.grads["beta"].copy()
    np.testing.assert_allclose(dx, numerical_gradient(output, x, dy), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgamma, numerical_gradient(output, layer.params["gamma"], dy), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dbeta, numerical_gradient(output, layer.params["beta"], dy), rtol=1e-5, atol=1e-7)


def test_training_normalises_each_channel_and_updates_running_statistics_by_hand():
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, (6, 3, 4, 4))
    layer = built(BatchNorm2D(3, momentum=0.25))
    layer.buffers["running_mean"][:] = [1.0, -1.0, 0.0]
    layer.buffers["running_var"][:] = [2.0, 1.0, 0.5]
    y = layer.forward(x, training=True)
    for c in range(3):
        values = x[:, c].ravel()
        mean, biased = values.sum() / values.size, ((values - values.mean()) ** 2).sum() / values.size
        unbiased = ((values - mean) ** 2).sum() / (values.size - 1)
        np.testing.assert_allclose(y[:, c], (x[:, c] - mean) / np.sqrt(biased + 1e-5))
        np.testing.assert_allclose(layer.buffers["running_mean"][c], 0.75 * [1.0, -1.0, 0.0][c] + 0.25 * mean)
        np.testing.assert_allclose(layer.buffers["running_var"][c], 0.75 * [2.0, 1.0, 0.5][c] + 0.25 * unbiased)


def test_evaluation_uses_running_statistics_and_leaves_them_alone():
    rng = np.random.default_rng(3)
    layer = randomised(built(BatchNorm(4)), rng)
    layer.buffers["running_mean"][:] = [0.0, 1.0, 2.0, 3.0]
    layer.buffers["running_var"][:] = [1.0, 4.0, 9.0, 16.0]
    x = rng.normal(size=(5, 4))
    y = layer.forward(x, training=False)
    expected = (x - [0, 1, 2, 3]) / np.sqrt(np.array([1, 4, 9, 16]) + 1e-5) * layer.params["gamma"] + layer.params["beta"]
    np.testing.assert_allclose(y, expected)
    np.testing.assert_array_equal(layer.buffers["running_mean"], [0, 1, 2, 3])
    # one image alone gives the same output as inside its batch: no batch statistics
    np.testing.assert_allclose(layer.forward(x[:1], training=False), y[:1])
    # training on the same batch gives a different output (its own statistics)
    assert not np.allclose(layer.forward(x, training=True), y)


@given(n=st.integers(2, 5), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5),
       momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_matches_pytorch_batchnorm2d_in_both_modes(n, c, h, w, momentum):
    torch = optional("torch")
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    x = rng.normal(1.0, 2.0, (n, c, h, w)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    layer = randomised(built(BatchNorm2D(c, momentum=momentum), np.float32), rng)
    twin = torch.nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.params["gamma"]))
        twin.bias.copy_(torch.from_numpy(layer.params["beta"]))
    for training in (True, False):  # backward in training only: evaluation keeps nothing for it
        twin.train(training)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = twin(xt)
        y = layer.forward(x, training)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
        if training:
            yt.backward(torch.from_numpy(dy))
            dx = layer.backward(dy)
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(layer.grads["gamma"], twin.weight.grad.numpy(), rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(layer.grads["beta"], twin.bias.grad.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(layer.buffers["running_mean"], twin.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.buffers["running_var"], twin.running_var.numpy(), rtol=1e-5, atol=1e-6)
        twin.weight.grad = twin.bias.grad = None


def test_matches_pytorch_batchnorm1d():
    torch = optional("torch")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    layer = randomised(built(BatchNorm(6, eps=1e-3), np.float32), rng)
    twin = torch.nn.BatchNorm1d(6, eps=1e-3)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.params["gamma"]))
        twin.bias.copy_(torch.from_numpy(layer.params["beta"]))
    for training in (True, True, False):
        twin.train(training)
        np.testing.assert_allclose(layer.forward(x, training), twin(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], twin.running_var.numpy(), rtol=1e-6)


def test_float32_stays_float32():
    layer = built(BatchNorm2D(2), np.float32)
    x = np.random.default_rng(5).random((3, 2, 4, 4), dtype=np.float32)
    y = layer.forward(x, True)
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    assert all(v.dtype == np.float32 for v in (*layer.params.values(), *layer.buffers.values()))


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls, shape", [(BatchNorm2D, (1, 3, 1, 1)), (BatchNorm, (1, 3))])
def test_one_value_per_channel_in_training_is_refused(cls, shape):
    layer = built(cls(3))
    with pytest.raises(ValueError, match=r"training needs more than one value per channel to estimate a variance"):
        layer.forward(np.ones(shape), training=True)
    assert layer.forward(np.ones(shape), training=False).shape == shape  # evaluation is fine


def test_a_single_image_with_several_pixels_trains():
    assert built(BatchNorm2D(2)).forward(np.random.default_rng(0).random((1, 2, 3, 3)), True).shape == (1, 2, 3, 3)


@pytest.mark.parametrize("cls, shape, expected", [
    (BatchNorm2D, (2, 4, 5, 5), r"BatchNorm2D 'batch_norm2d': expected input \(N, 3, H, W\), got \(2, 4, 5, 5\)"),
    (BatchNorm2D, (2, 3), r"expected input \(N, 3, H, W\), got \(2, 3\)"),
    (BatchNorm, (2, 4), r"BatchNorm 'batch_norm': expected input \(N, 3\), got \(2, 4\)"),
])
def test_a_channel_count_that_does_not_match_is_refused(cls, shape, expected):
    with pytest.raises(ValueError, match=expected):
        built(cls(3)).forward(np.ones(shape), training=True)


def test_a_model_whose_channels_do_not_match_fails_when_built():
    with pytest.raises(ValueError, match=r"BatchNorm2D 'batch_norm2d': expected per-sample input \(16, H, W\), "
                                         r"got \(8, 26, 26\)"):
        Sequential([Conv2D(1, 8, 3), BatchNorm2D(16)], input_shape=(1, 28, 28))


@pytest.mark.parametrize("kwargs, expected", [
    ({"num_features": 0}, "num_features must be a positive int"),
    ({"num_features": 2, "momentum": 1.5}, r"momentum must be in \[0, 1\]"),
    ({"num_features": 2, "eps": 0}, "eps must be > 0"),
    ({"num_features": 2, "eps": float("nan")}, "eps must be a number"),
])
def test_bad_settings_are_refused(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        BatchNorm2D(**kwargs)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        built(BatchNorm(2)).backward(np.ones((2, 2)))


# ------------------------------------------------------------ in a model


def small_model(seed=0):
    return Sequential([Conv2D(1, 4, 3, padding="same"), BatchNorm2D(4), Flatten(), Dense(4 * 6 * 6, 3),
                       BatchNorm(3)], input_shape=(1, 6, 6), seed=seed)


def test_model_counts_trainable_and_running_statistics_apart(capsys):
    model = small_model()
    assert model.param_count() == (36 + 4) + 8 + (144 * 3 + 3) + 6
    assert model.buffer_count() == 8 + 6
    assert sorted(model.buffers) == ["batch_norm/running_mean", "batch_norm/running_var",
                                     "batch_norm2d/running_mean", "batch_norm2d/running_var"]
    model.summary()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("batch_norm2d (BatchNorm2D)"))
    assert row.split()[-5:] == ["(None,", "4,", "6,", "6)", "16"]  # gamma, beta, running mean and variance
    assert f"Total params: {model.param_count() + 14:,}" in out
    assert f"Trainable params: {model.param_count():,}" in out and "Non-trainable params: 14" in out


def test_training_moves_running_statistics_and_checkpoints_keep_them(tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.random((32, 1, 6, 6), dtype=np.float32) * 3 + 1, rng.integers(0, 3, 32)
    model = small_model()
    model.fit(x, y, epochs=2, batch_size=8, verbose=False)
    assert not np.allclose(model.buffers["batch_norm2d/running_mean"], 0)
    model.save(tmp_path / "m.npz")
    again = Sequential.load(tmp_path / "m.npz")
    for name, value in model.buffers.items():
        np.testing.assert_array_equal(again.buffers[name], value)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def test_the_optimizer_never_touches_running_statistics():
    model = small_model()
    assert not set(model.params) & set(model.buffers)
    assert set(model.grads) == set(model.params)
