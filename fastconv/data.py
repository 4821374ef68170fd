"""MNIST and Fashion-MNIST: find, download, read and validate the IDX files.

Where the files are looked for, first match wins:

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the ``FASTCONV_DATA`` environment variable;
3. the download cache: ``$FASTCONV_CACHE/<name>`` if ``FASTCONV_CACHE`` is
   set, else the per-user cache ``pooch.os_cache("fastconv") / <name>``
   (``~/.cache/fastconv/mnist`` on Linux).

A directory named by 1 or 2 must hold the four files itself; fastconv reads it
and never writes to it (it may be shared or read-only), so missing files there
are an error, not a download. Only the cache is downloaded into, and only the
files it lacks: each is checked against the SHA-256/MD5 registered below, then
moved into place, so a failed or corrupted download leaves nothing behind.
Base URLs can be overridden with ``FASTCONV_MNIST_URL`` and
``FASTCONV_FASHION_MNIST_URL`` (e.g. for a local mirror).

Each of the four files, ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``, may also be stored uncompressed, without the
``.gz``. Files are checked structurally (IDX header, exact length, image size,
label range) whatever directory they come from; checksums verify downloads.

A directory holds one dataset: since MNIST and Fashion-MNIST use the same
file names, a file that carries another dataset's registered checksum (say,
MNIST's labels asked for as Fashion-MNIST) is refused. The sums are those of
the published ``.gz`` files, compared as stored: one recompressed file (like
the shared folder's MNIST train-images, same content in another gzip stream)
does not hide the other three, but a set that was entirely recompressed or
decompressed is not recognised and only checked structurally.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pooch

from fastconv import settings

__all__ = ["DATASETS", "DataFileError", "Dataset", "load_dataset", "read_idx"]

FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class _Source:
    title: str
    url_variable: str
    default_url: str
    hashes: dict  # file name -> pooch known_hash ("<hex>" is SHA-256, "md5:<hex>")
    classes: tuple


_SOURCES = {
    "mnist": _Source(
        title="MNIST",
        url_variable=settings.MNIST_URL,
        # The mirror PyTorch uses; it serves the original LeCun files. Their
        # published SHA-256 sums; the last three equal those of the files in
        # the project's shared data folder, whose train-images is a recompressed
        # copy (same 47040016 decompressed bytes, different gzip stream).
        default_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        hashes={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        classes=tuple(str(digit) for digit in range(NUM_CLASSES)),
    ),
    "fashion-mnist": _Source(
        title="Fashion-MNIST",
        url_variable=settings.FASHION_MNIST_URL,
        # Zalando's official bucket (HTTP only: it is an S3 website endpoint,
        # hence the checksums). MD5 sums as published in torchvision's
        # datasets/mnist.py (FashionMNIST.resources).
        default_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        hashes={
            "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
}
DATASETS = tuple(_SOURCES)

# IDX type code (third byte of the magic number) -> big-endian element type.
_IDX_TYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "int16"),
    0x0C: (">i4", "int32"),
    0x0D: (">f4", "float32"),
    0x0E: (">f8", "float64"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(ValueError):
    """A data file is malformed: bad header, wrong length, corrupt gzip,
    failed checksum, or contents that are not MNIST-shaped."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset, normalised for training.

    x_train: (N_train, 1, 28, 28) float32 in [0, 1]; y_train: (N_train,) int64
    in 0..9; likewise x_test, y_test. N_train = 60000, N_test = 10000 for the
    standard files. ``directory`` is where the files were read from and
    ``classes[k]`` names label k.
    """

    name: str
    directory: Path
    classes: tuple
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)


# ------------------------------------------------------------------ reading


def _file_bytes(path: Path) -> bytes:
    """The file's contents, decompressed if it starts with the gzip magic."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataFileError(f"{path} is a corrupt gzip file ({error})") from None


