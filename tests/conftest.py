"""Shared test settings: hypothesis profiles and a guard that the installed
package (with its compiled kernels) is the one under test."""
import os
from pathlib import Path

import fastconv
from hypothesis import HealthCheck, settings

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
