"""Every kernel variant of the registry on every benchmark workload, with
NumPy's float32 GEMM of the im2col-equivalent size in each conv group as
the practical limit.

One group per op, direction and shape (``cnn.conv2 N=64 forward``), so the
table lines up the variants of one workload.
"""
import pytest

from fastconv.workloads import workloads

WORKLOADS = workloads()
VARIANTS = [(work, variant) for work in WORKLOADS for variant in work.variants()]


@pytest.mark.parametrize(
    "work, variant", VARIANTS, ids=[f"{w.slug}-{'/'.join(v)}" for w, v in VARIANTS]
)
def test_variant(measure, work, variant):
    measure(work.label, work.call(*variant), work.rate, op=work.op, **work.counts())


@pytest.mark.parametrize(
    "work", [w for w in WORKLOADS if w.is_fused], ids=lambda w: f"{w.slug}-unfused/auto"
)
def test_unfused_chain(measure, work):
    """The fused op's group also times conv2d, ReLU and max_pool2d run apart."""
    measure(work.label, work.unfused_call(), work.rate, op="unfused chain", **work.counts())


@pytest.mark.parametrize(
    "work", [w for w in WORKLOADS if w.is_conv], ids=lambda w: f"{w.slug}-numpy/gemm"
)
def test_gemm_limit(measure, work):
    measure(work.label, work.gemm_call(), work.rate, op=work.op, **work.counts())
