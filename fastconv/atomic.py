"""Write a file so that a reader sees the old contents or the new, never a part."""
from __future__ import annotations

import contextlib
import json
import os
import uuid


def write_atomically(path, write, *, binary=True) -> None:
    """Call ``write(f)`` on a new temporary file beside ``path``, flush and
    fsync it, then rename it over ``path`` (``os.replace``: atomic within one
    file system). On any failure, KeyboardInterrupt included, the temporary
    is removed and ``path`` keeps what it held."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb" if binary else "x") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomically(path, payload, indent=2) -> None:
    """``payload`` as JSON at ``path``, written with :func:`write_atomically`."""
    write_atomically(path, lambda f: json.dump(payload, f, indent=indent), binary=False)


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock on ``path`` + ``.lock`` (created if needed)
    for the ``with`` block, waiting for any other process that holds it:
    for a read-change-write of ``path`` that must not lose another
    process's change. An advisory lock of the OS (``flock`` on POSIX,
    ``msvcrt.locking`` on Windows), released when the block ends or the
    process dies. OSError if the lock file cannot be opened."""
    with open(os.fspath(path) + ".lock", "a+b") as lock_file:
        if os.name == "nt":
            import msvcrt

            lock_file.seek(0)
            msvcrt.locking(lock_file.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                lock_file.seek(0)
                msvcrt.locking(lock_file.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
