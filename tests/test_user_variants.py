"""A learner's function registered as a variant: listed by ops.variants,
dispatched by fastconv.ops through the registry's kernel contract, used by
layers to train, timed by fastconv-bench, and never picked by auto."""
import numpy as np
import pytest

import fastconv
import learner_kernels
from fastconv import autotune, bench, ops, registry, user_variants
from fastconv.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastconv.model import Sequential
from fastconv.optim import SGD

REFERENCE = {"backend": "numpy", "algorithm": "reference"}


@pytest.fixture(autouse=True)
def no_user_variants():
    user_variants.clear()
    yield
    user_variants.clear()
    autotune.forget()


def reference_conv2d(x, w, b=None, stride=1, padding=0):
    return ops.conv2d(x, w, b, stride, padding, **REFERENCE)


def test_a_registered_function_is_listed_under_the_user_backend():
    fastconv.register_variant("conv2d", reference_conv2d, name="mine")
    assert ops.variants("conv2d")[-1] == ("user", "mine")
    assert registry.variants("conv2d", backend="user") == [("user", "mine")]
    assert ("user", "mine") not in ops.variants("max_pool2d")
    fastconv.unregister_variant("conv2d", "mine")
    assert ("user", "mine") not in ops.variants("conv2d")


def test_the_decorator_registers_under_the_function_name_and_returns_it():
    @fastconv.register_variant("max_pool2d")
    def my_pool(x, kernel_size, stride=None, padding=0):
        return learner_kernels.max_pool2d(x, kernel_size, stride, padding)

    assert callable(my_pool) and my_pool.__name__ == "my_pool"
    assert ("user", "my_pool") in ops.variants("max_pool2d")


@pytest.mark.parametrize("options", [{"algorithm": "mine"}, {"backend": "user", "algorithm": "mine"}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_runs_it_by_name_padded_input_and_all(options, dtype):
    fastconv.register_variant("conv2d", learner_kernels.conv2d, name="mine")
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 7, 6), (4, 3, 3, 3), (4,)))
    y = ops.conv2d(x, w, b, 2, 1, **options)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ops.conv2d(x, w, b, 2, 1, **REFERENCE), rtol=1e-5, atol=1e-5)


def test_every_op_runs_through_its_adapter():
    for op in user_variants.SIGNATURES:
        fastconv.register_variant(op, getattr(learner_kernels, op), name="mine")
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 2, 8, 7)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    y = ops.conv2d(x, w, b, 1, 1, algorithm="mine")
    dy = rng.standard_normal(y.shape)
    for got, want in zip(ops.conv2d_backward(dy, x, w, 1, 1, algorithm="mine"),
                         ops.conv2d_backward(dy, x, w, 1, 1, **REFERENCE)):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    for kind in ("max", "avg"):
        forward, backward = getattr(ops, f"{kind}_pool2d"), getattr(ops, f"{kind}_pool2d_backward")
        p = forward(x, 3, 2, 1, algorithm="mine")
        np.testing.assert_allclose(p, forward(x, 3, 2, 1, **REFERENCE), rtol=1e-12)
        dp = rng.standard_normal(p.shape)
        np.testing.assert_allclose(backward(dp, x, 3, 2, 1, algorithm="mine"),
                                   backward(dp, x, 3, 2, 1, **REFERENCE), rtol=1e-12)
    (y, code), (y_ref, code_ref) = (ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, **v)
                                    for v in ({"algorithm": "mine"}, REFERENCE))
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_array_equal(code, code_ref)
    dy = rng.standard_normal(y.shape)
    for got, want in zip(ops.conv2d_relu_maxpool2d_backward(dy, code, x, w, 1, 1, 2, algorithm="mine"),
                         ops.conv2d_relu_maxpool2d_backward(dy, code, x, w, 1, 1, 2, **REFERENCE)):
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_auto_never_picks_a_user_variant():
    # The fastest possible "kernel": it returns zeros at once. auto must
    # not even time it.
    called = []

    def instant(x, w, b=None, stride=1, padding=0):
        called.append(1)
        return np.zeros((x.shape[0], w.shape[0], x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1))

    fastconv.register_variant("conv2d", instant, name="instant")
    for backend in ("auto", "cython"):
        assert ("user", "instant") not in autotune.candidates("conv2d", backend, "auto")
    autotune.forget()
    x, w = np.ones((2, 1, 6, 6)), np.ones((2, 1, 3, 3))
    np.testing.assert_array_equal(ops.conv2d(x, w), np.full((2, 2, 4, 4), 9.0))
    assert called == []
    assert autotune.candidates("conv2d", "auto", "instant") == [("user", "instant")]
    assert autotune.candidates("conv2d", "user", "auto") == [("user", "instant")]


