"""setup.py's OpenMP choice: -fopenmp where the compiler takes it; where it
does not (Apple's clang), a build without OpenMP, with a warning.

There is no Mac here, so compilers without OpenMP are stand-ins; the real
compiler of this machine, whichever it is, is checked against what a real
OpenMP program built with it does."""
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
import setuptools

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"


def run_setup(tmp_path, monkeypatch, compiler=None):
    """setup.py's globals, run in ``tmp_path`` with setup() and cythonize
    replaced, so nothing is built; ``calls`` holds setup()'s arguments.
    ``compiler``: a stand-in for the machine's C compiler (default: the real one)."""
    calls = []
    cython_build = types.ModuleType("Cython.Build")
    cython_build.cythonize = lambda extensions, **options: extensions
    monkeypatch.setitem(sys.modules, "Cython", types.ModuleType("Cython"))
    monkeypatch.setitem(sys.modules, "Cython.Build", cython_build)
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: calls.append(kwargs))
    if compiler is not None:
        monkeypatch.setattr("distutils.ccompiler.new_compiler", lambda: compiler)
        monkeypatch.setattr("distutils.sysconfig.customize_compiler", lambda compiler: None)
    monkeypatch.chdir(tmp_path)
    module = runpy.run_path(str(SETUP_PY), run_name="setup_under_test")
    module["calls"] = calls
    return module


@pytest.fixture
def setup_module(tmp_path, monkeypatch):
    """setup.py's globals, run in an empty directory with this machine's compiler."""
    return run_setup(tmp_path, monkeypatch)


class StandInCompiler:
    """A distutils CCompiler stand-in that fails the step named by
    ``openmp_fails_at`` when -fopenmp is among its flags: "compile" as
    Apple's clang ("unsupported option"), "link" as a clang that takes the
    flag but finds no libomp; None as gcc, which takes it at both."""

    def __init__(self, openmp_fails_at=None):
        self.openmp_fails_at = openmp_fails_at

    def __repr__(self):
        return f"StandInCompiler(openmp_fails_at={self.openmp_fails_at!r})"

    def compile(self, sources, output_dir=None, extra_postargs=None):
        from distutils.errors import CompileError

        if self.openmp_fails_at == "compile" and "-fopenmp" in (extra_postargs or []):
            raise CompileError("clang: error: unsupported option '-fopenmp'")
        return [os.path.join(output_dir, "probe.o")]

    def link_executable(self, objects, name, output_dir=None, extra_postargs=None):
        from distutils.errors import LinkError

        if self.openmp_fails_at == "link" and "-fopenmp" in (extra_postargs or []):
            raise LinkError("ld: library not found for -lomp")


GCC_LIKE, APPLE_CLANG, CLANG_WITHOUT_LIBOMP = StandInCompiler(), StandInCompiler("compile"), StandInCompiler("link")


@pytest.mark.parametrize("compiler, has_openmp", [(GCC_LIKE, True), (APPLE_CLANG, False),
                                                  (CLANG_WITHOUT_LIBOMP, False)], ids=repr)
def test_the_probe_says_openmp_only_when_an_openmp_program_compiles_and_links(setup_module, compiler,
                                                                              has_openmp):
    assert setup_module["compiler_accepts_openmp"](compiler) is has_openmp


def threads_of_a_parallel_region(compiler, compile_args, link_args, folder) -> int | None:
    """How many threads a small C program built by ``compiler`` with these
    arguments runs a parallel region of two threads on: 2 with OpenMP, 1
    where the pragma is ignored; None if it does not build."""
    from distutils.errors import CompileError, LinkError

    source = folder / "parallel.c"
    source.write_text("#include <stdio.h>\n"
                      "int main(void) {\n"
                      "    int threads = 0;\n"
                      "#pragma omp parallel num_threads(2)\n"
                      "    {\n"
                      "#pragma omp atomic\n"
                      "        threads++;\n"
                      "    }\n"
                      "    printf(\"%d\\n\", threads);\n"
                      "    return 0;\n"
                      "}\n")
    try:
        objects = compiler.compile([str(source)], output_dir=str(folder), extra_postargs=compile_args)
        compiler.link_executable(objects, "parallel", output_dir=str(folder), extra_postargs=link_args)
    except (CompileError, LinkError):
        return None
    environment = {**os.environ, "OMP_DYNAMIC": "false"}
    environment.pop("OMP_THREAD_LIMIT", None)
    ran = subprocess.run([str(folder / "parallel")], capture_output=True, text=True, check=True, env=environment)
    return int(ran.stdout)


