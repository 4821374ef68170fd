"""fastconv.data: lookup order, IDX parsing and validation, download and cache.

Real MNIST comes from the shared folder beside the repository (read-only: the
tests only read it); malformed files are written to tmp_path; downloads come
from a local HTTP server, never the internet.
"""
import contextlib
import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from fastconv import data
from fastconv.data import DataFileError, load_dataset, read_idx

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not all((SHARED_MNIST / name).is_file() for name in data.FILE_NAMES),
    reason=f"the MNIST files are not in {SHARED_MNIST}",
)

# Well-known facts about the standard MNIST files.
MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """No test sees the caller's data settings or touches the real user cache."""
    for variable in ("FASTCONV_DATA", "FASTCONV_MNIST_URL", "FASTCONV_FASHION_MNIST_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist():
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"the MNIST files are not in {SHARED_MNIST}")
    return load_dataset("mnist", SHARED_MNIST, download=False)


def idx_bytes(values, type_code=0x08, dims=None):
    """An IDX file for ``values`` (big-endian), with its header's ``dims``
    overridable to build inconsistent files."""
    values = np.asarray(values)
    dims = values.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def write_small_dataset(directory, train_images=None, train_labels=None, n_train=6, n_test=4):
    """Four valid small MNIST-shaped files (gzipped) in ``directory``; the
    train pair can be replaced by given IDX bytes."""
    rng = np.random.default_rng(0)
    contents = {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_train, dtype=np.uint8) % 10),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_test, dtype=np.uint8) % 10),
    }
    if train_images is not None:
        contents["train-images-idx3-ubyte.gz"] = train_images
    if train_labels is not None:
        contents["train-labels-idx1-ubyte.gz"] = train_labels
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (directory / name).write_bytes(gzip.compress(content))
    return directory


# ------------------------------------------------------------ real MNIST


@needs_mnist
def test_mnist_from_data_dir_has_the_standard_shapes_and_contents(mnist):
    assert mnist.name == "mnist"
    assert mnist.directory == SHARED_MNIST
    assert mnist.classes == tuple("0123456789")
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_train.dtype == np.float32
    assert mnist.x_test.shape == (10000, 1, 28, 28) and mnist.x_test.dtype == np.float32
    assert mnist.y_train.shape == (60000,) and mnist.y_train.dtype == np.int64
    assert mnist.y_test.shape == (10000,) and mnist.y_test.dtype == np.int64
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    assert mnist.y_train[0] == 5 and mnist.y_test[0] == 7
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_CLASS_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_CLASS_COUNTS


@needs_mnist
def test_pixels_are_the_raw_bytes_divided_by_255(mnist):
    raw = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    assert raw.dtype == np.uint8 and raw.shape == (10000, 28, 28)
    np.testing.assert_array_equal(mnist.x_test[:, 0], raw.astype(np.float32) / np.float32(255))


@needs_mnist
def test_fastconv_data_variable_names_the_directory(monkeypatch, mnist):
    monkeypatch.setenv("FASTCONV_DATA", str(SHARED_MNIST))
    loaded = load_dataset("mnist", download=False)
    assert loaded.directory == SHARED_MNIST
    np.testing.assert_array_equal(loaded.y_train, mnist.y_train)
    np.testing.assert_array_equal(loaded.x_test, mnist.x_test)


@needs_mnist
def test_data_dir_argument_wins_over_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "empty"))
    assert load_dataset("mnist", SHARED_MNIST, download=False).directory == SHARED_MNIST


@needs_mnist
def test_uncompressed_files_read_the_same_as_gzipped(tmp_path, mnist):
    for name in data.FILE_NAMES:
        raw_name = name.removesuffix(".gz")
        (tmp_path / raw_name).write_bytes(gzip.decompress((SHARED_MNIST / name).read_bytes()))
    loaded = load_dataset("mnist", tmp_path, download=False)
    for split in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, split), getattr(mnist, split))


# ------------------------------------------------------------- read_idx


