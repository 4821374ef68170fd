"""fastconv-serve: the JSON API against Sequential.load(...).forward, every
bad request, the command, a bounded load test on a real server, and the page
in a real headless Chromium.

The model is the reference CNN trained for one epoch on 2,000 MNIST images
(a few seconds): predictions only have to match, not be good. Without the
serve extra, Playwright or Chromium the tests that need them skip, except
with CI=true, where a missing piece is a failure.
"""
import http.client
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import models
from fastconv.data import load_dataset
from fastconv.inference import InferenceModel
from fastconv.losses import softmax
from fastconv.model import Sequential

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOAD_REQUESTS, LOAD_CLIENTS = 200, 16


def require(what, available):
    """Skip (fail with CI=true) when ``what`` is not available."""
    if not available:
        message = f"{what} is not available"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true: CI must run this test")
        pytest.skip(message)


def importable(module) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def mnist():
    require(f"MNIST in {MNIST}", MNIST.is_dir())
    return load_dataset("mnist", MNIST)


@pytest.fixture(scope="module")
def checkpoint(mnist, tmp_path_factory):
    model = models.build("cnn", seed=0)
    model.fit(mnist.x_train[:2000], mnist.y_train[:2000], epochs=1, verbose=False)
    path = tmp_path_factory.mktemp("serve") / "cnn.npz"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def webapp():
    require('the serve extra (pip install "fastconv[serve]")', importable("starlette") and importable("uvicorn"))
    require("httpx2 (the test client)", importable("httpx2"))
    from fastconv import webapp

    return webapp


@pytest.fixture(scope="module")
def client(webapp, checkpoint, mnist):
    from starlette.testclient import TestClient

    inference = InferenceModel(Sequential.load(checkpoint))
    errors = inference.misclassified(mnist.x_test[:500, 0], mnist.y_test[:500], count=5)
    app = webapp.create_app(inference, classes=mnist.classes, checkpoint="cnn.npz", errors=errors)
    with TestClient(app) as test_client:
        yield test_client


def body(image) -> dict:
    return {"pixels": np.asarray(image).tolist()}


# ------------------------------------------------------------ the answers


def test_predictions_equal_the_loaded_models_forward(client, checkpoint, mnist):
    reference = Sequential.load(checkpoint)
    for i in range(20):
        x = mnist.x_test[i : i + 1]
        expected = softmax(reference.forward(x))[0]
        response = client.post("/api/predict", json=body(x[0, 0]))
        assert response.status_code == 200
        answer = response.json()
        assert answer.keys() == {"label", "probabilities"}
        assert answer["label"] == int(expected.argmax())
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-6, atol=1e-7)
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-5)


def test_feature_maps_are_each_conv_and_pool_layers_output(client, checkpoint, mnist):
    reference = Sequential.load(checkpoint)
    image = mnist.x_test[3, 0]
    answer = client.post("/api/feature-maps", json=body(image)).json()
    out, expected = image[None, None], []
    for layer in reference.layers:
        out = layer.forward(out, training=False)
        if type(layer).__name__ in ("Conv2D", "MaxPool2D"):
            expected.append((layer.name, out[0]))
    assert [(l["name"], l["shape"]) for l in answer["layers"]] == [(n, list(m.shape)) for n, m in expected]
    for layer, (_, maps) in zip(answer["layers"], expected):
        np.testing.assert_allclose(layer["maps"], maps, atol=1e-4)
        assert layer["min"] == pytest.approx(maps.min()) and layer["max"] == pytest.approx(maps.max())
    assert answer["label"] == int(softmax(reference.forward(image[None, None])).argmax())


def test_model_description_has_filters_and_misclassified_test_digits(client, checkpoint, mnist):
    reference = Sequential.load(checkpoint)
    answer = client.get("/api/model").json()
    assert [l["name"] for l in answer["layers"]] == [l.name for l in reference.layers]
    assert answer["parameters"] == 225_034 and answer["classes"] == list(mnist.classes)
    np.testing.assert_allclose(answer["filters"]["weights"], reference.params["conv2d/w"][:, 0], atol=1e-4)
    predicted = reference.predict(mnist.x_test[:500]).argmax(axis=1)
    wrong = np.flatnonzero(predicted != mnist.y_test[:500])
    errors = answer["errors"]
    assert (errors["checked"], errors["wrong"]) == (500, len(wrong))
    assert [d["index"] for d in errors["digits"]] == wrong[:5].tolist()
    assert all(d["label"] != d["predicted"] for d in errors["digits"])