def _size_phrase(dims, itemsize) -> str:
    shape = "x".join(str(d) for d in dims)
    count = math.prod(dims)
    if itemsize == 1:
        return f"{shape} = {count} bytes"
    return f"{shape} values of {itemsize} bytes = {count * itemsize} bytes"


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not; detected from its first bytes).

    IDX layout: two zero bytes, a type code (0x08 unsigned byte ... 0x0E
    float64), the number of dimensions (1-4), each dimension as a big-endian
    uint32, then the values in C order. Returns a writable native-endian array
    of those dimensions (uint8 for MNIST). Anything that does not match that
    layout exactly, including truncated or trailing data, raises
    :class:`DataFileError` naming the file.
    """
    path = Path(path)
    content = _file_bytes(path)
    if len(content) < 4:
        raise DataFileError(
            f"{path} is too short to be an IDX file: {len(content)} bytes, "
            "the header alone needs at least 8"
        )
    if content[:2] != b"\0\0":
        raise DataFileError(
            f"{path} is not an IDX file: it starts with bytes {content[:4].hex()}, "
            "expected 0000 followed by a type code and a dimension count "
            "(00000803 for images, 00000801 for labels)"
        )
    type_code, ndim = content[2], content[3]
    if type_code not in _IDX_TYPES:
        supported = ", ".join(f"0x{code:02x} ({label})" for code, (_, label) in _IDX_TYPES.items())
        raise DataFileError(f"{path} has unknown IDX type code 0x{type_code:02x}; known: {supported}")
    if not 1 <= ndim <= 4:
        raise DataFileError(f"{path} declares {ndim} dimensions; IDX files here have 1 to 4")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataFileError(
            f"{path} is truncated: its header needs {header_size} bytes for {ndim} "
            f"dimensions, found {len(content)}"
        )
    dims = struct.unpack(f">{ndim}I", content[4:header_size])
    dtype = np.dtype(_IDX_TYPES[type_code][0])
    expected = math.prod(dims) * dtype.itemsize
    found = len(content) - header_size
    if found != expected:
        problem = "is truncated" if found < expected else f"has {found - expected} trailing bytes"
        raise DataFileError(
            f"{path} {problem}: header says {_size_phrase(dims, dtype.itemsize)}, found {found}"
        )
    values = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(dims)
    return values.astype(dtype.newbyteorder("="))  # astype copies: writable, native order


def _read_split(images_path: Path, labels_path: Path):
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64, after
    checking the pair describes N labelled 28x28 unsigned-byte images."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SIZE:
        raise DataFileError(
            f"{images_path} should hold unsigned-byte images of shape (N, 28, 28), "
            f"found {images.dtype} values of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFileError(
            f"{labels_path} should hold unsigned-byte labels of shape (N,), "
            f"found {labels.dtype} values of shape {labels.shape}"
        )
    if len(labels) != len(images):
        raise DataFileError(
            f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} images"
        )
    out_of_range = np.flatnonzero(labels >= NUM_CLASSES)
    if out_of_range.size:
        first = out_of_range[0]
        raise DataFileError(
            f"{labels_path} holds label {labels[first]} at index {first} "
            f"({out_of_range.size} labels out of range); labels must be 0..{NUM_CLASSES - 1}"
        )
    x = images.reshape(len(images), 1, *IMAGE_SIZE).astype(np.float32)
    x /= 255
    return x, labels.astype(np.int64)


# --------------------------------------------------------- finding, download


def _source(name: str) -> _Source:
    try:
        return _SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def _cache_dir(name: str) -> Path:
    return settings.cache_dir() / name


def _find_files(directory: Path):
    """({standard name: path found}, [standard names not found]); each file
    may be stored as named or uncompressed, without ``.gz``."""
    found, missing = {}, []
    for file_name in FILE_NAMES:
        candidates = (directory / file_name, directory / file_name.removesuffix(".gz"))
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            missing.append(file_name)
        else:
            found[file_name] = path
    return found, missing


def _refuse_other_datasets(source: _Source, found: dict) -> None:
    """Raise DataFileError if a file in ``found`` ({standard name: path}) is
    byte-identical to the published file of another registered dataset."""
    for file_name, path in found.items():
        if path.name != file_name:  # stored uncompressed: the registered sums are of the .gz
            continue
        for other in _SOURCES.values():
            if other is not source and pooch.hashes.hash_matches(str(path), other.hashes[file_name]):
                raise DataFileError(
                    f"{path} is the {other.title} file {file_name} (its checksum is the one registered "
                    f"for {other.title}), not {source.title}: name a directory that holds {source.title}, "
                    f"or load {other.title} instead"
                )


def _where_to_put_files(source: _Source, cache_dir: Path) -> str:
    return (
        f"To use {source.title} offline, put the files {', '.join(FILE_NAMES)} "
        f"(gzipped, or uncompressed without .gz) into {cache_dir}, or into any "
        "directory and name it with --data-dir (data_dir= in Python) or the "
        f"FASTCONV_DATA environment variable. To download from another mirror, set "
        f"{source.url_variable} to its base URL."
    )


def _download(source: _Source, file_names, cache_dir: Path, progress: bool):
    """Fetch ``file_names`` into ``cache_dir``, each verified against the
    registry before it is moved into place; returns {name: path}."""
    import requests  # pooch's HTTP client; imported here to keep import time low

    base_url = (settings.download_url(source.url_variable) or source.default_url).rstrip("/") + "/"
    paths = {}
    for file_name in file_names:
        url = base_url + file_name
        try:
            paths[file_name] = Path(
                pooch.retrieve(
                    url,
                    known_hash=source.hashes[file_name],
                    fname=file_name,
                    path=cache_dir,
                    progressbar=progress,
                )
            )
        except requests.exceptions.RequestException as error:
            raise FileNotFoundError(
                f"{source.title} is not in {cache_dir} and downloading {url} failed "
                f"({type(error).__name__}: {error}).\n{_where_to_put_files(source, cache_dir)}"
            ) from None
        except ValueError as error:  # pooch's checksum mismatch
            raise DataFileError(f"{url}: {error}") from None
    return paths


def load_dataset(name="mnist", data_dir=None, *, download=True, progress=True) -> Dataset:
    """Load ``name`` ("mnist" or "fashion-mnist") as a :class:`Dataset`.

    Looks in ``data_dir``, else ``$FASTCONV_DATA``, else the download cache
    (see the module docstring). A directory named by ``data_dir`` or
    ``$FASTCONV_DATA`` must hold the files: fastconv never downloads into it.
    Files missing from the cache are downloaded (with a progress bar if
    ``progress``) when ``download`` is true.

    Raises ValueError for an unknown name, FileNotFoundError when the files
    are neither present nor downloadable (the message says where to put them),
    DataFileError when a file is malformed, fails its checksum, or is another
    dataset's (see the module docstring).
    """
    source = _source(name)
    cache_dir = _cache_dir(name)
    if data_dir is not None:
        directory, named_by = Path(data_dir).expanduser(), "the data_dir argument (--data-dir)"
    elif settings.data_dir() is not None:
        directory, named_by = settings.data_dir(), "$FASTCONV_DATA"
    else:
        directory, named_by = cache_dir, None

    found, missing = _find_files(directory)
    if missing and named_by is not None:
        raise FileNotFoundError(
            f"{source.title} files missing in {directory} (named by {named_by}): "
            f"{', '.join(missing)} (each may also be uncompressed, without .gz). "
            "fastconv downloads only into its cache, never into a directory you name: "
            f"put the files there, or leave {named_by} unset to download into {cache_dir}."
        )
    if missing and not download:
        raise FileNotFoundError(
            f"{source.title} files missing in {directory} and download=False: "
            f"{', '.join(missing)}.\n{_where_to_put_files(source, cache_dir)}"
        )
    _refuse_other_datasets(source, found)
    if missing:
        found.update(_download(source, missing, directory, progress))

    x_train, y_train = _read_split(found[FILE_NAMES[0]], found[FILE_NAMES[1]])
    x_test, y_test = _read_split(found[FILE_NAMES[2]], found[FILE_NAMES[3]])
    return Dataset(
        name=name,
        directory=directory,
        classes=source.classes,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
