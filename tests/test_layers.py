"""Layers, loss and optimisers: backward passes against float64 numerical
gradients, hand-computed optimiser steps, and the errors bad inputs raise.

Conv and pool layers run the NumPy reference here (``backend="numpy"``);
``test_compiled_variants_match_reference`` covers every compiled variant the
registry can load.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from fastconv import registry
from fastconv.gradcheck import numerical_gradient
from fastconv.layers import AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastconv.losses import softmax, softmax_cross_entropy
from fastconv.optim import SGD, Adam

REF = {"backend": "numpy", "algorithm": "reference"}


def initialized(layer, dtype=np.float64, seed=0):
    layer.initialize(np.random.default_rng(seed), dtype)
    return layer


def assert_gradients_match(layer, x, seed=1):
    """backward(dy) and every grads entry against central differences of
    sum(forward(x) * dy), in float64."""
    rng = np.random.default_rng(seed)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    assert analytic.keys() == layer.params.keys()

    def forward(_):
        return layer.forward(x, training=True)

    assert_allclose(dx, numerical_gradient(forward, x, dy), rtol=1e-5, atol=1e-8)
    for name, p in layer.params.items():  # numerical_gradient perturbs p in place
        assert_allclose(analytic[name], numerical_gradient(forward, p, dy), rtol=1e-5, atol=1e-8,
                        err_msg=f"grad of {name}")


# ------------------------------------------------------------ gradient checks

LAYER_CASES = {
    "conv 3x3": (lambda: Conv2D(2, 3, 3, **REF), (2, 2, 5, 5)),
    "conv 2x3 stride 2 pad 1": (lambda: Conv2D(2, 3, (2, 3), stride=2, padding=1, **REF), (2, 2, 6, 5)),
    "conv 1x1": (lambda: Conv2D(3, 2, 1, **REF), (2, 3, 3, 4)),
    "conv 3x5 same": (lambda: Conv2D(2, 3, (3, 5), padding="same", **REF), (2, 2, 4, 6)),
    "maxpool 2": (lambda: MaxPool2D(2, **REF), (2, 3, 4, 6)),
    "maxpool 3 stride 2 pad 1": (lambda: MaxPool2D(3, stride=2, padding=1, **REF), (2, 2, 5, 5)),
    "avgpool 2": (lambda: AvgPool2D(2, **REF), (2, 3, 4, 6)),
    "avgpool 3 stride 1 pad 1": (lambda: AvgPool2D(3, stride=1, padding=1, **REF), (1, 2, 4, 5)),
    "flatten": (lambda: Flatten(), (3, 2, 3, 2)),
    "dense": (lambda: Dense(5, 4), (3, 5)),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_backward_matches_numerical_gradient(case):
    make, x_shape = LAYER_CASES[case]
    layer = initialized(make())
    x = np.random.default_rng(2).standard_normal(x_shape)
    assert_gradients_match(layer, x)


def test_relu_backward_matches_numerical_gradient():
    x = np.random.default_rng(2).standard_normal((4, 3, 2))
    x += np.where(x >= 0, 0.1, -0.1)  # keep every input away from the kink at 0
    assert_gradients_match(initialized(ReLU()), x)


def test_params_and_grads_keep_float32():
    layers = [initialized(Conv2D(1, 2, 3, **REF), np.float32), initialized(Dense(4, 3), np.float32)]
    inputs = [np.ones((2, 1, 4, 4), np.float32), np.ones((2, 4), np.float32)]
    for layer, x in zip(layers, inputs):
        y = layer.forward(x, training=True)
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == np.float32
        assert all(a.dtype == np.float32 for a in (*layer.params.values(), *layer.grads.values()))


def test_initialisation_scales_and_zero_biases():
    conv = initialized(Conv2D(16, 64, 3), np.float32)
    fan_in = 16 * 3 * 3
    assert conv.params["w"].shape == (64, 16, 3, 3)
    assert abs(conv.params["w"].std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)
    dense = initialized(Dense(300, 100), np.float32)
    limit = np.sqrt(6 / 400)
    assert dense.params["w"].shape == (300, 100)
    assert np.abs(dense.params["w"]).max() <= limit
    assert np.abs(dense.params["w"]).max() > 0.95 * limit  # uniform over the whole range
    assert not conv.params["b"].any() and not dense.params["b"].any()
    again = initialized(Conv2D(16, 64, 3), np.float32)
    assert np.array_equal(conv.params["w"], again.params["w"])  # the generator decides, nothing else


@pytest.mark.parametrize("make, x_shape", [
    (lambda: Conv2D(2, 3, 3, **REF), (2, 2, 5, 5)),
    (lambda: Dense(5, 4), (3, 5)),
])
def test_no_input_gradient_when_not_needed(make, x_shape):
    layer = initialized(make())
    x = np.random.default_rng(0).standard_normal(x_shape)
    dy = np.ones_like(layer.forward(x, training=True))
    layer.backward(dy)
    wanted = {k: g.copy() for k, g in layer.grads.items()}
    layer.needs_input_grad = False
    assert layer.backward(dy) is None
    for k, g in layer.grads.items():
        assert_allclose(g, wanted[k])


@given(
    channels=st.integers(1, 3), size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), pad=st.integers(0, 2),
)
def test_output_shape_agrees_with_forward(channels, size, kernel, stride, pad):
    """What a model infers at build time is what forward then produces."""
    pool_pad = tuple(min(pad, k // 2) for k in kernel)  # pooling pads at most half a window
    x = np.ones((2, channels) + size, np.float32)
    for layer in (Conv2D(channels, 2, kernel, stride, pad, **REF), MaxPool2D(kernel, stride, pool_pad, **REF),
                  AvgPool2D(kernel, stride, pool_pad, **REF)):
        padded = [s + 2 * p for s, p in zip(size, layer.padding)]
        if any(k > s for k, s in zip(kernel, padded)):
            with pytest.raises(ValueError, match="is larger than the padded input"):
                layer.output_shape(x.shape[1:])
            continue
        initialized(layer, np.float32)
        assert layer.forward(x, training=False).shape[1:] == layer.output_shape(x.shape[1:])


# --------------------------------------------------------------------- dropout


def test_dropout_is_identity_in_evaluation_and_with_p_zero():
    layer = initialized(Dropout(0.5), np.float32)
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    assert np.array_equal(layer.forward(x, training=False), x)
    no_drop = initialized(Dropout(0.0), np.float32)
    assert np.array_equal(no_drop.forward(x, training=True), x)
    dy = np.arange(40, dtype=np.float32).reshape(8, 5)
    assert np.array_equal(no_drop.backward(dy), dy)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_training_scales_survivors_and_backward_uses_same_mask(p):
    layer = initialized(Dropout(p), np.float32)
    x = np.random.default_rng(0).uniform(1, 2, (100, 100)).astype(np.float32)  # never 0
    y = layer.forward(x, training=True)
    kept = y != 0
    assert y.dtype == np.float32
    assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    # fraction kept ~ Binomial(10_000, 1 - p) / 10_000: within 5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / kept.size)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    assert_allclose(layer.backward(dy), np.where(kept, dy / (1 - p), 0), rtol=1e-6)
    assert not np.array_equal(layer.forward(x, training=True) != 0, kept)  # a fresh mask each call


def test_dropout_masks_repeat_with_the_seed():
    masks = []
    for _ in range(2):
        layer = initialized(Dropout(0.5), np.float32, seed=7)
        masks.append(layer.forward(np.ones((20, 20), np.float32), training=True))
    assert np.array_equal(*masks)


def test_dropout_rejects_bad_probability():
    for p in (-0.1, 1.0, "0.5"):
        with pytest.raises(ValueError, match="Dropout: p"):
            Dropout(p)


# ---------------------------------------------------------------------- loss


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    _, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda z: np.array(softmax_cross_entropy(z, labels)[0]), logits, 1.0)
    assert_allclose(dlogits, numeric, rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_value():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    loss, _ = softmax_cross_entropy(logits, np.array([2, 1]))
    by_definition = -(np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(1 / 3)) / 2
    assert loss == pytest.approx(by_definition, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype)
    loss, dlogits = softmax_cross_entropy(logits, np.array([1, 0]))
    # -log softmax(z)[k] = logsumexp(z) - z[k]: 1e4 - 0 and (1e4 + log 2) + 1e4
    assert loss == pytest.approx((1e4 + 2e4 + np.log(2)) / 2, rel=1e-6)
    assert dlogits.dtype == dtype and np.isfinite(dlogits).all()
    assert_allclose(dlogits, [[0.5, -0.5, 0], [-0.5, 0.25, 0.25]], atol=1e-6)
    probs = softmax(logits)
    assert np.isfinite(probs).all()
    assert_allclose(probs, [[1, 0, 0], [0, 0.5, 0.5]], atol=1e-6)


def test_softmax_rows_are_probabilities():
    logits = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32) * 5
    probs = softmax(logits)
    assert probs.dtype == np.float32
    assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), rtol=1e-5)


def test_softmax_cross_entropy_rejects_bad_labels():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        softmax_cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        softmax_cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="labels must be integers"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0, 2.0]))


# ---------------------------------------------------------------- optimisers

P0 = [1.0, -2.0]
G1 = [0.5, 1.0]
G2 = [0.25, -1.0]


def two_steps(optimizer, grads=(G1, G2)):
    params = {"layer/w": np.array(P0)}
    after = []
    for g in grads:
        optimizer.step(params, {"layer/w": np.array(g)})
        after.append(params["layer/w"].copy())
    return after


# Expected values worked out by hand from P0, G1, G2 and lr = 0.1.
OPTIMIZER_CASES = {
    # p1 = p0 - 0.1 g1; p2 = p1 - 0.1 g2
    "sgd": (lambda: SGD(0.1), [[0.95, -2.1], [0.925, -2.0]]),
    # v1 = g1 = [.5, 1]; v2 = .9 v1 + g2 = [.7, -.1]
    "momentum": (lambda: SGD(0.1, momentum=0.9), [[0.95, -2.1], [0.88, -2.09]]),
    # steps use g + .9 v: [.95, 1.9] then [.25 + .63, -1 - .09] = [.88, -1.09]
    "nesterov": (lambda: SGD(0.1, momentum=0.9, nesterov=True), [[0.905, -2.19], [0.817, -2.081]]),
    # g1 + .1 p0 = [.6, .8]; g2 + .1 p1 = [.25 + .094, -1 - .208] = [.344, -1.208]
    "sgd weight decay": (lambda: SGD(0.1, weight_decay=0.1), [[0.94, -2.08], [0.9056, -1.9592]]),
    # step 1 moves each coordinate by lr * sign(g1) (mhat/sqrt(vhat) = g1/|g1|);
    # step 2: m2 = .9 * .1 g1 + .1 g2 = [.07, -.01], v2 = .999 * .001 g1^2 + .001 g2^2
    # = [.00031225, .001999]; p2 = p1 - .1 * (m2 / .19) / sqrt(v2 / .001999)
    "adam": (lambda: Adam(0.1), [
        [0.9, -2.1],
        [0.9 - 0.1 * (0.07 / 0.19) / np.sqrt(0.00031225 / 0.001999), -2.1 + 0.1 * (0.01 / 0.19) / 1.0],
    ]),
    # g1' = g1 + .1 p0 = [.6, .8] (step 1 again lr * sign); g2' = g2 + .1 p1 = [.34, -1.21];
    # m2 = .09 g1' + .1 g2' = [.088, -.049]; v2 = .000999 g1'^2 + .001 g2'^2 = [.00047524, .00210346]
    "adam weight decay": (lambda: Adam(0.1, weight_decay=0.1), [
        [0.9, -2.1],
        [0.9 - 0.1 * (0.088 / 0.19) / np.sqrt(0.00047524 / 0.001999),
         -2.1 + 0.1 * (0.049 / 0.19) / np.sqrt(0.00210346 / 0.001999)],
    ]),
}


@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_optimizer_two_steps_by_hand(case):
    make, expected = OPTIMIZER_CASES[case]
    after = two_steps(make())
    assert_allclose(after, expected, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, nesterov=True), lambda: Adam(0.01)])
def test_optimizer_state_dict_resumes_exactly(make):
    straight = make()
    expected = two_steps(straight)[-1]
    first = make()
    params = {"layer/w": np.array(P0)}
    first.step(params, {"layer/w": np.array(G1)})
    state = first.state_dict()
    for table in first.slots.values():
        table["layer/w"] += 100  # the saved state must be a copy
    resumed = type(first)(**first.config())
    resumed.load_state_dict(state)
    resumed.step(params, {"layer/w": np.array(G2)})
    assert resumed.steps == straight.steps == 2
    assert_allclose(params["layer/w"], expected, rtol=1e-12)
    for slot, table in straight.slots.items():
        assert_allclose(resumed.slots[slot]["layer/w"], table["layer/w"], rtol=1e-12)


def test_optimizer_keeps_float32():
    for opt in (SGD(0.1, momentum=0.9, weight_decay=1e-4), Adam(weight_decay=1e-4)):
        params = {"w": np.ones(3, np.float32)}
        opt.step(params, {"w": np.full(3, 0.5, np.float32)})
        assert params["w"].dtype == np.float32


def test_optimizer_rejects_mismatched_grads():
    with pytest.raises(ValueError, match="same keys"):
        SGD(0.1).step({"a": np.zeros(2)}, {"b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"grad 'a' has shape \(3,\), parameter has \(2,\)"):
        Adam().step({"a": np.zeros(2)}, {"a": np.zeros(3)})


# ----------------------------------------------------------------- bad input


def test_conv_rejects_wrong_channels():
    layer = initialized(Conv2D(3, 4, 3, **REF, name="conv_a"), np.float32)
    with pytest.raises(ValueError, match=r"Conv2D 'conv_a': expected input \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        layer.forward(np.zeros((2, 1, 8, 8), np.float32), training=False)
    with pytest.raises(ValueError, match=r"Conv2D 'conv_a': expected per-sample input \(3, H, W\), got \(1, 28, 28\)"):
        layer.output_shape((1, 28, 28))


def test_conv_rejects_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d': input \(1, 2, 2\).*kernel 3 is larger"):
        Conv2D(1, 4, 3).output_shape((1, 2, 2))


def test_dense_rejects_wrong_features():
    layer = initialized(Dense(10, 5), np.float32)
    with pytest.raises(ValueError, match=r"Dense 'dense': expected input \(N, 10\), got \(4, 7\)"):
        layer.forward(np.zeros((4, 7), np.float32), training=False)
    with pytest.raises(ValueError, match=r"Dense 'dense': expected input \(N, 10\), got \(4, 1, 10\)"):
        layer.forward(np.zeros((4, 1, 10), np.float32), training=False)


def test_pool_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"MaxPool2D 'max_pool2d': expected input \(N, C, H, W\), got \(4, 9\)"):
        MaxPool2D(2).forward(np.zeros((4, 9), np.float32), training=False)


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="in_channels must be a positive integer, got 0"):
        Conv2D(0, 4, 3)
    with pytest.raises(ValueError, match="out_features must be a positive integer, got 2.5"):
        Dense(4, 2.5)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        MaxPool2D(2, stride=0)


@pytest.mark.parametrize("kernel", [1, 3, 5, (3, 7)])
def test_same_padding_keeps_the_size_and_equals_the_explicit_padding(kernel):
    same = initialized(Conv2D(2, 3, kernel, padding="same", **REF))
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    explicit = initialized(Conv2D(2, 3, kernel, padding=((k[0] - 1) // 2, (k[1] - 1) // 2), **REF))
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 8))
    assert same.output_shape((2, 7, 8)) == (3, 7, 8)
    assert same.padding == explicit.padding and same.config()["padding"] == "same"
    assert_allclose(same.forward(x, False), explicit.forward(x, False))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"kernel_size": 2, "padding": "same"}, ValueError, r"padding=\"same\" needs odd kernel sizes"),
    ({"kernel_size": (3, 4), "padding": "same"}, ValueError, "needs odd kernel sizes"),
    ({"kernel_size": 3, "stride": 2, "padding": "same"}, ValueError, r"padding=\"same\" needs stride 1"),
    ({"kernel_size": 3, "padding": "full"}, ValueError, r"padding must be an int, a pair of ints or \"same\""),
])
def test_same_padding_is_refused_where_it_cannot_keep_the_size(kwargs, error, message):
    with pytest.raises(error, match=message):
        Conv2D(1, 1, **kwargs)


def test_backward_before_forward_and_uninitialised_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        initialized(Dense(2, 2)).backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="not initialised"):
        Dense(2, 2).forward(np.zeros((1, 2)), training=False)


def test_config_rebuilds_layer():
    for layer in (Conv2D(2, 3, (2, 3), stride=2, padding=1, backend="numpy"), MaxPool2D(3, 2, 1),
                  Conv2D(1, 2, 3, padding="same"), AvgPool2D(2), Flatten(), Dense(4, 5, name="head"), ReLU(),
                  Dropout(0.25), BatchNorm2D(3, momentum=0.2), BatchNorm(4, eps=1e-3)):
        rebuilt = type(layer)(**layer.config())
        assert rebuilt.config() == layer.config()
        assert rebuilt.name == layer.name


# -------------------------------------------------------- compiled variants


def loadable_variants(op):
    """Every compiled (backend, algorithm) of ``op`` the registry can load,
    and the reference; only the reference while the compiled modules are
    missing (ImportError). A learner's registered variant is not ours to
    check here."""
    try:
        return [v for v in registry.variants(op) if v[0] in registry.COMPILED_BACKENDS or v == registry.REFERENCE]
    except ImportError:
        return [registry.REFERENCE]


@pytest.fixture
def conv_variants():
    return loadable_variants("conv2d")


@pytest.fixture
def pool_variants():
    return loadable_variants("max_pool2d")


def test_compiled_variants_match_reference(conv_variants, pool_variants):
    compiled = [(make, v) for make, vs in (
        (lambda v: Conv2D(3, 4, 3, padding=1, backend=v[0], algorithm=v[1]), conv_variants),
        (lambda v: MaxPool2D(2, backend=v[0], algorithm=v[1]), pool_variants),
        (lambda v: AvgPool2D(2, backend=v[0], algorithm=v[1]), pool_variants),
    ) for v in vs if v != registry.REFERENCE]
    if not compiled:
        pytest.skip("no compiled kernels can be imported yet")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    for make, variant in compiled:
        expected, got = initialized(make(registry.REFERENCE), np.float32), initialized(make(variant), np.float32)
        y = got.forward(x, training=True)
        assert_allclose(y, expected.forward(x, training=True), rtol=1e-5, atol=1e-5, err_msg=str(variant))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        assert_allclose(got.backward(dy), expected.backward(dy), rtol=1e-5, atol=1e-5, err_msg=str(variant))
        for k in got.grads:
            assert_allclose(got.grads[k], expected.grads[k], rtol=1e-4, atol=1e-4, err_msg=f"{variant} {k}")


def numpy_adam(p, g, m, v, t, lr=0.01, betas=(0.9, 0.999), eps=1e-8, wd=0.01):
    g = g + wd * p
    m[:] = betas[0] * m + (1 - betas[0]) * g
    v[:] = betas[1] * v + (1 - betas[1]) * g * g
    return p - lr * (m / (1 - betas[0]**t)) / (np.sqrt(v / (1 - betas[1]**t)) + eps)


def numpy_nesterov(p, g, velocity, lr=0.01, momentum=0.9, wd=0.01):
    g = g + wd * p
    velocity[:] = momentum * velocity + g
    return p - lr * (g + momentum * velocity)


@pytest.mark.parametrize("name", ["adam", "nesterov"])
def test_one_pass_updates_every_parameter_of_every_dtype(name):
    # Sizes on both sides of the compiled update's block (16,384 values), a
    # scalar-sized bias, a 4-D weight, and parameters of two dtypes.
    rng = np.random.default_rng(0)
    shapes = {"conv/w": ((8, 4, 3, 3), np.float32), "conv/b": ((1,), np.float32),
              "dense/w": ((300, 120), np.float32), "dense/b": ((16385,), np.float64)}
    params = {k: rng.standard_normal(s).astype(d) for k, (s, d) in shapes.items()}
    expected = {k: p.astype(np.float64) for k, p in params.items()}
    state = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in expected.items()}
    optimizer = Adam(0.01, weight_decay=0.01) if name == "adam" else SGD(0.01, 0.9, True, 0.01)
    for t in (1, 2, 3):
        grads = {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}
        optimizer.step(params, grads)
        for k, g in grads.items():
            if name == "adam":
                expected[k] = numpy_adam(expected[k], g.astype(np.float64), *state[k], t)
            else:
                expected[k] = numpy_nesterov(expected[k], g.astype(np.float64), state[k][0])
    for k, p in params.items():
        assert p.dtype == shapes[k][1] and p.shape == shapes[k][0]
        assert_allclose(p, expected[k], rtol=1e-5 if p.dtype == np.float32 else 1e-12, atol=1e-6, err_msg=k)


def test_optimizer_rejects_a_non_contiguous_or_integer_parameter():
    with pytest.raises(ValueError, match="parameter 'w' is not C-contiguous"):
        Adam().step({"w": np.zeros((4, 4))[:, ::2]}, {"w": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="parameter 'w' is int64, not a float array"):
        SGD(0.1).step({"w": np.zeros(3, np.int64)}, {"w": np.ones(3)})


def test_optimizer_refuses_loaded_state_that_does_not_fit_the_parameters():
    optimizer = Adam()
    optimizer.load_state_dict({"steps": 3, "slots": {"m": {"w": np.zeros(5)}, "v": {"w": np.zeros(5)}}})
    with pytest.raises(ValueError, match=r"state 'm' of 'w' is float64 \(5,\), the parameter float64 \(4, 4\)"):
        optimizer.step({"w": np.zeros((4, 4))}, {"w": np.zeros((4, 4))})
    assert optimizer.steps == 3  # nothing was updated
