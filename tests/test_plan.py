"""The compiled inference plan (fastconv.plan): the same logits as the
layer-by-layer forward pass on every model, never stale, the same input
checks, fresh logits, and batch norm right. Threads sharing one
plan: tests/test_stateless.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import fusion, models, ops, optim
from fastconv.layers import BatchNorm, BatchNorm2D, Conv2D, Dense, Flatten, Layer, ReLU
from fastconv.losses import softmax, softmax_cross_entropy
from fastconv.model import Sequential
from fastconv.profile import NO_CLOCK

REFERENCE = {"backend": "numpy", "algorithm": "reference"}


def images(n, seed=0, shape=models.INPUT_SHAPE, dtype=np.float32):
    return np.random.default_rng(seed).random((n,) + shape, dtype=dtype)


def randomise(model, seed=1):
    """Nonzero biases and batch norm statistics far from the identity
    (negative scales among them), so that every term of a step shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for name, a in {**layer.params, **layer.buffers}.items():
            if name == "running_var":
                a[...] = rng.uniform(0.2, 3.0, a.shape)
            elif name == "gamma":
                a[...] = rng.uniform(0.5, 2.0, a.shape) * rng.choice([-1, 1], a.shape)
            elif name in ("b", "beta", "running_mean"):
                a[...] = rng.normal(0, 0.5, a.shape)
    return model


def layer_by_layer(model, x):
    return model._forward(model._as_input(x), False, NO_CLOCK)


