"""Specification of the batch norm ops, forward and backward: every compiled
variant in the registry agrees with the NumPy reference on hypothesis shapes
and on cnn-deep's, in training and in evaluation; the backward passes check
against central differences; the layers run every variant the same as
PyTorch's BatchNorm2d, running statistics included; an empty batch calls no
kernel; bad arguments are refused by fastconv.ops.

Sums run in float64 in every variant, so float32 results differ from the
reference by a few roundings of the last elementwise steps only.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import ops, registry
from fastconv.gradcheck import numerical_gradient
from fastconv.layers import BatchNorm, BatchNorm2D
from fastconv.model import Sequential
from optional_imports import optional

pytestmark = pytest.mark.usefixtures("thread_count")

VARIANTS = registry.variants("batch_norm", include_reference=False)
REFERENCE = {"backend": "numpy", "algorithm": "reference"}
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# cnn-deep's batch norm layers at batch 64: after each conv block, and after the dense 128.
CNN_DEEP_SHAPES = [(64, 32, 14, 14), (64, 64, 7, 7), (64, 128, 7, 7), (64, 128)]


def kwargs(variant):
    return dict(zip(("backend", "algorithm"), variant))


def assert_matches(got, expected, rtol, scale):
    """Equal dtype and shape, values within rtol of each element plus rtol
    times ``scale`` (the size of the terms the result was summed from:
    a dx near 0 comes from terms near dy * gamma / std)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def case(shape, dtype, seed):
    """x off-centre and wide (so a one-pass variance would cancel), gamma,
    beta, running statistics and dy."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.normal(5.0, 3.0, shape)).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2.0, c).astype(dtype), rng.normal(size=c).astype(dtype)
    running = rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype)
    return x, gamma, beta, running, rng.normal(size=shape).astype(dtype)


def check_variant(variant, x, gamma, beta, running, dy):
    """Every result of ``variant`` against the reference's: training forward
    (y and the statistics), backward with and without dx, evaluation."""
    rtol = RTOL[x.dtype.type]
    y, mean, var = ops.batch_norm(x, gamma, beta, **kwargs(variant))
    y_ref, mean_ref, var_ref = ops.batch_norm(x, gamma, beta, **REFERENCE)
    assert_matches(mean, mean_ref, rtol, np.abs(x).max())
    assert_matches(var, var_ref, rtol, var_ref.max())
    assert_matches(y, y_ref, rtol, np.abs(y_ref).max())
    # backward from the reference's statistics, so only the backward differs
    grads = ops.batch_norm_backward(dy, x, gamma, mean_ref, var_ref, **kwargs(variant))
    expected = ops.batch_norm_backward(dy, x, gamma, mean_ref, var_ref, **REFERENCE)
    terms = np.abs(dy).max() * np.max(gamma / np.sqrt(var_ref + 1e-5))
    for got, want, scale in zip(grads, expected, (terms, terms * x.size, np.abs(dy).sum())):
        assert_matches(got, want, rtol, scale)
    dx, dgamma, dbeta = ops.batch_norm_backward(dy, x, gamma, mean_ref, var_ref, compute_dx=False,
                                                **kwargs(variant))
    assert dx is None
    np.testing.assert_array_equal(dgamma, grads[1])
    np.testing.assert_array_equal(dbeta, grads[2])
    y_eval = ops.batch_norm(x, gamma, beta, *running, training=False, **kwargs(variant))
    y_eval_ref = ops.batch_norm(x, gamma, beta, *running, training=False, **REFERENCE)
    assert_matches(y_eval, y_eval_ref, rtol, np.abs(y_eval_ref).max())


def test_every_compiled_backend_offers_naive_and_vectorized():
    # Guards the parametrisations below against silently shrinking.
    for op in ("batch_norm", "batch_norm_backward"):
        for backend in registry.COMPILED_BACKENDS:
            found = {a for b, a in registry.variants(op, include_reference=False) if b == backend}
            assert found == {"naive", "vectorized"}, (op, backend)


# ---------------------------------------------------------- every variant


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CNN_DEEP_SHAPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids="/".join)
def test_every_variant_matches_the_reference_on_cnn_deep_shapes(variant, shape, dtype):
    check_variant(variant, *case(shape, dtype, seed=sum(shape)))


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 5), c=st.integers(1, 130), hw=st.one_of(st.none(), st.tuples(st.integers(1, 9),
                                                                                      st.integers(1, 9))),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_every_variant_matches_the_reference_on_hypothesis_shapes(n, c, hw, dtype, seed):
    shape = (n, c) + (hw or ())  # (N, C) is BatchNorm's, M = 1
    for variant in VARIANTS:
        check_variant(variant, *case(shape, dtype, seed))


def test_the_variance_is_taken_about_the_mean_so_float32_far_from_zero_keeps_it():
    # values 1000 +- 0.01: a one-pass E[x^2] - E[x]^2 in float32 would lose it all
    rng = np.random.default_rng(0)
    x = (1000 + 0.01 * rng.standard_normal((8, 3, 5, 5))).astype(np.float32)
    expected = x.astype(np.float64).var(axis=(0, 2, 3))
    for variant in VARIANTS + [registry.REFERENCE]:
        _, _, var = ops.batch_norm(x, np.ones(3, np.float32), np.zeros(3, np.float32), **kwargs(variant))
        np.testing.assert_allclose(var, expected, rtol=1e-3, err_msg=str(variant))


# --------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (1, 2, 3, 3), (5, 3), (2, 1)], ids=str)
@pytest.mark.parametrize("variant", VARIANTS + [registry.REFERENCE], ids="/".join)
def test_backward_matches_central_differences(variant, shape):
    x, gamma, beta, _, dy = case(shape, np.float64, seed=3)

    def output(_):
        return ops.batch_norm(x, gamma, beta, **kwargs(variant))[0]

    _, mean, var = ops.batch_norm(x, gamma, beta, **kwargs(variant))
    dx, dgamma, dbeta = ops.batch_norm_backward(dy, x, gamma, mean, var, **kwargs(variant))
    for got, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        np.testing.assert_allclose(got, numerical_gradient(output, wrt, dy), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------- the layers


@settings(deadline=None, max_examples=20)
@given(n=st.integers(2, 5), c=st.integers(1, 130), h=st.integers(1, 9), w=st.integers(1, 9),
       momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_layers_on_every_variant_match_pytorch_running_statistics_included(n, c, h, w, momentum):
    torch = optional("torch")
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    x = rng.normal(1.0, 2.0, (n, c, h, w)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2.0, c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    twin = torch.nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(gamma))
        twin.bias.copy_(torch.from_numpy(beta))
    layers = [BatchNorm2D(c, momentum=momentum, **kwargs(v)) for v in VARIANTS]
    for layer in layers:
        layer.initialize(np.random.default_rng(0), np.float32)
        layer.params["gamma"][:], layer.params["beta"][:] = gamma, beta
    for step, training in enumerate((True, True, False)):
        twin.train(training)
        xt = torch.from_numpy(x + step).requires_grad_(True)
        yt = twin(xt)
        if training:
            yt.backward(torch.from_numpy(dy))
        for layer in layers:
            y = layer.forward(x + step, training)
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
            for name, tensor in (("running_mean", twin.running_mean), ("running_var", twin.running_var)):
                np.testing.assert_allclose(layer.buffers[name], tensor.numpy(), rtol=1e-5, atol=1e-6)
            if training:
                np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-3, atol=1e-4)
                np.testing.assert_allclose(layer.grads["gamma"], twin.weight.grad.numpy(), rtol=1e-3, atol=1e-3)
                np.testing.assert_allclose(layer.grads["beta"], twin.bias.grad.numpy(), rtol=1e-3, atol=1e-3)
        twin.weight.grad = twin.bias.grad = None


@pytest.mark.parametrize("variant", VARIANTS, ids="/".join)
def test_layers_on_every_variant_keep_the_reference_layers_running_statistics(variant):
    rng = np.random.default_rng(5)
    for cls, shape in ((BatchNorm2D, (6, 5, 4, 3)), (BatchNorm, (7, 5))):
        layers = [cls(5, momentum=0.3, **kwargs(v)) for v in (variant, registry.REFERENCE)]
        for layer in layers:
            layer.initialize(np.random.default_rng(0), np.float64)
        for step in range(3):
            x = rng.normal(step, 2.0, shape)
            for layer in layers:
                layer.forward(x, training=True)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(layers[0].buffers[name], layers[1].buffers[name], rtol=1e-12)


def test_a_conv_algorithm_leaves_the_layers_batch_norm_at_auto():
    # a model-wide --algorithm gemm names the convolutions' algorithm
    x = np.random.default_rng(1).random((4, 3), dtype=np.float32)
    layer, reference, unknown = (BatchNorm(3, **options) for options in ({"algorithm": "gemm"}, REFERENCE,
                                                                           {"algorithm": "fft"}))
    for each in (layer, reference, unknown):
        each.initialize(np.random.default_rng(0))
    np.testing.assert_allclose(layer.forward(x, True), reference.forward(x, True), rtol=1e-6)
    assert layer.config()["algorithm"] == "gemm"  # saved as given
    with pytest.raises(ValueError, match="no variant of batch_norm matches"):
        unknown.forward(x, True)


def test_cnn_deep_trains_a_step_with_a_conv_only_algorithm():
    from fastconv import models
    from fastconv.optim import SGD
    model = models.build("cnn-deep", algorithm="im2col")
    rng = np.random.default_rng(0)
    loss, _ = model.train_step(rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4), SGD(0.01))
    assert np.isfinite(loss)


def test_a_batch_norm_config_saved_before_backend_and_algorithm_existed_still_builds():
    layer = BatchNorm2D(**{"num_features": 4, "momentum": 0.1, "eps": 1e-5})
    assert (layer.backend, layer.algorithm) == ("auto", "auto")
    model = Sequential([layer], input_shape=(4, 3, 3))
    assert model.forward(np.ones((2, 4, 3, 3), np.float32)).shape == (2, 4, 3, 3)


# ------------------------------------------------------------ empty batch


@pytest.mark.parametrize("variant", VARIANTS + [registry.REFERENCE, ("auto", "auto")], ids="/".join)
def test_an_empty_batch_gives_empty_outputs_nan_statistics_and_zero_gradients_without_a_kernel(variant,
                                                                                                monkeypatch):
    def refuse(*args):
        raise AssertionError("a kernel was called for an empty batch")

    monkeypatch.setattr(registry, "kernel", lambda *args: refuse)
    x, gamma = np.zeros((0, 3, 4, 4), np.float32), np.ones(3, np.float32)
    y, mean, var = ops.batch_norm(x, gamma, gamma, **kwargs(variant))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isnan(mean).all() and np.isnan(var).all()  # the statistics of no values
    y = ops.batch_norm(x, gamma, gamma, gamma, gamma, training=False, **kwargs(variant))
    assert y.shape == x.shape
    dx, dgamma, dbeta = ops.batch_norm_backward(x, x, gamma, mean, var, **kwargs(variant))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dgamma, 0)
    np.testing.assert_array_equal(dbeta, 0)
    with pytest.raises(ValueError, match="no algorithm 'gemm'"):  # the names are still checked
        monkeypatch.undo()
        ops.batch_norm(x, gamma, gamma, backend="numba", algorithm="gemm")


# -------------------------------------------------------------- arguments


def test_inputs_are_read_never_written_and_dtypes_follow_the_rule():
    x, gamma, beta, running, dy = case((3, 4, 2, 2), np.float32, seed=1)
    saved = [a.copy() for a in (x, gamma, beta, *running)]
    for variant in VARIANTS:
        y, mean, var = ops.batch_norm(x, gamma, beta, **kwargs(variant))
        assert y.dtype == mean.dtype == var.dtype == np.float32
        ops.batch_norm(x, gamma, beta, *running, training=False, **kwargs(variant))
        for got, want in zip((x, gamma, beta, *running), saved):
            np.testing.assert_array_equal(got, want)
    # float32 with float64 parameters computes in float64; integers too
    assert ops.batch_norm(x, gamma.astype(np.float64), beta)[0].dtype == np.float64
    assert ops.batch_norm(np.arange(12).reshape(3, 4), np.ones(4), np.zeros(4))[0].dtype == np.float64
    # read-only running statistics (a checkpoint's, memory-mapped) are fine
    frozen = [np.array(r) for r in running]
    for r in frozen:
        r.flags.writeable = False
    for variant in VARIANTS:
        ops.batch_norm(x, gamma, beta, *frozen, training=False, **kwargs(variant))


X, G = np.ones((2, 3, 4, 4)), np.ones(3)


@pytest.mark.parametrize("call, expected", [
    (lambda: ops.batch_norm(np.ones(3), G, G), r"batch_norm: x must be \(N, C\) or \(N, C, H, W\), got shape \(3,\)"),
    (lambda: ops.batch_norm(np.ones((2, 3, 0, 4)), G, G),
     r"x must have C >= 1 and H, W >= 1, got shape \(2, 3, 0, 4\)"),
    (lambda: ops.batch_norm(np.ones((2, 0)), np.ones(0), np.ones(0)), r"x must have C >= 1"),
    (lambda: ops.batch_norm(X, np.ones(4), G), r"channel mismatch: x has C=3 but gamma has 4 values "
                                               r"\(x \(2, 3, 4, 4\), gamma \(4,\)\)"),
    (lambda: ops.batch_norm(X, G, np.ones(2)), r"channel mismatch: x has C=3 but beta has 2 values"),
    (lambda: ops.batch_norm(X, np.ones((3, 1)), G), r"gamma must be 1-D \(C,\), got shape \(3, 1\)"),
    (lambda: ops.batch_norm(X, G, G, G, np.ones(5), training=False),
     r"channel mismatch: x has C=3 but running_var has 5 values"),
    (lambda: ops.batch_norm(X, G, G, eps=0), r"eps must be a number > 0, got 0"),
    (lambda: ops.batch_norm(X, G, G, eps=-1e-5), r"eps must be a number > 0"),
    (lambda: ops.batch_norm(X, G, G, eps=float("nan")), r"eps must be a number > 0, got nan"),
    (lambda: ops.batch_norm(X, G, G, eps=float("inf")), r"eps must be a number > 0, got inf"),
    (lambda: ops.batch_norm(X, G, G, eps=True), r"eps must be a number > 0, got True"),
    (lambda: ops.batch_norm(X, G, G, G, G), r"training normalises with the batch's statistics and returns them; "
                                            r"running_mean and running_var are for evaluation"),
    (lambda: ops.batch_norm(X, G, G, training=False), r"evaluation \(training=False\) needs running_mean and "
                                                      r"running_var"),
    (lambda: ops.batch_norm(X, G, G, G, training=False), r"needs running_mean and running_var"),
    (lambda: ops.batch_norm_backward(np.ones((2, 3, 4, 3)), X, G, G, G),
     r"batch_norm_backward: dy must have the output shape \(2, 3, 4, 4\), got \(2, 3, 4, 3\)"),
    (lambda: ops.batch_norm_backward(X, X, G, np.ones(2), G), r"channel mismatch: x has C=3 but mean has 2 values"),
    (lambda: ops.batch_norm_backward(X, X, G, G, G, eps=0), r"eps must be a number > 0"),
    (lambda: ops.batch_norm(X, G, G, backend="cython", algorithm="gemm"),
     r"backend 'cython' has no algorithm 'gemm' for batch_norm; choose from \['naive', 'vectorized'\]"),
])
def test_bad_arguments_are_refused_with_the_reason(call, expected):
    with pytest.raises(ValueError, match=expected):
        call()


@pytest.mark.parametrize("call, expected", [
    (lambda: ops.batch_norm(X, G, G, training="yes"), r"batch_norm: training must be a bool, got 'yes'"),
    (lambda: ops.batch_norm_backward(X, X, G, G, G, compute_dx=1), r"compute_dx must be a bool, got 1"),
    (lambda: ops.batch_norm(X.astype(complex), G, G), r"x must hold real numbers, got dtype complex128"),
    (lambda: ops.batch_norm([[1, 2], [3]], G, G), r"x is not array-like"),
])
def test_bad_types_are_refused_with_the_reason(call, expected):
    with pytest.raises(TypeError, match=expected):
        call()
