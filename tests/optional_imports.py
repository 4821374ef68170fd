"""Imports of the packages some tests need beyond fastconv's own: the
test-only runtimes (onnxruntime, torch), the extras (onnx, safetensors) and
the notebook runners (jupytext, nbclient, ipykernel)."""
import importlib
import os

import pytest


def optional(module, install="pip install onnxruntime torch"):
    """``module`` imported; the test is skipped when it is absent, except
    under CI=true, where the import error fails it (CI installs them all).
    ``install`` is the command the skip reason names."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (test-only: {install})")
