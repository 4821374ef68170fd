"""fastconv.changes: the mark a change to a model moves, and the plan's
full staleness check running only after one."""
import numpy as np
import pytest

from fastconv import changes, models, plan
from fastconv.changes import WatchedDict, WatchedList
from fastconv.layers import Conv2D, Dense


def moves_the_mark(change) -> bool:
    before = changes.mark
    change()
    return changes.mark is not before


def test_public_attributes_are_changes_private_ones_and_gradients_are_not():
    layer = Conv2D(1, 4, 3)
    assert moves_the_mark(lambda: setattr(layer, "stride", (2, 2)))
    assert moves_the_mark(lambda: delattr(layer, "stride"))
    assert not moves_the_mark(lambda: setattr(layer, "_x", np.zeros(3)))
    assert not moves_the_mark(lambda: setattr(layer, "grads", {"w": np.zeros(3)}))
    assert not moves_the_mark(lambda: setattr(layer, "needs_input_grad", False))
    assert type(layer.grads) is dict  # not watched, so left as given


def test_dicts_and_lists_given_to_a_model_become_watched():
    model = models.build("cnn", seed=0)
    assert type(model.steps) is WatchedList and type(model.layers) is WatchedList
    assert all(type(layer.params) is WatchedDict and type(layer.buffers) is WatchedDict for layer in model.layers)
    dense = Dense(3, 2)
    dense.params = {"w": np.ones((3, 2), np.float32)}
    assert type(dense.params) is WatchedDict and dense.params["w"].shape == (3, 2)


@pytest.mark.parametrize("change", [
    lambda d: d.__setitem__("a", 2), lambda d: d.__delitem__("a"), lambda d: d.__ior__({"c": 3}),
    lambda d: d.clear(), lambda d: d.pop("a"), lambda d: d.popitem(), lambda d: d.setdefault("c", 3),
    lambda d: d.update(c=3),
])
def test_every_change_through_a_watched_dict_moves_the_mark(change):
    watched = WatchedDict(a=1, b=2)
    plain = dict(a=1, b=2)
    assert moves_the_mark(lambda: change(watched))
    change(plain)
    assert watched == plain  # and does what dict does


@pytest.mark.parametrize("change", [
    lambda s: s.__setitem__(0, 9), lambda s: s.__setitem__(slice(0, 1), [7, 8]), lambda s: s.__delitem__(0),
    lambda s: s.__iadd__([4]), lambda s: s.__imul__(2), lambda s: s.append(4), lambda s: s.clear(),
    lambda s: s.extend([4]), lambda s: s.insert(0, 4), lambda s: s.pop(), lambda s: s.remove(2),
    lambda s: s.reverse(), lambda s: s.sort(reverse=True),
])
def test_every_change_through_a_watched_list_moves_the_mark(change):
    watched = WatchedList([3, 1, 2])
    plain = [3, 1, 2]
    assert moves_the_mark(lambda: change(watched))
    change(plain)
    assert watched == plain


def test_the_plan_checks_in_full_only_after_a_change(monkeypatch):
    model = models.build("cnn", seed=0)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    expected = model.forward(x)
    full_checks = []
    unchanged = plan._Snapshot.unchanged
    monkeypatch.setattr(plan._Snapshot, "unchanged", lambda self: full_checks.append(1) or unchanged(self))
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    assert full_checks == []  # nothing changed: no full check
    conv = model.layers[0]
    conv.params["w"] = conv.params["w"] * 2  # a new array: noted, then found by the full check
    doubled = model.forward(x)
    assert full_checks == [1] and not np.allclose(doubled, expected)
    model.forward(x)
    assert full_checks == [1]  # checked at the new mark: no second full check
    model.layers[1].name = model.layers[1].name  # a change that replaces nothing the plan read
    np.testing.assert_array_equal(model.forward(x), doubled)
    assert full_checks == [1, 1]
