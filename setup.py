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

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O3"]
link_args = []
if sys.platform != "win32":
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
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
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + ISA_FLAGS[build],
        extra_link_args=link_args,
    )


def build_extensions(build):
    """Every kernels/*.pyx for one instruction set, its C in its own folder."""
    modules = [os.path.splitext(os.path.basename(source))[0] for source in sorted(glob.glob("kernels/*.pyx"))]
    return cythonize([kernel_extension(name, build) for name in modules],
                     build_dir=os.path.join("build", f"cython-{build}"),
                     compiler_directives={"language_level": "3"})


setup(ext_modules=[ext for build in ISA_FLAGS for ext in build_extensions(build)])
