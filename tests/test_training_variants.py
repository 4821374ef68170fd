"""The whole CNN trains the same through every kernel variant: 200 Adam
steps from the same seed give the same losses and the same predictions as
the NumPy reference, so the layers are wired right whatever kernels run.

In float64: in float32 the variants' different summation orders round
differently, and 200 steps amplify that to a few 1e-3 in the predictions,
which would hide a real wiring fault of the same size."""
from pathlib import Path

import numpy as np
import pytest

from fastconv import fusion, models, registry
from fastconv.data import load_dataset
from fastconv.model import Sequential
from fastconv.optim import Adam

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
