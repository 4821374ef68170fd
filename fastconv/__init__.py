"""fastconv: convolutional networks from first principles on the CPU."""
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys


def _installed_copy(package_dir: str, search_path: list) -> list:
    """The directories of an installed fastconv found on ``search_path`` past
    the checkout that holds ``package_dir``: for a source folder that was
    imported instead of the installed package (the compiled kernels are
    built from the top-level ``kernels/`` and installed as
    ``fastconv.kernels``). Raises ImportError, saying what to do, when
    nothing is installed."""
    checkout = _os.path.dirname(package_dir)
    elsewhere = [p for p in search_path if _os.path.realpath(p or _os.curdir) != _os.path.realpath(checkout)]
    spec = _machinery.PathFinder.find_spec("fastconv", elsewhere)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"fastconv was imported from the source folder {package_dir}, and its compiled kernels "
            f"were not found: run `pip install -e .` (or `pip install .`) in {checkout}, then run "
            "Python again"
        )
    return list(spec.submodule_search_locations)


# An installed package, or an editable install (whose import hook maps
# fastconv.kernels to the top-level kernels/ folder), finds its kernels.
# After a regular install, Python started in the checkout's root finds the
# source folder first, where they are not: import every submodule from the
# installed copy instead, so `from fastconv import ops` finds the kernels it
# was built with.
if _util.find_spec("fastconv.kernels") is None:
    __path__[:] = _installed_copy(_os.path.dirname(_os.path.abspath(__file__)), _sys.path)

from fastconv import heap as _heap  # noqa: E402 (after the path is settled)
from fastconv import threads as _threads  # noqa: E402

__version__ = "0.1.0"

# Before NumPy and Numba start their thread pools (see fastconv.threads).
_threads.wait_quietly()
# Kernel scratch freed by one call is reused by the next (see fastconv.heap).
_heap.keep_freed_memory()

_USER_VARIANT_API = ("register_variant", "unregister_variant")


def __getattr__(name):
    """``fastconv.register_variant`` and ``fastconv.unregister_variant``
    (:mod:`fastconv.user_variants`), imported on first use so that
    ``import fastconv`` stays light and comes before NumPy."""
    if name in _USER_VARIANT_API:
        from fastconv import user_variants

        return getattr(user_variants, name)
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")