def assert_same_logits(got, expected):
    """Equal within float32 rounding of the logits' size."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ------------------------------------------------------ equal to the layers


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", models.MODELS)
def test_the_plan_gives_the_layer_by_layer_logits(name, fuse):
    model = randomise(models.build(name))
    model.fuse = fuse
    for batch in (1, 37, 256):
        x = images(batch, seed=batch)
        assert_same_logits(model.forward(x), layer_by_layer(model, x))
    # every built-in layer is compiled: none falls back to its own forward
    assert all(how != "layer forward" for _, how in model.compile(1).describe())


@pytest.mark.parametrize("name", ["cnn", "cnn-deep", "lenet5"])
def test_a_float64_model_runs_in_float64(name):
    layers = {"cnn": models.cnn, "cnn-deep": models.cnn_deep, "lenet5": models.lenet5}[name](REFERENCE)
    model = randomise(Sequential(layers, input_shape=models.INPUT_SHAPE, dtype=np.float64))
    x = images(3)
    logits = model.forward(x)
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits, layer_by_layer(model, x), rtol=1e-12, atol=1e-12)


def test_the_plan_uses_the_kernels_the_layers_ask_for():
    model = models.build("cnn", backend="numba", algorithm="im2col")
    model.fuse = False
    kernels = {how for _, how in model.compile(2).describe()}
    assert {"conv2d numba/im2col", "max_pool2d numba/im2col"} <= kernels


def test_evaluate_and_predict_go_through_plans_for_the_batch_and_the_remainder():
    model = randomise(models.build("cnn-deep"))
    x, labels = images(300), np.arange(300) % 10
    probabilities = model.predict(x)
    np.testing.assert_allclose(probabilities, softmax(layer_by_layer(model, x)), rtol=1e-5, atol=1e-6)
    loss, accuracy = model.evaluate(x, labels)
    assert accuracy == np.mean(probabilities.argmax(axis=1) == labels)
    assert loss == pytest.approx(np.mean(-np.log(probabilities[np.arange(300), labels])), rel=1e-4)


# ------------------------------------------------------ layers of yours


class Halve(Layer):
    """Not a built-in kind: the plan calls its forward."""

    kind = "halve"

    def forward(self, x, training):
        return x * x.dtype.type(0.5)


class LoudReLU(ReLU):
    """A subclass of a built-in layer may change forward: it runs its own."""

    def forward(self, x, training):
        return super().forward(x, training) + 1


def test_a_layer_the_plan_does_not_know_runs_its_own_forward():
    model = Sequential([Conv2D(1, 4, 3, padding=1), Halve(), LoudReLU(), Flatten(), Dense(4 * 28 * 28, 10)],
                       input_shape=models.INPUT_SHAPE)
    x = images(5)
    assert_same_logits(model.forward(x), layer_by_layer(model, x))
    how = dict(model.compile(5).describe())
    assert how["halve"] == how["relu"] == "layer forward"
    assert how["dense"] == "matmul"


def test_a_parameter_of_another_dtype_runs_as_the_layers_run_it():
    model = randomise(models.build("dense"))
    model.layers[1].params["w"] = model.layers[1].params["w"].astype(np.float64)
    x = images(4)
    logits = model.forward(x)
    assert logits.dtype == np.float64  # as x @ w in float64, then everything after it
    np.testing.assert_array_equal(logits, layer_by_layer(model, x))


def test_the_caller_input_is_never_written():
    model = Sequential([ReLU(), BatchNorm2D(1), Flatten(), Dense(28 * 28, 10)], input_shape=models.INPUT_SHAPE)
    randomise(model)
    x = images(3) - 0.5
    kept = x.copy()
    assert_same_logits(model.forward(x), layer_by_layer(model, kept))
    np.testing.assert_array_equal(x, kept)


# ------------------------------------------------------ never stale


@pytest.fixture
def deep_model():
    model = randomise(models.build("cnn-deep"))
    model.forward(images(4))  # compiled before every change below
    return model


def assert_follows_the_model(model):
    x = images(4, seed=9)
    expected = layer_by_layer(model, x)
    assert_same_logits(model.forward(x), expected)
    return expected


def test_weights_loaded_after_compiling_are_used(deep_model):
    before = deep_model.forward(images(4, seed=9))
    other = randomise(models.build("cnn-deep", seed=5), seed=6)
    deep_model.load_state_dict(other.state_dict())
    after = assert_follows_the_model(deep_model)
    assert_same_logits(after, other.forward(images(4, seed=9)))
    assert not np.allclose(after, before)


def test_a_checkpoint_loaded_into_the_model_is_used(deep_model, tmp_path):
    other = randomise(models.build("cnn-deep", seed=5), seed=6)
    other.save(tmp_path / "other.npz")
    deep_model.load_state_dict(Sequential.load(tmp_path / "other.npz").state_dict())
    assert_same_logits(assert_follows_the_model(deep_model), other.forward(images(4, seed=9)))


def test_a_new_array_assigned_to_a_parameter_is_used(deep_model):
    conv = deep_model.layers[4]
    conv.params["w"] = np.random.default_rng(3).standard_normal(conv.params["w"].shape).astype(np.float32)
    deep_model.layers[-1].params = {"w": np.ones((128, 10), np.float32), "b": np.zeros(10, np.float32)}
    logits = assert_follows_the_model(deep_model)
    assert np.ptp(logits, axis=1).max() < 1e-3  # every class gets the same logit from those ones


def test_a_new_running_statistic_array_is_used(deep_model):
    norm = deep_model.layers[3]
    norm.buffers["running_mean"] = norm.buffers["running_mean"] + 5
    assert_follows_the_model(deep_model)


def test_an_optimizer_step_and_new_running_statistics_are_used(deep_model):
    x = images(4, seed=9)
    before = deep_model.forward(x)
    deep_model.train_step(images(8, seed=2), np.arange(8), optim.Adam(lr=0.01))
    after = assert_follows_the_model(deep_model)
    assert not np.allclose(after, before)


def test_a_replaced_layer_is_used(deep_model):
    deep_model.layers[-1] = Dense(128, 10)
    deep_model.layers[-1].initialize(np.random.default_rng(4))
    deep_model.fuse = deep_model.fuse  # re-plan the steps, as a model does with new layers
    assert_follows_the_model(deep_model)


def test_a_replaced_step_is_used(deep_model):
    index = next(i for i, s in enumerate(deep_model.steps) if isinstance(s, fusion.ConvReluMaxPoolStep))
    conv, relu, pool = deep_model.steps[index].layers
    deep_model.steps[index:index + 1] = [fusion.LayerStep(conv), fusion.LayerStep(pool)]  # the ReLU left out
    assert_follows_the_model(deep_model)


def test_fuse_and_the_kernels_asked_for_after_compiling_are_followed(deep_model, monkeypatch):
    deep_model.fuse = False
    assert any(name == "conv2d" for name, _ in deep_model.compile(4).describe())
    deep_model.layers[0].backend, deep_model.layers[0].algorithm = "numpy", "reference"
    assert_follows_the_model(deep_model)
    assert dict(deep_model.compile(4).describe())["conv2d"] == "conv2d numpy/reference"
    monkeypatch.setenv("FASTCONV_ALGORITHM", "im2col")
    assert_follows_the_model(deep_model)
    assert dict(deep_model.compile(4).describe())["conv2d_1"].endswith("/im2col")


def test_an_evaluation_pass_after_training_drops_what_training_kept():
    model = models.build("cnn-deep")
    x, labels = images(2), np.array([0, 1])
    model.forward(x)  # the plan exists before training
    model.forward(x, training=True)
    logits = model.forward(x)
    with pytest.raises(RuntimeError, match=r"backward called before forward with training=True"):
        model.backward(softmax_cross_entropy(logits, labels)[1])


# ------------------------------------------------------ input checks


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 1, 28, 27), np.float32), r"x must have shape \(N, 1, 28, 28\) with N >= 1, got \(2, 1, 28, 27\)"),
    (np.zeros((1, 28, 28), np.float32), r"x must have shape \(N, 1, 28, 28\) with N >= 1, got \(1, 28, 28\)"),
    (np.zeros((0, 1, 28, 28), np.float32), r"with N >= 1, got \(0, 1, 28, 28\)"),
])
def test_bad_input_is_refused_as_the_model_refuses_it(x, message):
    model = models.build("cnn")
    plan = model.compile(2)
    with pytest.raises(ValueError, match=message):
        model.forward(x)
    with pytest.raises(ValueError, match=message):
        plan(x)


def test_a_plan_refuses_another_batch_size():
    plan = models.build("logreg").compile(2)
    with pytest.raises(ValueError, match=r"compiled for batch 2, got x of shape \(3, 1, 28, 28\)"):
        plan(images(3))


def test_a_plan_takes_any_real_dtype_and_layout_as_the_model_does():
    model = randomise(models.build("cnn"))
    x = images(6, dtype=np.float64)[::2]  # float64, not contiguous
    assert_same_logits(model.compile(3)(x), layer_by_layer(model, x))


def test_nan_propagates_as_in_the_layers():
    model = randomise(models.build("cnn-deep"))
    x = images(3)
    x[1, 0, 10, 10] = np.nan
    logits = model.forward(x)
    np.testing.assert_array_equal(np.isnan(logits), np.isnan(layer_by_layer(model, x)))
    assert np.isnan(logits[1]).all() and not np.isnan(logits[[0, 2]]).any()


# ------------------------------------------------------ memory


def test_returned_logits_are_new_arrays():
    model = randomise(models.build("cnn"))
    first = model.forward(images(2, seed=1))
    kept = first.copy()
    second = model.forward(images(2, seed=2))
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)  # the second run left the first result alone
    first[...] = 0
    np.testing.assert_array_equal(model.forward(images(2, seed=2)), second)


def test_plans_are_kept_for_the_last_few_batch_sizes():
    model = models.build("logreg")
    sizes = range(1, Sequential.PLANS_KEPT + 1)
    plans = {n: model.compile(n) for n in sizes}
    assert all(model.compile(n) is plans[n] for n in sizes)  # all kept
    assert model.compile(1) is plans[1]  # now the most recently used
    model.compile(Sequential.PLANS_KEPT + 1)  # drops the least recently used: 2
    assert model.compile(1) is plans[1]
    assert model.compile(2) is not plans[2]


# ------------------------------------------------------------ batch norm


def batch_norm_reference(x, layer):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = (layer.buffers[k].astype(np.float64).reshape(shape) for k in ("running_mean", "running_var"))
    gamma, beta = (layer.params[k].astype(np.float64).reshape(shape) for k in ("gamma", "beta"))
    return gamma * (x - mean) / np.sqrt(var + layer.eps) + beta


@pytest.mark.parametrize("kernels", [REFERENCE, {}], ids=["reference kernel", "auto kernel"])
@given(n=st.integers(1, 4), c=st.integers(1, 6), size=st.integers(1, 7), seed=st.integers(0, 2**16),
       eps=st.sampled_from([1e-5, 1e-3, 0.5]))
def test_batch_norm_runs_as_the_affine_map_of_its_running_statistics(kernels, n, c, size, seed, eps):
    """Batch norm in place over a conv's output, which the padded conv
    after it copies into its interior; then BatchNorm1d over a Dense's
    output; by the layer's kernel or auto's, small arrays included. Checked
    against the formula in float64 NumPy."""
    first, norm2d = Conv2D(2, c, 1, **REFERENCE), BatchNorm2D(c, eps=eps, **kernels)
    second = Conv2D(c, 3, 3, padding=1, **REFERENCE)
    dense, norm = Dense(3 * size * size, 5), BatchNorm(5, eps=eps, **kernels)
    model = randomise(Sequential([first, norm2d, second, Flatten(), dense, norm], input_shape=(2, size, size)),
                      seed=seed)
    x = images(n, seed=seed, shape=(2, size, size))
    hidden = batch_norm_reference(ops.conv2d(x, first.params["w"], first.params["b"], **REFERENCE), norm2d)
    hidden = ops.conv2d(hidden.astype(np.float32), second.params["w"], second.params["b"], padding=1, **REFERENCE)
    expected = batch_norm_reference(hidden.reshape(n, -1) @ dense.params["w"] + dense.params["b"], norm)
    assert [how for _, how in model.compile(n).describe()].count("batch norm kernel") == 2
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
