"""fastconv: convolutional networks from first principles on the CPU."""
import importlib.machinery as _machinery
import os as _os
import sys as _sys


def _installed_copy_if_source_tree(package_dir: str, search_path: list) -> list | None:
    """The directories to import fastconv's modules from when this file was
    found in a source checkout, whose ``fastconv/`` has no compiled kernels
    (they are built from the top-level ``kernels/`` and installed as
    ``fastconv.kernels``): the installed package's, found on ``search_path``
    past the checkout. None when ``package_dir`` holds the kernels itself.
    Raises ImportError, saying what to do, when nothing is installed."""
    if _os.path.isdir(_os.path.join(package_dir, "kernels")):
        return None
    checkout = _os.path.dirname(package_dir)
    elsewhere = [p for p in search_path if _os.path.realpath(p or _os.curdir) != _os.path.realpath(checkout)]
    spec = _machinery.PathFinder.find_spec("fastconv", elsewhere)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"fastconv was imported from the source folder {package_dir}, which has no compiled "
            f"kernels, and no installed fastconv was found: run `pip install .` in {checkout} "
            "(a regular install, not -e), then run Python again"
        )
    return list(spec.submodule_search_locations)


# From a clone's root the current directory comes first on sys.path, so the
# source folder shadows the installed package: import every submodule from
# the installed copy instead, so `from fastconv import ops` finds the kernels
# it was built with.
_installed = _installed_copy_if_source_tree(_os.path.dirname(_os.path.abspath(__file__)), _sys.path)
if _installed is not None:
    __path__[:] = _installed

from fastconv import threads as _threads  # noqa: E402 (after the path is settled)

__version__ = "0.1.0"

# Before NumPy and Numba start their thread pools (see fastconv.threads).
_threads.wait_quietly()
