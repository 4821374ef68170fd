"""Every ``FASTCONV_*`` environment variable, read in this one place.

Each function reads its variable when called (never once at import), so a
test or a program may change the environment between calls. An empty or
blank value counts as unset. What a value must be is checked where it is
used (the thread count by :mod:`fastconv.threads`, a backend name by
:mod:`fastconv.autotune`), with a message naming the variable.

``FASTCONV_NATIVE`` is the one variable read elsewhere: by ``setup.py``, at
build time, before the package exists.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE = "FASTCONV_CACHE"
DATA = "FASTCONV_DATA"
NUM_THREADS = "FASTCONV_NUM_THREADS"
BACKEND = "FASTCONV_BACKEND"
ALGORITHM = "FASTCONV_ALGORITHM"
ISA = "FASTCONV_ISA"
DEBUG = "FASTCONV_DEBUG"
MNIST_URL = "FASTCONV_MNIST_URL"
FASHION_MNIST_URL = "FASTCONV_FASHION_MNIST_URL"

VARIABLES = {
    DATA: "folder with the four IDX files of the dataset asked for (like `--data-dir`)",
    CACHE: "cache folder for downloads and `auto` choices (default: the per-user cache, "
           "`~/.cache/fastconv` on Linux); `~` and `$VARS` are expanded",
    MNIST_URL: "download mirror for MNIST",
    FASHION_MNIST_URL: "download mirror for Fashion-MNIST",
    NUM_THREADS: "threads for Numba, OpenMP and BLAS (default: every core)",
    BACKEND: "force a backend wherever the code says `auto`",
    ALGORITHM: "force an algorithm wherever the code says `auto`",
    ISA: "the Cython build to load: `baseline`, `avx2` or `avx512` (default: the best this CPU runs)",
    DEBUG: "`1`: log each `auto` choice with the timings it rests on (logger `fastconv`, on stderr)",
}
"""What each variable does, as the README's table says it."""


def raw(name: str) -> str | None:
    """The value of ``name`` stripped of surrounding blanks, or None when it
    is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def _folder(name: str) -> Path | None:
    value = raw(name)
    return None if value is None else Path(os.path.expandvars(value)).expanduser()


def cache_dir() -> Path:
    """The folder of everything fastconv caches (downloads, ``auto``
    choices): ``FASTCONV_CACHE`` with ``~`` and ``$VARS`` expanded, else the
    per-user cache of the OS."""
    folder = _folder(CACHE)
    if folder is None:
        import pooch

        folder = Path(pooch.os_cache("fastconv"))
    return folder


def data_dir() -> Path | None:
    """``FASTCONV_DATA`` (expanded), a folder of IDX files, or None."""
    return _folder(DATA)


def num_threads() -> str | None:
    """``FASTCONV_NUM_THREADS`` as written (checked by :mod:`fastconv.threads`)."""
    return raw(NUM_THREADS)


def forced_backend() -> str | None:
    return raw(BACKEND)


def forced_algorithm() -> str | None:
    return raw(ALGORITHM)


def isa_build() -> str | None:
    """``FASTCONV_ISA``, the Cython build asked for (checked by :mod:`fastconv.isa`)."""
    return raw(ISA)


def debug() -> bool:
    """Whether ``FASTCONV_DEBUG`` asks for the ``auto`` log (any value but
    ``0``, ``false``, ``no`` or ``off``)."""
    value = raw(DEBUG)
    return value is not None and value.lower() not in ("0", "false", "no", "off")


def download_url(variable: str) -> str | None:
    """A download mirror's base URL from ``variable`` (one of the ``*_URL`` names)."""
    if variable not in (MNIST_URL, FASHION_MNIST_URL):
        raise ValueError(f"{variable} is not one of fastconv's mirror variables")
    return raw(variable)
