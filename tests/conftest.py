"""Shared test settings: hypothesis profiles, thread counts, a private
``auto`` cache and the real MNIST files."""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fastconv import threads

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module", params=[1, 2], ids=lambda n: f"{n}-thread")
def thread_count(request):
    """Run a whole module at 1 and then 2 kernel threads (Numba, OpenMP and
    BLAS): splitting the batch across threads must not change any result."""
    threads.set_num_threads(request.param)
    yield request.param
    threads.set_num_threads(None)


@pytest.fixture(scope="session", autouse=True)
def private_autotune_cache(tmp_path_factory):
    """Keep the choices ``auto`` makes during the tests out of the user's
    cache (FASTCONV_CACHE also holds downloads; test_data sets its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTCONV_CACHE", str(tmp_path_factory.mktemp("fastconv-cache")))
        yield


MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
"""The real MNIST files: ``shared/data/mnist`` beside the repository (CI
clones the repository next to ``shared`` as well)."""
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder of the four MNIST files. Without them the test is skipped,
    except under CI=true, where it fails: CI has the files, so a test that
    needs them must run there."""
    missing = [name for name in MNIST_FILES if not (MNIST / name).is_file()]
    if missing:
        message = f"the MNIST files {', '.join(missing)} are not in {MNIST}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true: CI must run this test")
        pytest.skip(message)
    return MNIST
