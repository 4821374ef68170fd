"""Build the Cython kernels; all metadata lives in pyproject.toml.

Set FASTCONV_NATIVE=1 to compile with -march=native (faster on the build
machine, not portable to older CPUs).
"""
import glob
import os
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


def kernel_extension(name):
    return Extension(
        f"fastconv.kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[numpy.get_include()],
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
