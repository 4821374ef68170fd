"""The op table: each op declared once, and every backend's kernel table
checked against it as it loads, so a misspelt or missing key is an error,
never a variant silently absent from dispatch and from every test."""
import types

import numpy as np
import pytest

from fastconv import op_table, ops, registry


def test_each_op_has_one_function_in_ops_and_a_declared_backward_partner():
    for name, declared in op_table.OPS.items():
        assert callable(getattr(ops, name))
        if declared.backward is not None:
            partner = op_table.op(declared.backward)
            assert partner.is_backward and partner.family == declared.family


def test_every_loaded_table_matches_the_declarations():
    for backend in registry.COMPILED_BACKENDS:
        for name, declared in op_table.OPS.items():
            assert [a for _, a in registry.variants(name, backend=backend)] == list(declared.algorithms)


def _table(family):
    """A complete kernel table for ``family``, every kernel a stand-in."""
    return {(o.name, alg): print for o in op_table.OPS.values() if o.family == family for alg in o.algorithms}


def test_a_complete_table_passes():
    op_table.check_kernels("test", "pool", _table("pool"))


def test_a_misspelt_key_is_refused_by_name():
    table = _table("conv")
    table[("conv2d_bakward", "naive")] = table.pop(("conv2d_backward", "naive"))
    with pytest.raises(ValueError, match=r"test: .*unknown keys \[\('conv2d_bakward', 'naive'\)\].*"
                                         r"missing variants \[\('conv2d_backward', 'naive'\)\]"):
        op_table.check_kernels("test", "conv", table)


def test_an_unknown_algorithm_or_an_op_of_another_family_is_refused():
    with pytest.raises(ValueError, match=r"unknown keys \[\('max_pool2d', 'fft'\)\]"):
        op_table.check_kernels("test", "pool", {**_table("pool"), ("max_pool2d", "fft"): print})
    with pytest.raises(ValueError, match=r"unknown keys \[\('conv2d', 'naive'\)\]"):
        op_table.check_kernels("test", "pool", {**_table("pool"), ("conv2d", "naive"): print})


def test_a_missing_variant_is_refused():
    table = _table("pool")
    del table[("avg_pool2d_backward", "vectorized")]
    with pytest.raises(ValueError, match=r"missing variants \[\('avg_pool2d_backward', 'vectorized'\)\]"):
        op_table.check_kernels("test", "pool", table)


def test_a_backend_whose_module_has_a_misspelt_key_fails_when_it_loads(monkeypatch):
    real_import = registry.importlib.import_module

    def with_a_typo(name):
        module = real_import(name)
        if name.endswith("pool_numba"):
            kernels = dict(module.KERNELS)
            kernels[("max_pool2d", "vectorised")] = kernels.pop(("max_pool2d", "vectorized"))
            return types.SimpleNamespace(__name__=name, KERNELS=kernels)
        return module

    monkeypatch.setattr(registry.importlib, "import_module", with_a_typo)
    registry.family_kernels.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"fastconv\.kernels\.pool_numba\.KERNELS .*'vectorised'"):
            ops.max_pool2d(np.zeros((1, 1, 4, 4)), 2, backend="numba", algorithm="im2col")
    finally:
        registry.family_kernels.cache_clear()


def test_an_unknown_op_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown op 'conv3d'; choose from \('conv2d', "):
        registry.variants("conv3d")
