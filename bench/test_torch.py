"""PyTorch on the same workloads, when it is installed (never a dependency),
with as many threads as fastconv. Backward goes through autograd: conv
computes dx, dw and db as ours does, pooling dx."""
import pytest

from fastconv.workloads import workloads

torch = pytest.importorskip("torch")
functional = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def same_threads(thread_count):
    torch.set_num_threads(thread_count)


def torch_call(work):
    """A no-argument function running ``work`` with torch."""
    a = {name: torch.from_numpy(array) for name, array in work.arrays.items()}
    s = work.layer.stride
    if work.is_conv:
        inputs = (a["x"], a["w"], a["b"])

        def forward(x, w, b):
            return functional.conv2d(x, w, b, s)
    else:
        inputs = (a["x"],)
        pool = getattr(functional, work.layer.kind)

        def forward(x):
            return pool(x, work.layer.window, s)

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
