"""Build the Cython kernels; all metadata lives in pyproject.toml.

Set FASTCONV_NATIVE=1 to compile with -march=native (faster on the build
machine, not portable to older CPUs).
"""
import glob
import os
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# setuptools' own distutils (importing setuptools above makes it the one found).
from distutils.ccompiler import new_compiler  # noqa: E402
from distutils.errors import CompileError, LinkError  # noqa: E402
from distutils.sysconfig import customize_compiler  # noqa: E402

# Stand-in for <omp.h> when the compiler has no OpenMP: the kernels
# `cimport openmp`, which includes the header whatever the flags, and call
# omp_get_max_threads(); without OpenMP prange loops run serially.
NO_OPENMP_DIR = os.path.join("build", "no-openmp")
NO_OPENMP_HEADER = "static inline int omp_get_max_threads(void) { return 1; }\n"
NO_OPENMP_WARNING = (
    "the C compiler does not accept -fopenmp (Apple's clang does not): building fastconv without "
    "OpenMP, so the Cython kernels run single-threaded (Numba's still use every core). For threads, "
    "build with a compiler that has OpenMP, e.g. CC=gcc-14 from Homebrew, or install libomp."
)


def compiler_accepts_openmp(compiler) -> bool:
    """Whether ``compiler`` (a distutils CCompiler) compiles and links a
    small OpenMP program with ``-fopenmp``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "omp_probe.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, "omp_probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        except (CompileError, LinkError):
            return False
    return True


def openmp_options(accepts_openmp: bool) -> dict:
    """Extension arguments for OpenMP: ``-fopenmp`` when the compiler takes
    it; otherwise the one-thread <omp.h> stand-in, with a warning."""
    if accepts_openmp:
        return {"extra_compile_args": ["-fopenmp"], "extra_link_args": ["-fopenmp"], "include_dirs": []}
    warnings.warn(NO_OPENMP_WARNING, stacklevel=2)
    os.makedirs(NO_OPENMP_DIR, exist_ok=True)
    with open(os.path.join(NO_OPENMP_DIR, "omp.h"), "w") as f:
        f.write(NO_OPENMP_HEADER)
    return {"extra_compile_args": [], "extra_link_args": [], "include_dirs": [NO_OPENMP_DIR]}


def default_compiler():
    compiler = new_compiler()
    customize_compiler(compiler)
    return compiler


openmp = {"extra_compile_args": [], "extra_link_args": [], "include_dirs": []}
if sys.platform != "win32":
    openmp = openmp_options(compiler_accepts_openmp(default_compiler()))
compile_args = ["-O3", *openmp["extra_compile_args"]]
link_args = openmp["extra_link_args"]
if os.environ.get("FASTCONV_NATIVE") == "1":
    compile_args.append("-march=native")


def kernel_extension(name):
    return Extension(
        f"fastconv.kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[*openmp["include_dirs"], numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(
    ext_modules=cythonize(
        [
            kernel_extension(os.path.splitext(os.path.basename(source))[0])
            for source in sorted(glob.glob("kernels/*.pyx"))
        ],
        compiler_directives={"language_level": "3"},
    )
)
