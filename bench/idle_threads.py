"""How idle threads should wait: small and large batches under three
settings.

    python bench/idle_threads.py [cnn cnn-deep ...]   # default: cnn cnn-deep

Each setting runs in a fresh Python process (the thread libraries read the
variables when they load), twice, alternated:

- ``passive``: ``OMP_WAIT_POLICY=PASSIVE``, idle OpenMP threads sleep at
  once (what fastconv set before);
- ``spin``: fastconv's default (``GOMP_SPINCOUNT=30000``: they spin about
  0.3 ms, then sleep);
- ``one thread``: ``FASTCONV_NUM_THREADS=1``.

Each process times, per model, training steps (SGD with momentum, random
images) at batch 8, 16 and 64 and inference passes at batch 4 and 256,
``auto`` choosing the kernels (``fastconv.workloads.median_seconds``: the
median of samples of calls), and prints ms.
Run it on an idle machine.
"""
import os
import subprocess
import sys

from fastconv import settings, threads

PROBE = """
import sys
import fastconv
import numpy as np
from fastconv import models, optim
from fastconv.workloads import median_seconds
rng = np.random.default_rng(0)
model = models.build(sys.argv[1])
optimizer = optim.SGD(lr=0.01, momentum=0.9)
figures = []
for n, samples in ((8, 30), (16, 30), (64, 30)):
    x, y = rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
    figures.append(median_seconds(lambda: model.train_step(x, y, optimizer), samples) * 1e3)
for n, samples in ((4, 30), (256, 20)):
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    figures.append(median_seconds(lambda: model.forward(x), samples) * 1e3)
print(*figures)
"""

SETTINGS = {"passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin": {}, "one thread": {settings.NUM_THREADS: "1"}}
CLEARED = (*threads.WAIT_VARIABLES, settings.NUM_THREADS)  # each setting starts from fastconv's defaults
COLUMNS = ("train b8", "train b16", "train b64", "infer b4", "infer b256")


def measure(setting, model) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | SETTINGS[setting]
    result = subprocess.run([sys.executable, "-c", PROBE, model], env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in result.stdout.split()]


def main(models) -> None:
    print(f"{'model':9} {'setting':11}" + "".join(f"{c:>11}" for c in COLUMNS) + "   (ms)")
    for model in models:
        for _ in range(2):
            for setting in SETTINGS:
                print(f"{model:9} {setting:11}" + "".join(f"{v:11.3f}" for v in measure(setting, model)))


if __name__ == "__main__":
    main(sys.argv[1:] or ["cnn", "cnn-deep"])
