"""The web demo's Starlette application: one page and a small JSON API.

    GET  /                  the page (self-contained: no external resources)
    GET  /api/model         layers, first-layer filters, misclassified test digits
    POST /api/predict       {"pixels": H rows of W numbers in 0..1} -> {"label", "probabilities"}
    POST /api/feature-maps  the same request -> the same answer plus "layers":
                            the output of every conv and pool layer

The application only parses and validates requests and shapes answers; the
model runs through :class:`fastconv.inference.InferenceModel`. Every bad request
gets a 4xx answer ``{"error": "..."}`` naming what was wrong: 400 for a body
that is not JSON, 413 for a body over :data:`MAX_BODY_BYTES` (counted while
reading, whatever Content-Length says), 422 for JSON that is not a valid
image. No request names a file: the model and the test data are fixed when
the application is created.
"""
from __future__ import annotations

import itertools
import json
import math
from importlib.resources import files

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

MAX_BODY_BYTES = 1_000_000
MAP_DECIMALS = 4  # feature maps are for display: 4 decimals keep the JSON small
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request, limit=MAX_BODY_BYTES) -> bytes:
    """The request body; RequestError 413 as soon as it exceeds ``limit``
    bytes (a declared Content-Length over the limit is refused unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes")
    return bytes(body)


def _reject_constant(name):
    raise RequestError(400, f"body contains {name}, which is not a JSON number; pixels must be finite")


def parse_json(body: bytes):
    """The JSON value in ``body``; RequestError 400 if it is not JSON."""
    if not body.strip():
        raise RequestError(400, 'empty body: send JSON {"pixels": [[...], ...]}')
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "body is not usable JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"body is not valid JSON: {error}") from None


def _json_type(value) -> str:
    """How JSON names the type of a parsed value, for error messages."""
    return _JSON_TYPES.get(type(value), "a number")


def parse_pixels(payload, shape) -> np.ndarray:
    """The image (H, W) float32 in ``payload`` = ``{"pixels": H rows of W
    finite numbers in 0..1}``; RequestError 422 saying what is wrong."""
    height, width = shape
    expected = f'{{"pixels": {height} rows of {width} numbers in 0..1}}'
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object {expected}, got {_json_type(payload)}")
    unknown = sorted(set(payload) - {"pixels"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}: the body is {expected}")
    if "pixels" not in payload:
        raise RequestError(422, f'missing field "pixels": the body is {expected}')
    rows = payload["pixels"]
    if not isinstance(rows, list) or len(rows) != height:
        got = f"{len(rows)} rows" if isinstance(rows, list) else _json_type(rows)
        raise RequestError(422, f'"pixels" must be an array of {height} rows, got {got}')
    image = _valid_image(rows, width)
    if image is not None:
        return image
    for i, row in enumerate(rows):  # something is wrong: find the first thing, to say what
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} numbers" if isinstance(row, list) else _json_type(row)
            raise RequestError(422, f'"pixels" row {i} must be an array of {width} numbers, got {got}')
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(422, f"pixels[{i}][{j}] must be a number, got {_json_type(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(422, f"pixels[{i}][{j}] must be finite, got {value}")
            if not 0 <= value <= 1:
                raise RequestError(422, f"pixels[{i}][{j}] = {value} is outside 0..1 (0 black, 1 white)")
    return np.array(rows, dtype=np.float32)


def _valid_image(rows, width) -> np.ndarray | None:
    """The image (H, W) float32 of ``rows`` (H of them) if every row is a
    list of ``width`` JSON numbers (not booleans), all finite and in 0..1;
    None otherwise (parse_pixels then looks for what is wrong). Checked by
    type sets and NumPy, not value by value: 37 us, where the loop took
    138 us for a 28 x 28 image."""
    if not all(type(row) is list and len(row) == width for row in rows):
        return None
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {int, float}:
        return None
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        return None
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        return None
    return values.astype(np.float32)


def _prediction(probabilities) -> dict:
    """The answer of /api/predict for probabilities (K,)."""
    return {"label": int(np.argmax(probabilities)), "probabilities": probabilities.tolist()}


def _layer_maps(layer, maps) -> dict:
    """One entry of "layers" in /api/feature-maps: a layer's output (C, H, W)."""
    return {"name": layer.name, "type": type(layer).__name__, "shape": list(maps.shape),
            "min": float(maps.min()), "max": float(maps.max()),
            "maps": np.round(maps.astype(np.float64), MAP_DECIMALS).tolist()}


def model_description(inference, classes, checkpoint, errors) -> dict:
    """What ``GET /api/model`` answers: the layers with their output shapes,
    the first conv layer's filters (input channel 0) and ``errors``
    (:meth:`InferenceModel.misclassified`, or ``{"note": why there are none}``)."""
    model = inference.model
    filters = inference.first_filters()
    return {
        "checkpoint": checkpoint,
        "parameters": model.param_count(),
        "input_shape": list(model.input_shape),
        "classes": list(classes),
        "layers": [{"name": layer.name, "type": type(layer).__name__, "output_shape": list(shape)}
                   for layer, shape in zip(model.layers, model.output_shapes)],
        "filters": None if filters is None else {
            "layer": filters[0].name, "shape": list(filters[1].shape),
            "weights": np.round(filters[1][:, 0].astype(np.float64), MAP_DECIMALS).tolist()},
        "errors": errors,
    }


def create_app(inference, *, classes, checkpoint, errors) -> Starlette:
    """The application serving ``inference`` (a InferenceModel); ``classes``
    names the labels, ``checkpoint`` is shown on the page, ``errors`` as in
    :func:`model_description`."""
    page = files("fastconv").joinpath("serve_page.html").read_text(encoding="utf-8")
    description = model_description(inference, classes, checkpoint, errors)

    async def image_from(request) -> np.ndarray:
        return parse_pixels(parse_json(await read_body(request)), inference.image_shape)

    async def index(request):
        return HTMLResponse(page)

    async def model_info(request):
        return JSONResponse(description)

    async def predict(request):
        # On the event loop itself: one image's pass takes under a
        # millisecond with the built-in models (cnn 0.1-0.2 ms, cnn-deep
        # 0.7), and handing it to a worker thread cost more than that (the
        # two threads then take turns at the GIL). A copy of this endpoint
        # under the load test's load (tests/test_serve.py) spent 0.6-0.7 ms
        # of server CPU a request this way against 1.1-1.3 ms through
        # run_in_threadpool, p50 6.5-7.4 ms against 15-18.6 ms.
        image = await image_from(request)
        return JSONResponse(_prediction(inference.predict(image[None])[0]))

    async def layer_maps(request):  # every layer's maps, and their JSON: milliseconds, in a worker thread
        image = await image_from(request)
        probabilities, maps = await run_in_threadpool(inference.feature_maps, image)
        return JSONResponse(_prediction(probabilities) | {"layers": [_layer_maps(*pair) for pair in maps]})

    async def request_error(request, error: RequestError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    async def http_error(request, error: HTTPException):  # 404, 405 from the router
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/model", model_info, methods=["GET"]),
            Route("/api/predict", predict, methods=["POST"]),
            Route("/api/feature-maps", layer_maps, methods=["POST"]),
        ],
        exception_handlers={RequestError: request_error, HTTPException: http_error},
    )
