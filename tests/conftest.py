"""Shared test settings: hypothesis profiles, thread counts and a private
``auto`` cache."""
import os

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
