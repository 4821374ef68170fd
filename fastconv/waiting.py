"""Never a silent wait: a line on stderr when something the user did not ask
for (compiling a Numba kernel, timing variants for ``auto``) takes long."""
from __future__ import annotations

import contextlib
import sys
import threading

NOTICE_AFTER_SECONDS = 0.5
"""How long a block may run before its notice is printed."""


@contextlib.contextmanager
def said_if_slow(message: str, after: float = NOTICE_AFTER_SECONDS):
    """Run the ``with`` block; if it is still running ``after`` seconds in,
    print ``fastconv: <message>`` on stderr, once, while it goes on. A block
    that finishes sooner prints nothing."""
    timer = threading.Timer(after, lambda: print(f"fastconv: {message}", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _kind(arg):
    """What decides which compiled version runs: an array's dtype, a list's
    first element's, or whether the argument is None."""
    if isinstance(arg, (list, tuple)) and arg:
        return ("sequence", _kind(arg[0]))
    return getattr(arg, "dtype", arg is None)


class FirstCallNotice:
    """A kernel whose first call with each kind of arguments (dtypes, and
    which are None) may compile it: that call runs under
    :func:`said_if_slow`, later ones straight through."""

    def __init__(self, kernel, message: str):
        self.kernel, self.message = kernel, message
        self._seen = set()
        self.__wrapped__ = kernel

    def __call__(self, *args, **options):
        kind = tuple(_kind(a) for a in args)
        if kind in self._seen:
            return self.kernel(*args, **options)
        with said_if_slow(self.message):
            result = self.kernel(*args, **options)
        self._seen.add(kind)
        return result