def test_the_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for external in ("http://", "https://", "src=", "url(", "@import"):
        assert external not in page.text


# ------------------------------------------------------------- bad requests

GOOD_ROW = [0.5] * 28
BAD_BODIES = [
    (b"not json", 400, "not valid JSON"),
    (b"", 400, "empty body"),
    (b"\xff\xfe\xfa", 400, "not valid JSON"),
    (b"[" * 100_000, 400, "nested too deeply"),
    (b'{"pixels": NaN}', 400, "NaN"),
    (b'{"pixels": [[Infinity]]}', 400, "Infinity"),
    (json.dumps([GOOD_ROW] * 28).encode(), 422, "must be a JSON object"),
    (b"{}", 422, 'missing field "pixels"'),
    (json.dumps({"pixels": [GOOD_ROW] * 28, "checkpoint": "/etc/passwd"}).encode(), 422, "unknown field"),
    (json.dumps({"pixels": [GOOD_ROW] * 27}).encode(), 422, "28 rows, got 27 rows"),
    (json.dumps({"pixels": "0.5"}).encode(), 422, "28 rows, got a string"),
    (json.dumps({"pixels": [GOOD_ROW] * 27 + [[0.5] * 27]}).encode(), 422, "row 27 must be an array of 28 numbers, got 27"),
    (json.dumps({"pixels": [GOOD_ROW] * 27 + [0.5]}).encode(), 422, "row 27 must be an array of 28 numbers, got a number"),
    (json.dumps({"pixels": [[[0.5]] * 28] * 28}).encode(), 422, r"pixels\[0\]\[0\] must be a number, got an array"),
    (json.dumps({"pixels": [GOOD_ROW] * 27 + [["0.5"] * 28]}).encode(), 422, r"pixels\[27\]\[0\] must be a number, got a string"),
    (json.dumps({"pixels": [[True] * 28] * 28}).encode(), 422, "got a boolean"),
    (json.dumps({"pixels": [[None] * 28] * 28}).encode(), 422, "got null"),
    (b'{"pixels": [' + b",".join([b"[1e999" + b",0" * 27 + b"]"] * 28) + b"]}", 422, "must be finite"),
    (json.dumps({"pixels": [[-0.1] * 28] * 28}).encode(), 422, "outside 0..1"),
    (json.dumps({"pixels": [[1.5] * 28] * 28}).encode(), 422, "outside 0..1"),
    (json.dumps({"pixels": [[10**400] * 28] * 28}).encode(), 422, "outside 0..1"),
]


@pytest.mark.parametrize("path", ["/api/predict", "/api/feature-maps"])
@pytest.mark.parametrize("content, status, message", BAD_BODIES,
                         ids=[f"{status}-{message[:30]}" for _, status, message in BAD_BODIES])
def test_bad_requests_get_a_4xx_json_error(client, path, content, status, message):
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json().keys() == {"error"}
    assert re.search(message, response.json()["error"]), response.json()["error"]


@given(seed=st.integers(0, 2**32 - 1),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 28 * 28 - 1),
                                          st.sampled_from([True, "0.5", None, [0.5], -0.5, 1.5, float("inf"),
                                                           float("nan"), 10**400]))))
