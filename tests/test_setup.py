"""setup.py's OpenMP choice: -fopenmp where the compiler takes it; where it
does not (Apple's clang), a build without OpenMP, with a warning. There is no
Mac here, so the refusing compiler is a stand-in."""
import os
import runpy
import sys
import types
from pathlib import Path

import pytest
import setuptools

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"


@pytest.fixture
def setup_module(tmp_path, monkeypatch):
    """setup.py's globals, run in an empty directory with setup() and
    cythonize replaced, so nothing is built; ``calls`` holds setup()'s arguments."""
    calls = []
    cython_build = types.ModuleType("Cython.Build")
    cython_build.cythonize = lambda extensions, **options: extensions
    monkeypatch.setitem(sys.modules, "Cython", types.ModuleType("Cython"))
    monkeypatch.setitem(sys.modules, "Cython.Build", cython_build)
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: calls.append(kwargs))
    monkeypatch.chdir(tmp_path)
    module = runpy.run_path(str(SETUP_PY), run_name="setup_under_test")
    module["calls"] = calls
    return module


class AppleClang:
    """A CCompiler stand-in that refuses -fopenmp as Apple's clang does."""

    def compile(self, sources, output_dir=None, extra_postargs=None):
        from distutils.errors import CompileError

        if "-fopenmp" in (extra_postargs or []):
            raise CompileError("clang: error: unsupported option '-fopenmp'")
        return [os.path.join(output_dir, "omp_probe.o")]

    def link_executable(self, objects, name, output_dir=None, extra_postargs=None):
        pass


def test_a_compiler_that_rejects_fopenmp_is_detected(setup_module):
    assert setup_module["compiler_accepts_openmp"](AppleClang()) is False


def test_this_machines_compiler_takes_fopenmp(setup_module):
    assert setup_module["compiler_accepts_openmp"](setup_module["default_compiler"]()) is True


def test_with_openmp_the_kernels_get_fopenmp(setup_module):
    assert setup_module["openmp_options"](True) == {
        "extra_compile_args": ["-fopenmp"], "extra_link_args": ["-fopenmp"], "include_dirs": []}


def test_without_openmp_the_build_goes_on_single_threaded_with_a_warning(setup_module, tmp_path):
    with pytest.warns(UserWarning, match=r"does not accept -fopenmp .* Cython kernels run single-threaded"):
        options = setup_module["openmp_options"](False)
    assert "-fopenmp" not in options["extra_compile_args"] + options["extra_link_args"]
    (include_dir,) = options["include_dirs"]
    assert "int omp_get_max_threads(void) { return 1; }" in (tmp_path / include_dir / "omp.h").read_text()


def test_setup_passes_the_choice_to_every_kernel(setup_module, monkeypatch, tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "conv_cython.pyx").write_text("")
    module = runpy.run_path(str(SETUP_PY), run_name="setup_under_test")
    extension = setup_module["calls"][-1]["ext_modules"][0]
    assert extension.name == "fastconv.kernels.conv_cython"
    assert extension.extra_compile_args[:2] == ["-O3", "-fopenmp"] and extension.extra_link_args == ["-fopenmp"]
    assert module["openmp"]["include_dirs"] == []


def test_the_alias_check_limit_is_raised_where_the_compiler_knows_it(setup_module):
    accepts = setup_module["compiler_accepts"]
    compiler = setup_module["default_compiler"]()
    assert accepts(compiler, setup_module["MANY_ALIAS_CHECKS"]) is True  # gcc, as in CI
    assert accepts(compiler, "--param=no-such-parameter=1") is False
    assert setup_module["MANY_ALIAS_CHECKS"] in setup_module["compile_args"]
