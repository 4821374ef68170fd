"""Evaluation keeps nothing on the layers: no activations pinned after a
forward pass with training=False, so threads can run one model at once,
and a backward pass needs a training forward before it."""
import threading

import numpy as np
import pytest

from fastconv import models
from fastconv.losses import softmax_cross_entropy


def _arrays_kept(model) -> list:
    """(step or layer, attribute) of every array a step or layer holds
    outside its params, grads and buffers."""
    kept = []
    for owner in [*model.layers, *model.steps]:
        for name, value in vars(owner).items():
            if name not in ("params", "grads", "buffers") and isinstance(value, (np.ndarray, tuple)) and \
                    any(isinstance(v, np.ndarray) for v in (value if isinstance(value, tuple) else (value,))):
                kept.append((getattr(owner, "name", owner), name))
    return kept


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("fuse", [True, False])
def test_an_evaluation_pass_keeps_no_activations(name, fuse):
    model = models.build(name, backend="numpy", algorithm="reference")
    model.fuse = fuse
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    logits, labels = model.forward(x, training=True), np.array([0, 1, 2])
    assert _arrays_kept(model)  # training keeps what backward needs
    model.backward(softmax_cross_entropy(logits, labels)[1])
    model.forward(x)
    assert _arrays_kept(model) == []


def test_backward_after_an_evaluation_pass_is_refused():
    model = models.build("cnn", backend="numpy", algorithm="reference")
    x = np.zeros((2, 1, 28, 28), np.float32)
    model.forward(x, training=True)
    logits = model.forward(x)  # evaluation drops what training kept
    with pytest.raises(RuntimeError, match=r"backward called before forward with training=True"):
        model.backward(softmax_cross_entropy(logits, np.array([0, 1]))[1])


@pytest.mark.parametrize("name", ["cnn", "cnn-deep"])
def test_threads_evaluating_one_model_get_what_each_gets_alone(name):
    """Four threads share batch size 4, so one compiled plan (fastconv.plan)
    and its buffers, three share batch size 1 (the dense layers' row
    product and its scratch); the other has a plan of its own."""
    model = models.build(name)
    rng = np.random.default_rng(1)
    batches = [rng.random((n, 1, 28, 28), dtype=np.float32) for n in (1, 1, 1, 3, 4, 4, 4, 4)]
    alone = [model.forward(b) for b in batches]
    together = [[] for _ in batches]

    def run(i):
        for _ in range(10):
            together[i].append(model.forward(batches[i]))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, expected in zip(together, alone):
        for logits in got:
            np.testing.assert_array_equal(logits, expected)
