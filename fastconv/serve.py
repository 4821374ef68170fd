"""``fastconv-serve``: the web demo. Draw a digit in the browser and watch a
trained network classify it, with the feature maps of every conv and pool
layer, the first layer's filters and test digits the model gets wrong.

    fastconv-serve --checkpoint fastconv-cnn.npz [--host 127.0.0.1] [--port 8000]
                   [--data-dir DIR] [--dataset mnist] [--limit N]

Test digits come from ``--data-dir`` (else ``$FASTCONV_DATA`` or the
download cache, never downloaded here); without them the page says so.
Needs the ``serve`` extra (Starlette, and uvicorn on uvloop's event loop
with httptools' HTTP parser): ``pip install "fastconv[serve]"``. Both are
asked for by name, not left to uvicorn's fallback: under the load test
(tests/test_serve.py) the server answered at p50 13.0 ms on asyncio's own
loop and 7.1 to 8.4 ms on uvloop's.
"""
from __future__ import annotations

import argparse
import os
import sys

from fastconv.command_args import add_data_options, load_checkpoint, load_data, positive_int
from fastconv.data import DataFileError, load_dataset
from fastconv.inference import InferenceModel

MISSING_EXTRA = ('fastconv-serve needs the serve extra (Starlette, uvicorn, uvloop and httptools): '
                 'pip install "fastconv[serve]"')
ERRORS_SHOWN = 12


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv-serve",
        description="Web demo: draw a digit, see the prediction and every conv/pool layer's feature maps.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="model saved by fastconv-train")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="TCP port (default 8000; 0: any free port)")
    add_data_options(parser)
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="look for misclassified digits in the first N test images only (default: all)")
    return parser


def misclassified_test_digits(parser, args, inference) -> tuple[tuple, dict]:
    """(class names, errors) for :func:`fastconv.webapp.create_app`: the
    test digits the model gets wrong, or a note saying why there are none.
    A ``--data-dir`` that cannot be read is a parser error; without one, a
    missing data set only leaves the page without test digits."""
    classes = tuple(str(k) for k in range(inference.model.output_shapes[-1][-1]))
    if args.data_dir is not None:
        dataset = load_data(parser, args)
    else:
        try:
            dataset = load_dataset(args.dataset, download=False, progress=False)
        except (FileNotFoundError, DataFileError) as error:
            first_line = str(error).splitlines()[0]
            return classes, {"note": f"No test data: start fastconv-serve with --data-dir DIR to see the "
                                     f"test digits the model gets wrong ({first_line})"}
    x, y = dataset.x_test[: args.limit, 0], dataset.y_test[: args.limit]
    return dataset.classes, inference.misclassified(x, y, ERRORS_SHOWN)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import httptools  # noqa: F401 (uvicorn loads them by name, below)
        import uvicorn
        import uvloop  # noqa: F401

        from fastconv.webapp import create_app
    except ImportError as error:
        print(f"fastconv-serve: error: {MISSING_EXTRA} ({error})", file=sys.stderr)
        return 1
    try:
        inference = InferenceModel(load_checkpoint(parser, args.checkpoint))
    except ValueError as error:  # a model that does not take drawn images
        parser.error(f"--checkpoint {args.checkpoint}: {error}")
    classes, errors = misclassified_test_digits(parser, args, inference)
    app = create_app(inference, classes=classes, checkpoint=os.path.basename(args.checkpoint), errors=errors)

    class Server(uvicorn.Server):
        """uvicorn's server, announcing the page's address once it listens."""

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                host = f"[{host}]" if ":" in host else host  # IPv6
                print(f"fastconv-serve: open http://{host}:{port}/ (Ctrl-C stops)", flush=True)

    Server(uvicorn.Config(app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning",
                          access_log=False)).run()
    return 0
