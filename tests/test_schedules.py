"""Learning-rate schedules: their formulas, PyTorch's per-epoch equivalents
where torch is installed, fit applying them, and bad settings."""
import math

import numpy as np
import pytest

from fastconv.layers import Dense
from fastconv.model import Sequential
from fastconv.optim import Adam
from fastconv.schedules import ConstantLR, CosineLR, StepLR
from optional_imports import optional


def test_constant_step_and_cosine_rates():
    assert [ConstantLR(0.1).lr(e) for e in (1, 5, 50)] == [0.1, 0.1, 0.1]
    assert [StepLR(1.0, 2, 0.5).lr(e) for e in range(1, 7)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cosine = CosineLR(1.0, 4)
    assert [cosine.lr(e) for e in range(1, 6)] == pytest.approx(
        [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0])
    assert CosineLR(1.0, 4, min_lr=0.2).lr(3) == pytest.approx(0.6)
    assert CosineLR(1.0, 4).lr(9) == 0.0  # past the end: the floor


def test_rates_match_pytorch_schedulers_stepped_once_per_epoch():
    torch = optional("torch")
    for ours, make in ((StepLR(0.1, 3, 0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
                       (CosineLR(0.1, 7), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7))):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = make(optimizer)
        for epoch in range(1, 8):
            assert ours.lr(epoch) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
            optimizer.step()
            scheduler.step()


def test_fit_sets_each_epochs_rate_and_records_it():
    model = Sequential([Dense(3, 2)], input_shape=(3,))
    x, y = np.random.default_rng(0).random((8, 3)), np.array([0, 1] * 4)
    history = model.fit(x, y, epochs=3, verbose=False, optimizer=Adam(0.5), lr_schedule=StepLR(0.2, 1, 0.5))
    assert history.lr == pytest.approx([0.2, 0.1, 0.05])
    assert model.optimizer.lr == pytest.approx(0.05)
    assert model.fit(x, y, epochs=4, initial_epoch=3, verbose=False).lr == pytest.approx([0.05])  # no schedule: kept


@pytest.mark.parametrize("make, message", [
    (lambda: ConstantLR(0), "lr must be a number > 0"),
    (lambda: StepLR(0.1, 0), "StepLR: step_epochs must be a positive integer, got 0"),
    (lambda: StepLR(0.1, 2, gamma=-1), "gamma must be a number > 0"),
    (lambda: CosineLR(0.1, 0), "CosineLR: epochs must be a positive integer, got 0"),
    (lambda: CosineLR(0.1, 5, min_lr=0.2), "min_lr 0.2 is above lr 0.1"),
    (lambda: CosineLR(0.1, 5).lr(0), "CosineLR: epoch must be a positive integer, got 0"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
