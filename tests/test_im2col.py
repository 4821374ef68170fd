"""The unfold pair of each compiled backend (``fastconv.kernels.im2col_*``),
from which every im2col variant is built: im2col lays the windows out as the
kernel contract says, and col2im is its adjoint."""
import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import registry

UNFOLD_PAIRS = {
    backend: importlib.import_module(f"fastconv.kernels.im2col_{backend}")
    for backend in registry.COMPILED_BACKENDS
}


@st.composite
def unfold_geometries(draw):
    """(xp shape, kh, kw, sh, sw) with the window inside the (padded) input."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    hp, wp = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, hp)), draw(st.integers(1, wp))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (n, c, hp, wp), kh, kw, sh, sw


def expected_cols(xp, kh, kw, sh, sw):
    """cols[(c*KH + i)*KW + j, (n*OH + y)*OW + x] = xp[n, c, y*sh + i, x*sw + j]."""
    n, c, hp, wp = xp.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = np.empty((c, kh, kw, n, oh, ow), xp.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", sorted(UNFOLD_PAIRS))
@given(geometry=unfold_geometries(), seed=st.integers(0, 2**32 - 1))
def test_im2col_layout_and_col2im_adjoint(backend, dtype, geometry, seed):
    xp_shape, kh, kw, sh, sw = geometry
    pair = UNFOLD_PAIRS[backend]
    rng = np.random.default_rng(seed)
    xp = rng.standard_normal(xp_shape).astype(dtype)
    want = expected_cols(xp, kh, kw, sh, sw)
    cols = np.empty_like(want)
    pair.im2col(xp, kh, kw, sh, sw, cols)
    np.testing.assert_array_equal(cols, want)

    # Adjoint: <im2col(xp), g> == <xp, col2im(g)> for any g.
    g = rng.standard_normal(want.shape).astype(dtype)
    dxp = np.zeros_like(xp)
    pair.col2im(g, kh, kw, sh, sw, dxp)
    lhs, rhs = np.vdot(cols.astype(np.float64), g), np.vdot(xp.astype(np.float64), dxp)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert lhs == pytest.approx(rhs, rel=rtol, abs=rtol * float(np.abs(g).sum()))
