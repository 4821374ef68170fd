"""Whether importing NumPy before fastconv slows fastconv down.

    python bench/import_order.py [cnn cnn-deep ...]   # default: cnn cnn-deep

For each model, two fresh Python processes, one that runs ``import numpy``
before ``import fastconv`` (as most programs and notebooks do) and one
that imports fastconv first (as the command-line tools do), each timing
the median of 40 samples of training steps (``Sequential.train_step``,
batch 64, SGD with momentum) and of 30 of evaluation forward passes at
batch 256 (``fastconv.workloads.median_seconds``), on random images,
``auto`` choosing the kernels. It
prints both orders side by side and their ratio, which should be about 1
(see the README's Threads section for why it was not). Run it on an idle
machine; the two orders run one after the other, twice, alternated.
"""
import subprocess
import sys

PROBE = """
import sys
if sys.argv[1] == "numpy":
    import numpy
import fastconv
import numpy as np
from fastconv import models, optim
from fastconv.workloads import median_seconds
model = models.build(sys.argv[2])
rng = np.random.default_rng(0)
x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
optimizer = optim.SGD(lr=0.01, momentum=0.9)
step = median_seconds(lambda: model.train_step(x, y, optimizer), 40)
images = rng.random((256, 1, 28, 28), dtype=np.float32)
print(step * 1e3, median_seconds(lambda: model.forward(images), 30) * 1e3)
"""

ORDERS = ("numpy", "fastconv")


def measure(order, model) -> tuple[float, float]:
    """(train step ms, inference ms) in a fresh process importing ``order`` first."""
    result = subprocess.run([sys.executable, "-c", PROBE, order, model], capture_output=True, text=True, check=True)
    step, inference = map(float, result.stdout.split())
    return step, inference


def main(models) -> None:
    print(f"{'model':10} {'first':9} {'train step ms':>14} {'inference b256 ms':>18}")
    for model in models:
        for _ in range(2):
            times = {order: measure(order, model) for order in ORDERS}
            for order in ORDERS:
                print(f"{model:10} {order:9} {times[order][0]:14.2f} {times[order][1]:18.2f}")
            ratio = [a / b for a, b in zip(times["numpy"], times["fastconv"])]
            print(f"{model:10} {'ratio':9} {ratio[0]:13.2f}x {ratio[1]:17.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:] or ["cnn", "cnn-deep"])
