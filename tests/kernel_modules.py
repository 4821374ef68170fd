"""The compiled kernel modules themselves, for tests that reach inside one
(a tile-size rule, a group size) rather than through fastconv.ops."""
import importlib

from fastconv import registry


def conv_module(backend):
    """The conv kernel module of a compiled backend (its build for this CPU)."""
    return importlib.import_module(registry._module_name(backend, f"conv_{backend}"))