def test_names_and_arguments_are_checked():
    with pytest.raises(ValueError, match=r"'naive' is a built-in algorithm's name"):
        fastconv.register_variant("conv2d", reference_conv2d, name="naive")
    with pytest.raises(ValueError, match=r"unknown op 'conv3d'"):
        fastconv.register_variant("conv3d", reference_conv2d)
    with pytest.raises(ValueError, match=r"name must be an identifier"):
        fastconv.register_variant("conv2d", reference_conv2d, name="my conv")
    with pytest.raises(TypeError, match=r"function must be callable"):
        fastconv.register_variant("conv2d", "conv2d.py", name="mine")
    for op in set(registry.OPS) - set(user_variants.SIGNATURES):  # ops a learner's function cannot stand in for yet
        with pytest.raises(ValueError, match=rf"{op} has no learner-facing signature yet"):
            fastconv.register_variant(op, reference_conv2d, name="mine")
    with pytest.raises(ValueError, match=r"backend 'user' has no algorithm 'other' for conv2d"):
        ops.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="user", algorithm="other")


def test_one_int_stride_and_a_wrong_result_are_refused_naming_the_variant():
    fastconv.register_variant("conv2d", reference_conv2d, name="mine")
    x, w = np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"user variant 'mine' of conv2d takes one int stride, got stride \(2, 1\)"):
        ops.conv2d(x, w, stride=(2, 1), algorithm="mine")
    fastconv.register_variant("conv2d", lambda x, w, b=None, stride=1, padding=0: x, name="mine")
    with pytest.raises(ValueError, match=r"returned y of shape \(1, 1, 6, 6\), expected \(1, 1, 4, 4\)"):
        ops.conv2d(x, w, algorithm="mine")
    fastconv.register_variant("conv2d_backward", lambda dy, x, w, stride=1, padding=0: x, name="mine")
    with pytest.raises(TypeError, match=r"must return a tuple \(dx, dw, db\), got ndarray"):
        ops.conv2d_backward(np.ones((1, 1, 4, 4)), x, w, algorithm="mine")


def test_a_missing_backward_partner_is_named_in_the_error():
    fastconv.register_variant("conv2d", reference_conv2d, name="mine")
    with pytest.raises(ValueError, match=r"register conv2d_backward under that name too"):
        ops.conv2d_backward(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), algorithm="mine")


def tiny_model(**kernels):
    layers = [Conv2D(1, 3, 3, padding=1, **kernels), ReLU(), MaxPool2D(2, **kernels), Flatten(), Dense(3 * 3 * 3, 4)]
    return Sequential(layers, input_shape=(1, 6, 6), seed=0, dtype=np.float64, fuse=False)


def test_a_model_trains_with_user_variants_as_with_the_reference():
    for op in ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward"):
        fastconv.register_variant(op, getattr(learner_kernels, op), name="mine")
    rng = np.random.default_rng(2)
    x, y = rng.random((16, 1, 6, 6)), rng.integers(0, 4, 16)
    histories = [model.fit(x, y, epochs=3, batch_size=8, optimizer=SGD(0.1), verbose=False).loss
                 for model in (tiny_model(algorithm="mine"), tiny_model(**REFERENCE))]
    assert histories[0][-1] < histories[0][0]  # it learned
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-9)


def test_fastconv_bench_times_a_user_variant(tmp_path, capsys):
    source = tmp_path / "my_conv.py"
    source.write_text("import numpy as np\n"
                      "from fastconv import ops\n"
                      "def my_conv(x, w, b=None, stride=1, padding=0):\n"
                      "    return ops.conv2d(x, w, b, stride, padding, backend='numpy', algorithm='reference')\n")
    assert bench.main(["--user-variant", f"conv2d={source}:my_conv", "--ops", "conv2d", "--batch", "1",
                       "--repeat", "1", "--backend", "user"]) == 0
    table = capsys.readouterr().out
    assert "cnn.conv1  1  conv2d  forward    user/my_conv" in table
    assert "cnn.conv2  1  conv2d  forward    user/my_conv" in table


def test_fastconv_bench_refuses_a_user_variant_it_cannot_load(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--user-variant", f"conv2d={tmp_path}/none.py:f"])
    assert "none.py: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--user-variant", "conv3d=x.py:f"])
    assert "unknown op 'conv3d'" in capsys.readouterr().err
