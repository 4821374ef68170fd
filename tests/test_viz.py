"""fastconv-viz: every command writes a PNG of the size asked for; the
pictures hold the model's numbers; missing matplotlib and bad arguments give
clear errors.

Needs matplotlib (skipped without it, except the test that it is missing);
the commands that read test images use the real MNIST files beside the
repository. Conv and pool layers run the NumPy reference.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastconv import models, ops, viz
from fastconv.layers import Conv2D

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
REF = {"backend": "numpy", "algorithm": "reference"}


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


@pytest.fixture
def mnist_dir():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST files are not in {MNIST}")
    return str(MNIST)


@pytest.fixture
def checkpoints(tmp_path):
    """Untrained cnn and a dense model trained one epoch on 128 images, saved."""
    paths = {"cnn": tmp_path / "cnn.npz", "dense": tmp_path / "dense.npz"}
    models.build("cnn", **REF).save(paths["cnn"])
    dense = models.build("dense")
    rng = np.random.default_rng(0)
    dense.fit(rng.random((128, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 128), verbose=False)
    dense.save(paths["dense"])
    return {name: str(path) for name, path in paths.items()}


def png_size(path):
    """(width, height) from the PNG signature and IHDR chunk."""
    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def run(argv, capsys):
    """Run the command; the paths it printed."""
    assert viz.main(argv) == 0
    return capsys.readouterr().out.split()


def assert_pngs(paths, size):
    assert paths
    for path in paths:
        assert Path(path).stat().st_size > 1000, path  # a picture, not an empty canvas
        assert png_size(path) == size, path


def test_filters(matplotlib, checkpoints, tmp_path, capsys):
    paths = run(["filters", "--checkpoint", checkpoints["cnn"], "--out", str(tmp_path / "png"),
                 "--size", "640x480"], capsys)
    assert paths == [str(tmp_path / "png" / "filters.png")]
    assert_pngs(paths, (640, 480))


def test_mosaic_lays_tiles_out_row_by_row_with_gaps():
    tiles = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    picture = viz.mosaic(tiles, ncols=2)
    nan = np.nan
    expected = [[0, 1, nan, 4, 5],
                [2, 3, nan, 6, 7],
                [nan] * 5,
                [8, 9, nan, nan, nan],
                [10, 11, nan, nan, nan]]
    assert_allclose(picture, expected)


def test_filters_figure_shows_every_first_layer_weight(matplotlib):
    model = models.build("lenet5", **REF)
    fig = viz.filters_figure(model, size=(500, 300))
    w = model.layers[0].params["w"]  # (6, 1, 5, 5)
    shown = fig.axes[0].images[0].get_array()
    ncols = (shown.shape[1] + 1) // 6
    assert_allclose(shown.filled(np.nan), viz.mosaic(w[:, 0], ncols))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == [str(i) for i in range(6)]


def test_maps_writes_one_picture_per_conv_and_pool_layer(matplotlib, checkpoints, mnist_dir, tmp_path, capsys):
    out = tmp_path / "maps"
    paths = run(["maps", "--checkpoint", checkpoints["cnn"], "--out", str(out), "--data-dir", mnist_dir,
                 "--index", "7", "--size", "333x217", "--backend", "numpy"], capsys)
    names = ["conv2d", "max_pool2d", "conv2d_1", "max_pool2d_1"]
    assert paths == [str(out / f"maps-7-{name}.png") for name in names]
    assert_pngs(paths, (333, 217))


def test_feature_maps_are_the_layer_outputs(matplotlib):
    model = models.build("cnn", **REF)
    image = np.random.default_rng(1).random((1, 28, 28), dtype=np.float32)
    maps = viz.feature_maps(model, image)
    assert [(layer.name, m.shape) for layer, m in maps] == [
        ("conv2d", (32, 26, 26)), ("max_pool2d", (32, 13, 13)),
        ("conv2d_1", (64, 11, 11)), ("max_pool2d_1", (64, 5, 5))]
    conv = model.layers[0]
    expected = ops.conv2d(image[None], conv.params["w"], conv.params["b"], **REF)[0]
    assert_allclose(maps[0][1], expected, rtol=1e-6)
    fig = viz.feature_maps_figure(*maps[0], image, "caption", size=(400, 300))
    input_ax, maps_ax = fig.axes
    assert_allclose(input_ax.images[0].get_array(), image[0])
    shown = maps_ax.images[0].get_array().filled(np.nan)
    ncols = (shown.shape[1] + 1) // 27
    assert_allclose(shown, viz.mosaic(expected, ncols), rtol=1e-6)
    with pytest.raises(ValueError, match=r"input shape \(1, 28, 28\), got \(28, 28\)"):
        viz.feature_maps(model, image[0])


def test_curves_from_a_metrics_file(matplotlib, tmp_path, capsys):
    # the layout fastconv-train --metrics-out writes
    epochs = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 0.1 / e, "seconds": 2.0, "images_per_second": 10.0,
               "val_loss": 1.1 / e, "val_accuracy": 1 - 0.12 / e} for e in (1, 2, 3)]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"model": "cnn", "params": 1, "epochs": epochs,
                                   "test_loss": 0.3, "test_accuracy": 0.97}))
    paths = run(["curves", "--metrics", str(metrics), "--out", str(tmp_path), "--size", "800x300"], capsys)
    assert_pngs(paths, (800, 300))
    fig = viz.curves_figure(*viz.load_metrics(metrics)[:1], "t", test_accuracy=0.97)
    loss_ax, acc_ax = fig.axes
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[1, 1 / 2, 1 / 3], [1.1, 1.1 / 2, 1.1 / 3]]
    assert list(acc_ax.lines[-1].get_ydata()) == [0.97, 0.97]


def test_curves_from_a_checkpoint_history(matplotlib, checkpoints, tmp_path, capsys):
    paths = run(["curves", "--checkpoint", checkpoints["dense"], "--out", str(tmp_path)], capsys)
    assert_pngs(paths, viz.DEFAULT_SIZES["curves"])


def test_confusion(matplotlib, checkpoints, mnist_dir, tmp_path, capsys):
    paths = run(["confusion", "--checkpoint", checkpoints["dense"], "--out", str(tmp_path),
                 "--data-dir", mnist_dir, "--limit", "300", "--size", "500x500"], capsys)
    assert_pngs(paths, (500, 500))


def test_confusion_figure_shows_the_matrix(matplotlib):
    matrix = np.array([[3, 1], [0, 2]])
    fig = viz.confusion_figure(matrix, ("a", "b"), size=(300, 300))
    ax = fig.axes[0]
    assert_allclose(ax.images[0].get_array(), matrix)
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "3"]  # zero cells stay empty
    assert "accuracy 0.8333" in fig._suptitle.get_text()


def test_errors(matplotlib, checkpoints, mnist_dir, tmp_path, capsys):
    paths = run(["errors", "--checkpoint", checkpoints["dense"], "--out", str(tmp_path), "--data-dir", mnist_dir,
                 "--limit", "200", "--count", "6", "--size", "600x400"], capsys)
    assert_pngs(paths, (600, 400))


def test_errors_figure_shows_only_misclassified_images(matplotlib):
    images = np.arange(4 * 9, dtype=np.float32).reshape(4, 1, 3, 3)
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    fig = viz.errors_figure(images, labels, probabilities, ("zero", "one"), size=(300, 200))
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2
    assert_allclose(shown[0].images[0].get_array(), images[1, 0])
    assert shown[0].get_title() == "#1 true one\npred zero (80%)"
    assert shown[1].get_title() == "#3 true zero\npred one (60%)"


def test_demo(matplotlib, mnist_dir, tmp_path, capsys):
    paths = run(["demo", "--out", str(tmp_path), "--data-dir", mnist_dir, "--index", "4",
                 "--backend", "numpy", "--size", "450x600"], capsys)
    assert paths == [str(tmp_path / "demo-4.png")]
    assert_pngs(paths, (450, 600))


def test_demo_edge_filters_find_the_edges_of_a_vertical_bar(matplotlib):
    image = np.zeros((1, 12, 12), np.float32)
    image[0, :, 5:7] = 1  # a bar two pixels wide, the full height
    fig = viz.demo_figure(image, **REF, size=(300, 300))
    rows = [fig.axes[i : i + 3] for i in range(0, 9, 3)]
    vertical, horizontal, blur = (row[2].images[0].get_array() for row in rows)
    assert [row[1].get_title() for row in rows] == [f"kernel: {name}" for name in viz.DEMO_KERNELS]
    # output column x sees input columns x..x+2 and gives 4 * (left - right):
    # -4 where the window enters the bar (x = 3, 4), +4 where it leaves (5, 6), 0 elsewhere
    assert (vertical[:, 3:5] == -4).all() and (vertical[:, 5:7] == 4).all()
    assert np.count_nonzero(vertical) == 4 * 10
    assert not horizontal.any()  # no horizontal edge inside the image
    assert_allclose(blur[:, 4], 2 / 3, rtol=1e-6)  # 3x3 mean over 2 bright columns of 3


def test_missing_matplotlib_names_the_pip_command(tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    assert viz.main(["filters", "--checkpoint", "unused.npz", "--out", str(tmp_path)]) == 1
    assert "pip install 'fastconv[viz]'" in capsys.readouterr().err
    with pytest.raises(ImportError, match=r"pip install 'fastconv\[viz\]'"):
        viz.filters_figure(models.build("cnn"))


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND"),
    (["pictures", "--out", "x"], "invalid choice: 'pictures'"),
    (["filters", "--out", "x"], "the following arguments are required: --checkpoint"),
    (["filters", "--checkpoint", "m.npz"], "the following arguments are required: --out"),
    (["curves", "--out", "x"], "one of the arguments --metrics --checkpoint is required"),
    (["filters", "--checkpoint", "m.npz", "--out", "x", "--size", "big"], "expected WIDTHxHEIGHT"),
    (["filters", "--checkpoint", "m.npz", "--out", "x", "--size", "50x50"], "100 to 10000 pixels"),
    (["maps", "--checkpoint", "m.npz", "--out", "x", "--index", "-1"], "expected an integer >= 0"),
])
def test_bad_arguments_are_usage_errors(matplotlib, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        viz.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_filters_of_a_dense_model_is_a_usage_error(matplotlib, checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit):
        viz.main(["filters", "--checkpoint", checkpoints["dense"], "--out", str(tmp_path)])
    assert "the model has no Conv2D layer" in capsys.readouterr().err


def test_index_past_the_test_set_and_bad_metrics_are_usage_errors(matplotlib, mnist_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        viz.main(["demo", "--out", str(tmp_path), "--data-dir", mnist_dir, "--index", "10000"])
    assert "--index 10000: the test set has 10,000 images" in capsys.readouterr().err
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"epochs": [{"epoch": 1}]}))
    with pytest.raises(SystemExit):
        viz.main(["curves", "--metrics", str(metrics), "--out", str(tmp_path)])
    assert "expected an 'epochs' list of entries with epoch, loss, accuracy" in capsys.readouterr().err


def test_first_conv_is_the_first_conv_layer():
    model = models.build("lenet5")
    assert viz.first_conv(model) is model.layers[0] and isinstance(model.layers[0], Conv2D)
    with pytest.raises(ValueError, match="no Conv2D layer"):
        viz.first_conv(models.build("logreg"))
