"""The instruction-set builds of the Cython kernels: the best one this CPU
runs is chosen, one it cannot run is never loaded, and every build it can
run computes the same results."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv import isa, ops

ALL = {feature: True for build in isa.REQUIRES.values() for feature in build}


def test_the_best_build_the_cpu_runs_is_chosen(monkeypatch):
    monkeypatch.setattr(isa, "installed", lambda build: True)
    assert isa.runnable(ALL) == ["avx512", "avx2", "baseline"]
    assert isa.runnable({**ALL, "AVX512_SKX": False}) == ["avx2", "baseline"]
    assert isa.runnable({**ALL, "FMA3": False}) == ["baseline"]  # AVX2 without FMA: no avx2 build
    assert isa.runnable({}) == ["baseline"]  # features unknown: the safe build only
    assert isa.choose(None, ["avx2", "baseline"]) == "avx2"


def test_a_build_the_cpu_cannot_run_is_refused(monkeypatch):
    monkeypatch.setattr(isa, "cpu_features", lambda: {**ALL, "AVX512F": False})
    with pytest.raises(ValueError, match="this CPU lacks AVX512F"):
        isa.choose("avx512", ["avx2", "baseline"])
    with pytest.raises(ValueError, match="not a build"):
        isa.choose("sse9", ["baseline"])
    assert isa.choose("baseline", ["avx2", "baseline"]) == "baseline"


def test_no_build_at_all_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        isa.choose(None, [])


def test_a_forced_build_that_cannot_run_fails_with_a_message_not_a_crash():
    script = "from fastconv import ops; import numpy as np; ops.conv2d(np.ones((1,1,3,3)), np.ones((1,1,2,2)), backend='cython', algorithm='gemm')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, isa.ENV_VAR: "sse9"}, cwd=os.path.dirname(__file__))
    assert result.returncode == 1
    assert "FASTCONV_ISA='sse9' is not a build" in result.stderr


@pytest.mark.parametrize("build", isa.runnable())
def test_every_build_this_cpu_runs_matches_the_reference(build):
    kernels = importlib.import_module(isa.module_name(build, "conv_cython")).KERNELS
    rng = np.random.default_rng(0)
    xp, w, b = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    expected = ops.conv2d(xp, w, b, backend="numpy", algorithm="reference")
    for algorithm in ("naive", "vectorized", "gemm"):
        out = np.empty_like(expected)
        kernels[("conv2d", algorithm)](xp, w, b, 1, 1, out)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12, err_msg=f"{build}/{algorithm}")
