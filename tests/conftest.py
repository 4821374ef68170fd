"""Shared test settings: hypothesis profiles and a guard that the installed
package (with its compiled kernels) is the one under test."""
import os
from pathlib import Path

import fastconv
import pytest
from hypothesis import HealthCheck, settings

from fastconv import threads

_REPO = Path(__file__).resolve().parents[1]
if Path(fastconv.__file__).resolve().is_relative_to(_REPO / "fastconv"):
    raise RuntimeError(
        f"tests imported fastconv from the source folder {_REPO / 'fastconv'}, where the "
        "compiled kernels are not: install with `pip install .` and run `pytest` "
        "(not `python -m pytest`, which puts the repository root on sys.path)"
    )

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
