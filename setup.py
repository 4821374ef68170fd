"""Build the Cython kernels; all metadata lives in pyproject.toml.

On x86-64 every kernel module is compiled three times: for the compiler's
baseline (SSE2), for AVX2 + FMA, and for AVX-512 (F, CD, BW, DQ, VL), as
``fastconv.kernels.<module>``, ``fastconv.kernels.avx2.<module>`` and
``fastconv.kernels.avx512.<module>``. fastconv.isa loads the best build the
CPU runs. Set FASTCONV_NATIVE=1 to add -march=native to every build
(faster on the build machine still, not portable to older CPUs).
"""
import glob
import os
import platform
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


def _probe(compiler, code: str, flags: list, link: bool) -> bool:
    """Whether ``compiler`` (a distutils CCompiler) compiles the C program
    ``code`` with ``flags`` (and, if ``link``, links it with them too)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(code)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            if link:
                compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except (CompileError, LinkError):
            return False
    return True


def compiler_accepts_openmp(compiler) -> bool:
    """Whether ``compiler`` compiles and links a small OpenMP program with
    ``-fopenmp``."""
    return _probe(compiler, "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n",
                  ["-fopenmp"], link=True)


def compiler_accepts(compiler, flag: str) -> bool:
    """Whether ``compiler`` compiles a small C file with ``flag`` without a
    warning (compilers warn about options they do not know)."""
    return _probe(compiler, "int probe(void) { return 0; }\n", ["-Werror", flag], link=False)


# gcc vectorizes a loop over several arrays only after checking at run time
# that they do not overlap, and by default gives up past 10 such checks. The
# vectorized fused forward updates four accumulator rows from four weight
# rows in one loop: without this it ran scalar, 8.7 ms instead of 2.4 ms at
# conv2's shape (batch 64, AVX-512 build).
MANY_ALIAS_CHECKS = "--param=vect-max-version-for-alias-checks=64"

# gcc assumes by default that a float comparison may trap (raise a floating
# point exception), and then will not turn a loop's branches on compared
# values into selects, so the loop does not vectorize: the fused op's 2x2
# ReLU-max-pool ran scalar ("control flow in loop"). fastconv never reads
# the exception flags; NaN and infinity behave as before (clang's default).
NO_TRAPPING_MATH = "-fno-trapping-math"


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
for flag in (MANY_ALIAS_CHECKS, NO_TRAPPING_MATH):
    if sys.platform != "win32" and compiler_accepts(default_compiler(), flag):
        compile_args.append(flag)
link_args = openmp["extra_link_args"]
if os.environ.get("FASTCONV_NATIVE") == "1":
    compile_args.append("-march=native")

# Build name -> extra flags (names and requirements as in fastconv/isa.py).
ISA_FLAGS = {"baseline": []}
if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
    ISA_FLAGS["avx2"] = ["-mavx2", "-mfma"]
    ISA_FLAGS["avx512"] = ["-mavx2", "-mfma", "-mavx512f", "-mavx512cd", "-mavx512bw",
                           "-mavx512dq", "-mavx512vl"]


def kernel_extension(name, build):
    package = "fastconv.kernels" if build == "baseline" else f"fastconv.kernels.{build}"
    return Extension(
        f"{package}.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[*openmp["include_dirs"], numpy.get_include(), "kernels"],
        depends=glob.glob("kernels/*.h"),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + ISA_FLAGS[build],
        extra_link_args=link_args,
    )


def build_extensions(build):
    """Every kernels/*.pyx for one instruction set, its C in its own folder.
    The build's package folder exists in the source tree too, because an
    editable install (``pip install -e .``) writes the modules in place."""
    if build != "baseline":
        os.makedirs(os.path.join("kernels", build), exist_ok=True)
    modules = [os.path.splitext(os.path.basename(source))[0] for source in sorted(glob.glob("kernels/*.pyx"))]
    return cythonize([kernel_extension(name, build) for name in modules],
                     build_dir=os.path.join("build", f"cython-{build}"),
                     compiler_directives={"language_level": "3"})


setup(ext_modules=[ext for build in ISA_FLAGS for ext in build_extensions(build)])