@pytest.mark.parametrize(
    ("values", "type_code"),
    [
        (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
        (np.array([-5, 7, 100000], dtype=np.int32), 0x0C),
        (np.array([[1.5, -2.25]], dtype=np.float64), 0x0E),
    ],
)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trips(tmp_path, values, type_code, compress):
    content = idx_bytes(values, type_code)
    path = tmp_path / "values.idx"  # the name says nothing: gzip is detected from the bytes
    path.write_bytes(gzip.compress(content) if compress else content)
    read = read_idx(path)
    assert read.dtype == values.dtype.newbyteorder("=") and read.flags.writeable
    np.testing.assert_array_equal(read, values)


IMAGES = np.zeros((3, 28, 28), dtype=np.uint8)


def _flip_middle_byte(content):
    middle = len(content) // 2
    return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1:]


BAD_IDX_FILES = {
    "truncated": (
        idx_bytes(IMAGES)[:-100],
        r"is truncated: header says 3x28x28 = 2352 bytes, found 2252",
    ),
    "trailing bytes": (idx_bytes(IMAGES) + b"\0\0\0", r"has 3 trailing bytes"),
    "not IDX": (b"\x89PNG\r\n\x1a\n" + bytes(100), r"is not an IDX file"),
    "unknown type": (idx_bytes(IMAGES, type_code=0x0A), r"unknown IDX type code 0x0a"),
    "five dimensions": (
        idx_bytes(IMAGES.reshape(1, 1, 3, 28, 28)),
        r"declares 5 dimensions",
    ),
    "zero dimensions": (bytes([0, 0, 8, 0]), r"declares 0 dimensions"),
    "header cut": (idx_bytes(IMAGES)[:10], r"is truncated: its header needs 16 bytes"),
    "empty": (b"", r"too short to be an IDX file"),
    "wide values truncated": (
        idx_bytes(np.arange(6, dtype=np.int32), type_code=0x0C)[:-1],
        r"header says 6 values of 4 bytes = 24 bytes, found 23",
    ),
    "gzip bit flip": (_flip_middle_byte(gzip.compress(idx_bytes(IMAGES + 7))), r"corrupt gzip"),
    "gzip cut short": (gzip.compress(idx_bytes(IMAGES))[:-20], r"corrupt gzip"),
}


@pytest.mark.parametrize("case", BAD_IDX_FILES)
def test_malformed_idx_file_raises_data_file_error_naming_it(tmp_path, case):
    content, problem = BAD_IDX_FILES[case]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=problem) as raised:
        read_idx(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, ValueError)


# ------------------------------------------------- dataset-level checks


def test_small_valid_dataset_loads_and_normalises(tmp_path):
    white = np.full((2, 28, 28), 255, dtype=np.uint8)
    directory = write_small_dataset(tmp_path / "small", train_images=idx_bytes(white),
                                    train_labels=idx_bytes(np.array([3, 9], dtype=np.uint8)))
    loaded = load_dataset("fashion-mnist", directory, download=False)
    assert loaded.classes[0] == "T-shirt/top" and loaded.classes[9] == "Ankle boot"
    assert loaded.x_train.shape == (2, 1, 28, 28)
    assert np.all(loaded.x_train == 1.0)
    assert loaded.y_train.tolist() == [3, 9]
    assert loaded.x_test.shape == (4, 1, 28, 28) and loaded.y_test.shape == (4,)


