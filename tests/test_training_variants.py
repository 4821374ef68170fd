"""The whole CNN trains the same through every kernel variant: 200 Adam
steps from the same seed give the same losses and the same predictions as
the NumPy reference, so the layers are wired right whatever kernels run.

In float64: in float32 the variants' different summation orders round
differently, and 200 steps amplify that to a few 1e-3 in the predictions,
which would hide a real wiring fault of the same size. Winograd runs with
2x2 tiles here: F(4x4)'s float64 rounding turns conv outputs that are
exactly 0 (windows of MNIST's blank background inside a patch that is not
blank) into +-1e-17, where ReLU then passes a gradient the reference does
not; the last test pins that down."""
from pathlib import Path

import numpy as np
import pytest

from fastconv import fusion, models, ops, registry
from fastconv.data import load_dataset
from fastconv.kernels import NO_GRADIENT
from fastconv.model import Sequential
from fastconv.optim import Adam
from kernel_modules import conv_module

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
STEPS, BATCH = 200, 8
VARIANTS = fusion.whole_network_variants()


@pytest.fixture(scope="module")
def images():
    if not MNIST.is_dir():
        pytest.skip(f"MNIST files not found in {MNIST}")
    mnist = load_dataset("mnist", MNIST)
    n = STEPS * BATCH
    return mnist.x_train[:n], mnist.y_train[:n], mnist.x_test[:500]


@pytest.fixture(autouse=True)
def winograd_tiles_of_2x2(monkeypatch):
    for backend in registry.COMPILED_BACKENDS:
        module = conv_module(backend)
        monkeypatch.setattr(module, "_tile_size", lambda oh, ow: 2)


def train(variant, images):
    x, y, x_test = images
    layers = models.cnn({"backend": variant[0], "algorithm": variant[1]})
    model = Sequential(layers, input_shape=models.INPUT_SHAPE, seed=0, dtype=np.float64)
    history = model.fit(x, y, epochs=1, batch_size=BATCH, optimizer=Adam(1e-3), verbose=False)
    return history.loss[0], model.predict(x_test)


@pytest.fixture(scope="module")
def reference_run(images):
    return train(registry.REFERENCE, images)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != registry.REFERENCE], ids="/".join)
def test_training_matches_the_reference(variant, images, reference_run):
    loss, probabilities = train(variant, images)
    expected_loss, expected_probabilities = reference_run
    assert expected_loss < 1.5  # it learned: the mean over the epoch is well below ln(10) = 2.3
    assert loss == pytest.approx(expected_loss, rel=1e-9)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", registry.COMPILED_BACKENDS)
def test_winograd_4x4_differs_only_where_relu_meets_an_exact_zero(backend, images, monkeypatch):
    module = conv_module(backend)
    monkeypatch.setattr(module, "_tile_size", lambda oh, ow: 4)
    x = images[0][:BATCH].astype(np.float64)
    conv1 = Sequential(models.cnn({}), input_shape=models.INPUT_SHAPE, seed=0, dtype=np.float64).layers[0]
    w, b = conv1.params["w"], conv1.params["b"]
    reference = {"backend": "numpy", "algorithm": "reference"}
    conv = ops.conv2d(x, w, b, backend=backend, algorithm="winograd")
    exact = ops.conv2d(x, w, b, **reference)
    assert np.abs(conv - exact).max() < 1e-13 * np.abs(exact).max()
    y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, 0, 2, 2, backend=backend, algorithm="winograd")
    y_exact, code_exact = ops.conv2d_relu_maxpool2d(x, w, b, 1, 0, 2, 2, **reference)
    differs = code != code_exact
    assert differs.any()  # it happens on real digits
    # ... only between window positions whose exact outputs tie, or where
    # the largest exact output is 0 (ReLU's kink), Winograd's within rounding of it
    tiny = 1e-13 * np.abs(exact).max()
    for n, f, row, col in np.argwhere(differs):
        window = exact[n, f, 2 * row:2 * row + 2, 2 * col:2 * col + 2].ravel()
        if code[n, f, row, col] == NO_GRADIENT:
            assert window.max() <= tiny and y_exact[n, f, row, col] == 0
        else:
            assert abs(window[code[n, f, row, col]] - window.max()) <= tiny
            assert code_exact[n, f, row, col] != NO_GRADIENT or window.max() == 0
    np.testing.assert_allclose(y, y_exact, rtol=1e-12, atol=tiny)
