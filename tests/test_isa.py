"""The instruction-set builds of the Cython kernels: the best one this CPU
runs is chosen, one it cannot run is never loaded, and every build it can
run computes the same results."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv import isa, ops, registry

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


def _cases():
    """(op name, ops function, its arguments): every op at one small shape
    with padding (and stride, for pooling), float64, so any build's result
    is exact to rounding."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    conv_dy = rng.standard_normal((3, 5, 9, 8))  # conv at stride 1 (Winograd's), padding 1
    pool_dy = rng.standard_normal((3, 4, 5, 4))  # 3x3 pool, stride 2, padding 1
    fused_y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, backend="numpy", algorithm="reference")
    fused_dy = rng.standard_normal(fused_y.shape)
    pool = dict(kernel_size=3, stride=2, padding=1)
    gamma, beta, norm_dy = rng.uniform(0.5, 2, 4), rng.standard_normal(4), rng.standard_normal(x.shape)
    _, mean, var = ops.batch_norm(x, gamma, beta, backend="numpy", algorithm="reference")
    return {
        "conv2d": (ops.conv2d, (x, w, b, 1, 1), {}),
        "conv2d_backward": (ops.conv2d_backward, (conv_dy, x, w, 1, 1), {}),
        "max_pool2d": (ops.max_pool2d, (x,), pool),
        "max_pool2d_backward": (ops.max_pool2d_backward, (pool_dy, x), pool),
        "avg_pool2d": (ops.avg_pool2d, (x,), pool),
        "avg_pool2d_backward": (ops.avg_pool2d_backward, (pool_dy, x), pool),
        "conv2d_relu_maxpool2d": (ops.conv2d_relu_maxpool2d, (x, w, b, 1, 1, 2), {}),
        "conv2d_relu_maxpool2d_backward": (ops.conv2d_relu_maxpool2d_backward, (fused_dy, code, x, w, 1, 1, 2), {}),
        "batch_norm": (ops.batch_norm, (x, gamma, beta), {}),
        "batch_norm_backward": (ops.batch_norm_backward, (norm_dy, x, gamma, mean, var), {}),
    }


def test_the_cases_cover_every_declared_op():
    assert set(_cases()) == set(registry.OPS)


@pytest.fixture
def build_in_use(monkeypatch):
    """Load the Cython kernels of a given build instead of the chosen one."""
    def use(build):
        monkeypatch.setattr(isa, "chosen", lambda: build)
        registry.family_kernels.cache_clear()

    yield use
    registry.family_kernels.cache_clear()


@pytest.mark.parametrize("build", isa.runnable())
@pytest.mark.parametrize("op", list(registry.OPS))
def test_every_build_this_cpu_runs_matches_the_reference_on_every_op(build, op, build_in_use):
    # Every build the CPU runs, not only the chosen one: on an AVX-512
    # machine the baseline and avx2 builds would otherwise never run.
    fn, args, options = _cases()[op]
    expected = fn(*args, **options, backend="numpy", algorithm="reference")
    build_in_use(build)
    family = registry.OPS[op].family
    module = importlib.import_module(isa.module_name(build, f"{family}_cython"))
    assert registry.kernel(op, "cython", "naive") is module.KERNELS[(op, "naive")]  # that build runs
    algorithms = [a for b, a in registry.variants(op, backend="cython")]
    assert algorithms == list(registry.OPS[op].algorithms)
    for algorithm in algorithms:
        got = fn(*args, **options, backend="cython", algorithm=algorithm)
        pairs = zip(got, expected) if isinstance(got, tuple) else [(got, expected)]
        for g, e in pairs:
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=f"{build}/{algorithm}")


@pytest.mark.parametrize("build", isa.runnable())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_this_cpu_runs_has_the_row_product_right(build, dtype):
    # Its column blocks are 8 vectors of the build's width: 300 columns make
    # whole blocks, single vectors and single columns in every build.
    module = importlib.import_module(isa.module_name(build, "conv_cython"))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(37).astype(dtype), rng.standard_normal((37, 300)).astype(dtype)
    out, parts = np.full(300, np.nan, dtype), np.full((3, 300), np.nan, dtype)
    module.row_product(a, b, parts, out, 3)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("build", isa.runnable())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_this_cpu_runs_moves_winograd_layouts_in_whole_blocks_and_the_rest(build, dtype, build_in_use):
    # Winograd moves an image channels-last and back in blocks of as many
    # channels as pixels as a vector holds, transposed in registers: 35
    # channels and 33 filters make two or more whole blocks and a rest in
    # every build and dtype, and a 7 x 6 plane (42 pixels) a run of pixels
    # across rows and a rest; the pooled output (16 filters-last pixels)
    # goes back the same way; the fused backward pass routes the pooled
    # gradient through 2x2 windows and through overlapping 3x3 ones.
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s) for s in ((2, 35, 7, 6), (33, 35, 3, 3), (33,)))
    y, code = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 2, backend="numpy", algorithm="reference")
    y3, code3 = ops.conv2d_relu_maxpool2d(x, w, b, 1, 1, 3, 2, backend="numpy", algorithm="reference")
    conv_dy, fused_dy, fused_dy3 = (rng.standard_normal(s) for s in ((2, 33, 7, 6), y.shape, y3.shape))
    calls = {
        "conv2d": (ops.conv2d, (x, w, b, 1, 1)),
        "conv2d_backward": (ops.conv2d_backward, (conv_dy, x, w, 1, 1)),
        "conv2d_relu_maxpool2d": (ops.conv2d_relu_maxpool2d, (x, w, b, 1, 1, 2)),
        "conv2d_relu_maxpool2d_backward": (ops.conv2d_relu_maxpool2d_backward, (fused_dy, code, x, w, 1, 1, 2)),
        "conv2d_relu_maxpool2d_backward, 3x3 pool": (ops.conv2d_relu_maxpool2d_backward,
                                                     (fused_dy3, code3, x, w, 1, 1, 3, 2)),
    }
    expected = {op: fn(*args, backend="numpy", algorithm="reference") for op, (fn, args) in calls.items()}
    build_in_use(build)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for op, (fn, args) in calls.items():
        given = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype != np.uint8 else a for a in args]
        got, want = fn(*given, backend="cython", algorithm="winograd"), expected[op]
        for g, e in zip(got, want) if isinstance(got, tuple) else [(got, want)]:
            scale = np.max(np.abs(e))
            np.testing.assert_allclose(g, e, rtol=0, atol=rtol * scale, err_msg=f"{build}/{op}")