BAD_DATASETS = {
    "label out of range": (
        {"train_labels": idx_bytes(np.array([0, 1, 2, 10, 4, 5], dtype=np.uint8))},
        "train-labels-idx1-ubyte.gz",
        r"holds label 10 at index 3",
    ),
    "count mismatch": (
        {"train_labels": idx_bytes(np.arange(5, dtype=np.uint8))},
        "train-labels-idx1-ubyte.gz",
        r"holds 5 labels but .*train-images-idx3-ubyte.gz holds 6 images",
    ),
    "wrong image size": (
        {"train_images": idx_bytes(np.zeros((6, 28, 27), dtype=np.uint8))},
        "train-images-idx3-ubyte.gz",
        r"shape \(N, 28, 28\), found uint8 values of shape \(6, 28, 27\)",
    ),
    "float images": (
        {"train_images": idx_bytes(np.zeros((6, 28, 28), dtype=np.float32), type_code=0x0D)},
        "train-images-idx3-ubyte.gz",
        r"unsigned-byte images",
    ),
    "labels not 1-D": (
        {"train_labels": idx_bytes(np.zeros((6, 1), dtype=np.uint8))},
        "train-labels-idx1-ubyte.gz",
        r"labels of shape \(N,\), found uint8 values of shape \(6, 1\)",
    ),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_inconsistent_dataset_raises_data_file_error_naming_the_file(tmp_path, case):
    replaced, culprit, problem = BAD_DATASETS[case]
    directory = write_small_dataset(tmp_path / "bad", **replaced)
    with pytest.raises(DataFileError, match=problem) as raised:
        load_dataset("mnist", directory, download=False)
    assert str(directory / culprit) in str(raised.value)


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'; choose one of mnist, fashion-mnist"):
        load_dataset("cifar10")


# ------------------------------------------------------ download, cache


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requested.append(self.path.lstrip("/"))
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server over a copy of the four MNIST files, registered
    as the MNIST mirror; ``.directory`` is what it serves, ``.requested``
    the file names asked for."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"the MNIST files are not in {SHARED_MNIST}")
    served = tmp_path / "mirror"
    served.mkdir()
    for name in data.FILE_NAMES:
        shutil.copyfile(SHARED_MNIST / name, served / name)
        # The registry holds the hashes of the files the public mirror serves;
        # the shared train-images is a recompressed copy, so register what
        # this server serves.
        digest = hashlib.sha256((served / name).read_bytes()).hexdigest()
        monkeypatch.setitem(data._SOURCES["mnist"].hashes, name, digest)
    with serving(served, monkeypatch, "FASTCONV_MNIST_URL") as server:
        yield server


@contextlib.contextmanager
def serving(directory, monkeypatch, url_variable):
    """A local HTTP server (127.0.0.1 only) over ``directory``, registered as
    the mirror in ``url_variable``; ``.requested`` lists the names asked for."""
    handler = functools.partial(_CountingHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requested = []
    server.directory = directory
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(url_variable, f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_verifies_then_loads_and_second_call_uses_the_cache(tmp_path, mirror, mnist):
    cache = tmp_path / "cache" / "mnist"
    first = load_dataset("mnist", progress=True)
    assert first.directory == cache
    assert sorted(mirror.requested) == sorted(data.FILE_NAMES)
    for name in data.FILE_NAMES:
        assert (cache / name).read_bytes() == (mirror.directory / name).read_bytes()
    np.testing.assert_array_equal(first.y_train, mnist.y_train)
    np.testing.assert_array_equal(first.x_test, mnist.x_test)

    second = load_dataset("mnist", progress=False)
    assert len(mirror.requested) == len(data.FILE_NAMES)  # nothing fetched again
    np.testing.assert_array_equal(second.y_test, mnist.y_test)


def test_only_the_files_missing_from_the_cache_are_downloaded(tmp_path, mirror):
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in data.FILE_NAMES[1:]:
        shutil.copyfile(SHARED_MNIST / name, cache / name)
    load_dataset("mnist", progress=False)
    assert mirror.requested == [data.FILE_NAMES[0]]


def test_download_with_wrong_contents_fails_checksum_and_leaves_nothing(tmp_path, mirror):
    bad = "t10k-labels-idx1-ubyte.gz"
    served = mirror.directory / bad
    served.write_bytes(_flip_middle_byte(served.read_bytes()))
    with pytest.raises(DataFileError, match=r"SHA256 hash of downloaded file .* does not match") as raised:
        load_dataset("mnist", progress=False)
    assert bad in str(raised.value)
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / bad).exists()
    assert {p.name for p in cache.iterdir()} <= set(data.FILE_NAMES) - {bad}


def test_unreachable_mirror_says_where_to_put_the_files(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("FASTCONV_MNIST_URL", f"http://127.0.0.1:{port}")
    cache = tmp_path / "cache" / "mnist"
    with pytest.raises(FileNotFoundError) as raised:
        load_dataset("mnist", progress=False)
    message = str(raised.value)
    assert f"downloading http://127.0.0.1:{port}/train-images-idx3-ubyte.gz failed" in message
    for expected in (str(cache), *data.FILE_NAMES, "FASTCONV_DATA", "--data-dir", "FASTCONV_MNIST_URL"):
        assert expected in message
    assert not any(cache.glob("*idx*"))


def test_named_directory_without_files_is_an_error_not_a_download(tmp_path, mirror):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"files missing in .*empty \(named by the data_dir argument") as raised:
        load_dataset("mnist", empty)
    assert all(name in str(raised.value) for name in data.FILE_NAMES)
    assert mirror.requested == []
    assert list(empty.iterdir()) == []


def test_download_false_with_an_empty_cache_fetches_nothing(tmp_path, mirror):
    with pytest.raises(FileNotFoundError, match=r"download=False") as raised:
        load_dataset("mnist", download=False)
    assert str(tmp_path / "cache" / "mnist") in str(raised.value)
    assert mirror.requested == []


def test_each_dataset_has_its_own_cache_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        load_dataset("fashion-mnist", download=False)
    message = str(raised.value)
    assert str(tmp_path / "cache" / "fashion-mnist") in message
    assert "FASTCONV_FASHION_MNIST_URL" in message


def test_a_missing_file_on_the_mirror_is_a_download_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with serving(empty, monkeypatch, "FASTCONV_MNIST_URL") as server:
        with pytest.raises(FileNotFoundError) as raised:
            load_dataset("mnist", progress=False)
    url = f"http://127.0.0.1:{server.server_address[1]}/train-images-idx3-ubyte.gz"
    assert f"downloading {url} failed (HTTPError: 404 Client Error" in str(raised.value)
    assert server.requested == ["train-images-idx3-ubyte.gz"]
    assert not any((tmp_path / "cache" / "mnist").glob("*idx*"))


def test_fashion_mnist_downloads_are_checked_with_md5(tmp_path, monkeypatch):
    served = write_small_dataset(tmp_path / "fashion-mirror")
    for name in data.FILE_NAMES:
        md5 = hashlib.md5((served / name).read_bytes()).hexdigest()
        monkeypatch.setitem(data._SOURCES["fashion-mnist"].hashes, name, f"md5:{md5}")
    with serving(served, monkeypatch, "FASTCONV_FASHION_MNIST_URL"):
        fashion = load_dataset("fashion-mnist", progress=False)
        assert fashion.directory == tmp_path / "cache" / "fashion-mnist"
        assert fashion.classes[9] == "Ankle boot" and fashion.x_train.shape == (6, 1, 28, 28)

        bad = served / "t10k-labels-idx1-ubyte.gz"
        bad.write_bytes(_flip_middle_byte(bad.read_bytes()))
        (fashion.directory / bad.name).unlink()
        with pytest.raises(DataFileError, match=r"MD5 hash of downloaded file .* does not match"):
            load_dataset("fashion-mnist", progress=False)
    assert not (fashion.directory / bad.name).exists()


@pytest.mark.parametrize("name", data.FILE_NAMES[1:])
def test_shipped_sha256_sums_match_the_published_mnist_files(name):
    """The shared folder's copies of these three are the published files
    byte for byte (its train-images is recompressed, so it cannot check the
    first sum)."""
    path = SHARED_MNIST / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data._SOURCES["mnist"].hashes[name]


@needs_mnist
@pytest.mark.parametrize("named_by", ["data_dir", "FASTCONV_DATA"])
def test_mnist_files_are_refused_as_fashion_mnist(monkeypatch, named_by):
    if named_by == "FASTCONV_DATA":
        monkeypatch.setenv("FASTCONV_DATA", str(SHARED_MNIST))
    data_dir = SHARED_MNIST if named_by == "data_dir" else None
    with pytest.raises(DataFileError) as raised:
        load_dataset("fashion-mnist", data_dir, download=False)
    assert str(raised.value) == (
        f"{SHARED_MNIST / 'train-labels-idx1-ubyte.gz'} is the MNIST file train-labels-idx1-ubyte.gz "
        "(its checksum is the one registered for MNIST), not Fashion-MNIST: name a directory that "
        "holds Fashion-MNIST, or load MNIST instead"
    )


def test_files_without_a_registered_checksum_load_as_either_dataset(tmp_path):
    directory = write_small_dataset(tmp_path / "own")
    assert load_dataset("fashion-mnist", directory).classes[0] == "T-shirt/top"
    assert load_dataset("mnist", directory).classes[0] == "0"