def test_pixels_are_parsed_as_the_value_by_value_checks_say(webapp, seed, bad):
    """parse_pixels checks a valid image by NumPy in one go: the image it
    returns is the one each value gives, and any one bad value, anywhere, is
    still refused with its position. Images of floats in 0..1 with some
    integers 0 and 1 among them (JSON has both)."""
    rng = np.random.default_rng(seed)
    rows = rng.random((28, 28)).tolist()
    for at in rng.choice(28 * 28, rng.integers(0, 50), replace=False):
        rows[at // 28][at % 28] = int(rng.integers(0, 2))
    if bad is None:
        image = webapp.parse_pixels({"pixels": rows}, (28, 28))
        assert image.dtype == np.float32
        np.testing.assert_array_equal(image, [[np.float32(v) for v in row] for row in rows])
        return
    at, value = bad
    rows[at // 28][at % 28] = value
    with pytest.raises(webapp.RequestError, match=rf"pixels\[{at // 28}\]\[{at % 28}\]") as refused:
        webapp.parse_pixels({"pixels": rows}, (28, 28))
    assert refused.value.status == 422


def test_bodies_over_1_mb_get_413_with_or_without_content_length(client, webapp):
    big = b'{"pixels": "' + b"x" * webapp.MAX_BODY_BYTES + b'"}'
    declared = client.post("/api/predict", content=big)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(200):
            yield b" " * 10_000

    streamed = client.post("/api/predict", content=chunks())
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and "limit" in streamed.json()["error"]


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    assert client.get("/api/predict").status_code == 405
    assert client.get("/etc/passwd").status_code == 404


def test_the_server_still_answers_after_bad_requests(client, mnist):
    for content, _, _ in BAD_BODIES:
        client.post("/api/predict", content=content)
    assert client.post("/api/predict", json=body(mnist.x_test[0, 0])).status_code == 200


# -------------------------------------------------------------- the command


@pytest.mark.parametrize("module", ["uvicorn", "uvloop", "httptools"])
def test_the_command_names_the_extra_when_it_is_missing(monkeypatch, capsys, tmp_path, module):
    from fastconv import serve

    monkeypatch.setitem(sys.modules, module, None)  # import module -> ImportError
    assert serve.main(["--checkpoint", str(tmp_path / "none.npz")]) == 1
    err = capsys.readouterr().err
    assert 'pip install "fastconv[serve]"' in err and module in err


def test_the_command_rejects_bad_arguments(webapp, tmp_path, capsys):
    from fastconv import serve

    (tmp_path / "text.npz").write_text("not a model")
    # A bad file is one line and status 1 (as every command that reads a
    # checkpoint); a malformed argument is a usage error, status 2.
    for argv, message, status in (
            (["--checkpoint", str(tmp_path / "text.npz")], "text.npz is not a fastconv checkpoint", 1),
            (["--checkpoint", str(tmp_path / "missing.npz")], "missing.npz: no such checkpoint file", 1),
            (["--checkpoint", "x.npz", "--port", "70000"], "0 to 65535", 2)):
        with pytest.raises(SystemExit) as exit_info:
            serve.main(argv)
        assert exit_info.value.code == status
        assert message in capsys.readouterr().err


def test_without_test_data_the_page_says_so(webapp, checkpoint, tmp_path, monkeypatch):
    from fastconv import serve

    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path))  # an empty folder
    args = serve.build_parser().parse_args(["--checkpoint", str(checkpoint)])
    classes, errors = serve.misclassified_test_digits(None, args, InferenceModel(Sequential.load(checkpoint)))
    assert classes == tuple("0123456789")
    assert errors.keys() == {"note"} and "--data-dir" in errors["note"]


# --------------------------------------------------- a real server: load test


