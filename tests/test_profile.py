"""The per-layer profile is a measurement: its parts add up to the step,
its steps to the epoch, and it names what the model really runs."""
import json

import numpy as np
import pytest

from fastconv import models, train
from fastconv.optim import Adam
from fastconv.profile import StepProfile


def fit_profiled(fuse, n=640, batch=64):
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
    model = models.build("cnn", seed=0)
    model.fuse = fuse
    # A first epoch unprofiled: auto's timings and Numba's compilation are done.
    model.fit(x, y, epochs=1, batch_size=batch, optimizer=Adam(), verbose=False)
    profile = StepProfile()
    history = model.fit(x, y, epochs=2, batch_size=batch, verbose=False, profile=profile, initial_epoch=1)
    return model, profile, history


@pytest.mark.parametrize("fuse", [True, False])
def test_parts_add_up_to_the_step_and_steps_to_the_epoch(fuse):
    model, profile, history = fit_profiled(fuse)
    report = profile.as_dict()
    # The first step (batch size 64 seen for the first time) is left out.
    assert report["steps"] == 640 // 64 - 1
    parts = (report["data_ms"] + report["loss_ms"] + report["optimizer_ms"]
             + sum(layer["forward_ms"] + layer["backward_ms"] for layer in report["layers"]))
    assert parts == pytest.approx(report["step_ms"], rel=0.01)
    assert [layer["name"] for layer in report["layers"]] == [step.name for step in model.steps]
    assert all(layer["forward_ms"] > 0 for layer in report["layers"])
    # The 9 profiled steps of 10 are most of the epoch (the step left out
    # and the progress bookkeeping are the rest).
    epoch_ms = 1e3 * history.seconds[0]
    assert 0.6 * epoch_ms < report["step_ms"] * report["steps"] <= epoch_ms
    assert report["images_per_second"] == pytest.approx(64 / report["step_ms"] * 1e3, rel=1e-6)


def test_the_table_lists_every_part():
    _, profile, _ = fit_profiled(True, n=192)
    table = profile.table()
    for part in ("conv2d+relu+max_pool2d", "dense_1", "loss", "optimizer step", "img/s"):
        assert part in table


def test_fastconv_train_profile_prints_the_table_and_writes_it_to_the_metrics(tmp_path, monkeypatch, capsys):
    from fastconv import data

    rng = np.random.default_rng(0)
    metrics = tmp_path / "metrics.json"
    n = 256
    fake = type("D", (), dict(
        x_train=rng.random((n, 1, 28, 28), dtype=np.float32), y_train=rng.integers(0, 10, n),
        x_test=rng.random((64, 1, 28, 28), dtype=np.float32), y_test=rng.integers(0, 10, 64),
        classes=[str(i) for i in range(10)], directory=tmp_path))
    monkeypatch.setattr(data, "load_dataset", lambda *args, **kwargs: fake)  # no files needed
    code = train.main(["--epochs", "1", "--validation", "0", "--save", "", "--quiet", "--profile",
                     "--no-fuse", "--metrics-out", str(metrics)])
    assert code == 0
    out = capsys.readouterr().out
    assert "profile (unfused, batch 64)" in out and "relu_1" in out
    profile = json.loads(metrics.read_text())["profile"]
    assert {"layers", "loss_ms", "optimizer_ms", "step_ms"} <= set(profile)
    assert [layer["name"] for layer in profile["layers"]][:3] == ["conv2d", "relu", "max_pool2d"]