def test_the_kernels_get_openmp_exactly_when_this_machines_compiler_has_it(setup_module, tmp_path):
    compiler = setup_module["default_compiler"]()
    (with_fopenmp := tmp_path / "with-fopenmp").mkdir()
    (as_the_kernels := tmp_path / "as-the-kernels").mkdir()
    has_openmp = threads_of_a_parallel_region(compiler, ["-fopenmp"], ["-fopenmp"], with_fopenmp) == 2
    assert setup_module["compiler_accepts_openmp"](compiler) is has_openmp
    kernel_threads = threads_of_a_parallel_region(compiler, setup_module["compile_args"],
                                                  setup_module["link_args"], as_the_kernels)
    assert kernel_threads == (2 if has_openmp else 1)


def test_without_openmp_the_build_goes_on_single_threaded_with_a_warning(setup_module, tmp_path):
    with pytest.warns(UserWarning, match=r"does not accept -fopenmp .* Cython kernels run single-threaded"):
        options = setup_module["openmp_options"](False)
    assert "-fopenmp" not in options["extra_compile_args"] + options["extra_link_args"]
    (include_dir,) = options["include_dirs"]
    assert "int omp_get_max_threads(void) { return 1; }" in (tmp_path / include_dir / "omp.h").read_text()


@pytest.mark.parametrize("compiler, has_openmp", [(GCC_LIKE, True), (APPLE_CLANG, False)], ids=repr)
def test_every_kernel_of_every_build_gets_the_probes_choice(tmp_path, monkeypatch, recwarn, compiler, has_openmp):
    (tmp_path / "kernels").mkdir()
    for name in ("conv_cython", "pool_cython"):
        (tmp_path / "kernels" / f"{name}.pyx").write_text("")
    setup = run_setup(tmp_path, monkeypatch, compiler)
    extensions = setup["calls"][-1]["ext_modules"]
    assert {e.name.rsplit(".", 1)[1] for e in extensions} == {"conv_cython", "pool_cython"}
    assert len(extensions) == 2 * len(setup["ISA_FLAGS"])
    stand_in_folder = setup["NO_OPENMP_DIR"]
    for extension in extensions:
        assert ("-fopenmp" in extension.extra_compile_args) is has_openmp, extension.name
        assert ("-fopenmp" in extension.extra_link_args) is has_openmp, extension.name
        # without OpenMP, `cimport openmp` finds the one-thread <omp.h> first
        assert (extension.include_dirs[0] == stand_in_folder) is not has_openmp, extension.name
    assert any("Cython kernels run single-threaded" in str(w.message) for w in recwarn) is not has_openmp


@pytest.mark.parametrize("flag", ["MANY_ALIAS_CHECKS", "NO_TRAPPING_MATH"])
def test_the_vectorization_flags_are_passed_where_the_compiler_knows_them(setup_module, flag):
    accepts = setup_module["compiler_accepts"]
    compiler = setup_module["default_compiler"]()
    assert accepts(compiler, setup_module[flag]) is True  # gcc, as in CI
    assert accepts(compiler, "--param=no-such-parameter=1") is False
    assert setup_module[flag] in setup_module["compile_args"]


def test_every_kernel_extension_finds_the_micro_kernel_header(setup_module):
    """conv_tile.h is included from kernels/, and a change to it rebuilds the kernels."""
    for build in setup_module["ISA_FLAGS"]:
        for extension in setup_module["build_extensions"](build):
            assert "kernels" in extension.include_dirs, extension.name
            assert "kernels/conv_tile.h" in extension.depends, extension.name