@pytest.fixture(scope="module")
def server(webapp, checkpoint):
    """``fastconv-serve`` in a subprocess on a free port of 127.0.0.1 (one
    thread, to stay modest on a shared machine); yields its base URL."""
    command = Path(sys.executable).with_name("fastconv-serve")
    env = dict(os.environ, FASTCONV_NUM_THREADS="1")
    process = subprocess.Popen(
        [str(command), "--checkpoint", str(checkpoint), "--port", "0", "--data-dir", str(MNIST), "--limit", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=checkpoint.parent)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    url, output, deadline = None, [], time.monotonic() + 120
    while url is None and time.monotonic() < deadline and process.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        output.append(line)
        if "open http://" in line:
            url = line.split("open ")[1].split()[0]
    if url is None:
        process.kill()
        pytest.fail("fastconv-serve did not start:\n" + "".join(output))
    yield url.rstrip("/")
    process.terminate()
    process.wait(timeout=10)


def post(connection, path, payload) -> tuple[int, dict]:
    connection.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_concurrent_requests_get_the_sequential_answers(server, checkpoint, mnist):
    host, port = server.removeprefix("http://").split(":")
    payloads = [body(mnist.x_test[i, 0]) for i in range(LOAD_REQUESTS)]
    one = http.client.HTTPConnection(host, port, timeout=30)
    sequential = [post(one, "/api/predict", p) for p in payloads]
    one.close()

    def client_run(indices):
        connection = http.client.HTTPConnection(host, port, timeout=60)
        answers = []
        for i in indices:
            start = time.perf_counter()
            answer = post(connection, "/api/predict", payloads[i])
            answers.append((i, answer, time.perf_counter() - start))
        connection.close()
        return answers

    start = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        results = [a for part in pool.map(client_run, np.array_split(range(LOAD_REQUESTS), LOAD_CLIENTS)) for a in part]
    wall = time.perf_counter() - start
    assert sorted(i for i, _, _ in results) == list(range(LOAD_REQUESTS))
    for i, answer, _ in results:
        assert answer == sequential[i]
    assert all(status == 200 for status, _ in sequential)
    labels = [answer["label"] for _, answer in sequential]
    expected = Sequential.load(checkpoint).predict(mnist.x_test[:LOAD_REQUESTS]).argmax(axis=1)
    assert np.mean(labels == expected) > 0.99  # the server's kernels may round differently on 1 thread
    latencies = sorted(1000 * seconds for _, _, seconds in results)
    print(f"\nload test: {LOAD_REQUESTS} requests to /api/predict from {LOAD_CLIENTS} clients on 127.0.0.1 in "
          f"{wall:.2f} s: p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {latencies[int(0.99 * len(latencies)) - 1]:.1f} ms")


# ----------------------------------------------------------- a real browser


@pytest.fixture(scope="module")
def browser():
    require("Playwright (pip install playwright)", importable("playwright"))
    require("Chromium (apt-get install -y chromium)", shutil.which("chromium") is not None)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def draw(page, points):
    """A mouse stroke through ``points`` (fractions of the drawing canvas)."""
    box = page.locator("#draw").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_the_page_in_a_real_browser(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, sent = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/api/feature-maps") else None)
    page.goto(server + "/")
    page.wait_for_selector("#bars .bar")
    assert page.locator("#bars .bar").count() == 10
    assert page.locator("#filters canvas").count() == 32
    assert page.locator("#errors .digit-card").count() == 12

    # A misclassified test digit, clicked, gets the answer the gallery shows.
    said = page.locator("#errors .digit-card b").nth(1).inner_text()
    page.locator("#errors .digit-card").first.click()
    page.wait_for_function(f"document.getElementById('verdict').textContent.startsWith(\"It's a {said}\")")
    page.click("#clear")

    # A "7": the top bar, then the diagonal down.
    page.locator("#draw").scroll_into_view_if_needed()
    draw(page, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)])
    page.wait_for_function("document.getElementById('verdict').textContent.startsWith(\"It's a\")")
    page.wait_for_timeout(500)  # let the last request of the stroke land
    page.wait_for_function("document.querySelectorAll('#maps canvas').length === 192")
    bars = page.locator("#bars .pct").all_inner_texts()
    assert len(bars) == 10 and sum(float(t.rstrip("%")) for t in bars) == pytest.approx(100, abs=0.6)
    assert page.locator("#maps .layer h3").all_inner_texts()[0].startswith("conv2d (Conv2D)")

    preview = page.evaluate("Array.from(document.getElementById('preview').getContext('2d')"
                            ".getImageData(0, 0, 28, 28).data)")
    assert max(preview) > 200, "the 28x28 preview is blank"

    # The image sent is MNIST-like: the stroke fitted in 20x20, centre of mass at the centre.
    pixels = np.array(sent[-1]["pixels"])
    rows, cols = np.nonzero(pixels)
    assert pixels.shape == (28, 28) and max(np.ptp(rows), np.ptp(cols)) + 1 == 20
    mass = pixels.sum()
    centre = [(pixels.sum(axis=1) @ (np.arange(28) + 0.5)) / mass, (pixels.sum(axis=0) @ (np.arange(28) + 0.5)) / mass]
    np.testing.assert_allclose(centre, [14, 14], atol=0.51)

    # The page shows what the API answers for that image; nothing came from elsewhere.
    api = page.request.post(server + "/api/predict", data=json.dumps({"pixels": pixels.tolist()}),
                            headers={"Content-Type": "application/json"}).json()
    verdict = page.inner_text("#verdict")
    assert verdict.startswith(f"It's a {api['label']} ")
    assert all(url.startswith(server) for url in requests), requests
    page.screenshot(path=tmp_path / "serve-demo.png", full_page=True)
    print(f"\nscreenshot: {tmp_path / 'serve-demo.png'}")
    page.close()


def test_a_finger_can_draw_too(browser, server):
    context = browser.new_context(has_touch=True, viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#bars .bar")
    box = page.locator("#draw").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.getElementById('verdict').textContent.startsWith(\"It's a\")")
    context.close()
