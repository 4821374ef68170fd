"""Imports of the test-only packages (onnx, onnxruntime, safetensors, torch)."""
import importlib
import os

import pytest


def optional(module):
    """``module`` imported; the test is skipped when it is absent, except
    under CI=true, where the import error fails it (CI installs them all)."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (test-only: pip install onnxruntime torch)")
