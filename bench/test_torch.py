"""PyTorch on the same workloads, when it is installed (never a dependency),
with as many threads as fastconv. Backward goes through autograd: conv
computes dx, dw and db as ours does, pooling dx."""
import numpy as np
import pytest

from fastconv import interop, models
from fastconv.workloads import BATCHES, INFERENCE_MODELS, workloads

torch = pytest.importorskip("torch")
functional = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def same_threads(thread_count):
    torch.set_num_threads(thread_count)


def torch_call(work):
    """A no-argument function running ``work`` with torch."""
    a = {name: torch.from_numpy(array) for name, array in work.arrays.items()}
    layer = work.layer
    if work.is_norm:  # in training: batch statistics, as fastconv's workload
        if work.x_shape[0] * int(np.prod(work.x_shape[2:])) < 2:
            pytest.skip("PyTorch refuses batch statistics of one value per channel")
        inputs = (a["x"], a["gamma"], a["beta"])

        def forward(x, gamma, beta):
            return functional.batch_norm(x, None, None, gamma, beta, training=True)
    elif work.is_fused:
        inputs = (a["x"], a["w"], a["b"])

        def forward(x, w, b):
            conv = functional.conv2d(x, w, b, layer.stride, layer.padding)
            return functional.max_pool2d(functional.relu(conv), layer.pool, layer.pool_stride)
    elif work.is_conv:
        inputs = (a["x"], a["w"], a["b"])

        def forward(x, w, b):
            return functional.conv2d(x, w, b, layer.stride, layer.padding)
    else:
        inputs = (a["x"],)
        pool = getattr(functional, layer.kind)

        def forward(x):
            return pool(x, layer.window, layer.stride, layer.padding)

    if work.direction == "forward":

        def run_forward():
            with torch.no_grad():
                return forward(*inputs)

        return run_forward
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = forward(*leaves)
    return lambda: torch.autograd.grad(out, leaves, a["dy"], retain_graph=True)


@pytest.mark.parametrize("work", workloads(), ids=lambda w: f"{w.slug}-torch")
def test_torch(measure, work):
    measure(work.label, torch_call(work), work.rate, op=work.op, **work.counts())


TRAINED = {"cnn": 225_034, "cnn-deep": 897_610}
"""Each network timed in training, with its parameter count: the torch
network is fastconv.interop.torch_sequential of fastconv.models' network
of that name (its weights too)."""


def torch_network(name):
    """The fastconv model ``name`` as a torch.nn.Sequential, with its weights."""
    return interop.torch_sequential(models.build(name, seed=0))


@pytest.mark.parametrize("batch", (64, 256), ids=lambda n: f"N{n}-torch")
@pytest.mark.parametrize("name", TRAINED)
def test_torch_train_step(measure, name, batch):
    """Torch's training step of the network, as bench/test_training.py
    times fastconv's: forward, cross-entropy, backward, SGD momentum step."""
    model = torch_network(name).train()
    assert sum(p.numel() for p in model.parameters()) == TRAINED[name]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, 28, 28), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    measure(f"{name} training N={batch}", step, lambda seconds: (batch / seconds, "images/s"), images=batch)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda n: f"N{n}-torch")
@pytest.mark.parametrize("name", INFERENCE_MODELS)
def test_torch_inference(measure, name, batch):
    """Torch's eager forward pass of the network under no_grad, with the
    fastconv model's weights, as bench/test_training.py times fastconv's."""
    model = torch_network(name)
    x = torch.rand((batch, 1, 28, 28), generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            return model(x)

    measure(f"{name} inference N={batch}", forward, lambda seconds: (batch / seconds, "images/s"), images=batch)
