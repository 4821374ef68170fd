"""End to end: the reference CNN's training steps (forward, loss, backward,
SGD step on one batch) and inference passes (``Sequential.forward``, its
compiled plan) per second, for each variant that implements every op, and
for ``auto``; cnn-deep's with ``auto``.

Images are seeded noise of MNIST's shape: the kernels' speed does not
depend on the pixel values.
"""
import numpy as np
import pytest

from fastconv import fusion, models, optim, workloads

BATCHES = (64, 256)
# Variants that run the whole network, then auto, fused (the default) and not.
VARIANTS = [variant + (True,) for variant in fusion.whole_network_variants()]
VARIANTS += [("auto", "auto", True), ("auto", "auto", False)]
CASES = [(batch, variant) for batch in BATCHES for variant in VARIANTS]
IDS = [f"N{batch}-{'/'.join(variant[:2])}{'' if variant[2] else '-unfused'}" for batch, variant in CASES]


def batch_of(n):
    rng = np.random.default_rng(0)
    return rng.random((n,) + models.INPUT_SHAPE, dtype=np.float32), rng.integers(0, models.CLASSES, n)


def images_per_second(batch):
    return lambda seconds: (batch / seconds, "images/s")


@pytest.mark.parametrize("batch, variant", CASES, ids=IDS)
def test_train_step(measure, batch, variant):
    backend, algorithm, fuse = variant
    model = models.build("cnn", backend=backend, algorithm=algorithm, seed=0)
    model.fuse = fuse
    optimizer = optim.SGD(lr=0.01, momentum=0.9)
    x, y = batch_of(batch)
    measure(f"cnn training N={batch}", lambda: model.train_step(x, y, optimizer),
            images_per_second(batch), images=batch)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda n: f"N{n}-auto/auto")
def test_cnn_deep_train_step(measure, batch):
    """cnn-deep's training step, fused as the model runs it, no augmentation
    (bench/test_torch.py times the same network in PyTorch)."""
    model = models.build("cnn-deep", seed=0)
    optimizer = optim.SGD(lr=0.01, momentum=0.9)
    x, y = batch_of(batch)
    measure(f"cnn-deep training N={batch}", lambda: model.train_step(x, y, optimizer),
            images_per_second(batch), images=batch)


INFERENCE_CASES = CASES + [(1, variant) for variant in VARIANTS if variant[0] == "auto"]


@pytest.mark.parametrize("batch, variant", INFERENCE_CASES,
                         ids=IDS + [f"N1-auto/auto{'' if v[2] else '-unfused'}" for v in VARIANTS if v[0] == "auto"])
def test_inference(measure, batch, variant):
    backend, algorithm, fuse = variant
    model = models.build("cnn", backend=backend, algorithm=algorithm, seed=0)
    model.fuse = fuse
    x, _ = batch_of(batch)
    measure(f"cnn inference N={batch}", lambda: model.forward(x), images_per_second(batch), images=batch)


@pytest.mark.parametrize("batch", workloads.BATCHES, ids=lambda n: f"N{n}-auto/auto")
def test_cnn_deep_inference(measure, batch):
    """cnn-deep's evaluation pass (its compiled plan), as bench/test_torch.py
    and bench/test_onnx.py time PyTorch's and onnxruntime's."""
    model = models.build("cnn-deep", seed=0)
    x, _ = batch_of(batch)
    measure(f"cnn-deep inference N={batch}", lambda: model.forward(x), images_per_second(batch), images=batch)
