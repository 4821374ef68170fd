"""RandomAffine: pure shifts move pixels exactly (the translation test's
zero-fill move), rotations and scales keep the image's ink where they should,
draws repeat under a seed, and bad settings or shapes are refused."""
import numpy as np
import pytest

from fastconv.augment import RandomAffine, _warp
from fastconv.compare import shift_images
from fastconv.layers import Dense, Flatten
from fastconv.model import Sequential


def images(n=5, c=1, h=9, w=11, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_a_whole_pixel_shift_is_exactly_the_zero_fill_move():
    x = images(c=2)
    shifts = np.array([[0, 0], [1, -2], [-3, 4], [2, 2], [-1, 0]])
    out = _warp(x, shifts, np.zeros(5), np.ones(5))
    for i, (down, right) in enumerate(shifts):
        np.testing.assert_array_equal(out[i], shift_images(x[i], int(down), int(right)))


def test_a_quarter_turn_of_a_square_image_is_rot90():
    x = images(n=2, h=8, w=8)
    out = _warp(x, np.zeros((2, 2), int), np.array([np.pi / 2, -np.pi / 2]), np.ones(2))
    # the output pixel p reads the input at p turned back by the angle
    np.testing.assert_allclose(out[0, 0], np.rot90(x[0, 0], k=-1), atol=1e-5)
    np.testing.assert_allclose(out[1, 0], np.rot90(x[1, 0], k=1), atol=1e-5)


def test_zooming_in_on_a_constant_image_keeps_it_constant_and_zooming_out_adds_background():
    x = np.ones((2, 1, 10, 10), np.float32)
    out = _warp(x, np.zeros((2, 2), int), np.zeros(2), np.array([1.2, 0.8]))
    np.testing.assert_allclose(out[0], 1, atol=1e-6)
    assert out[1, 0, 5, 5] == pytest.approx(1) and out[1, 0, 0, 0] == 0


def test_default_draws_stay_within_their_bounds_and_repeat_under_a_seed():
    x = images(n=200, h=28, w=28)
    augment = RandomAffine()
    a, b = augment(x, np.random.default_rng(7)), augment(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not np.array_equal(a, augment(x, np.random.default_rng(8)))
    assert (a >= -1e-6).all() and (a <= 1 + 1e-6).all()  # bilinear: a convex mix of pixels and zeros


def test_no_move_is_the_identity():
    x = images()
    np.testing.assert_array_equal(RandomAffine(0, 0, 0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_shift": -1}, "max_shift must be a number >= 0"),
    ({"max_shift": 1.5}, "max_shift counts whole pixels"),
    ({"max_rotation": 200}, "max_rotation is in degrees, at most 180"),
    ({"max_scale": 1.0}, "max_scale must be below 1"),
    ({"max_scale": float("nan")}, "max_scale must be a number >= 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomAffine(**kwargs)


def test_a_batch_that_is_not_images_is_refused():
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\), got shape \(4, 784\)"):
        RandomAffine()(np.zeros((4, 784), np.float32), np.random.default_rng(0))


def test_fit_refuses_augmentation_for_a_model_without_image_input():
    model = Sequential([Dense(6, 2)], input_shape=(6,))
    with pytest.raises(ValueError, match=r"augment moves images \(C, H, W\); this model takes \(6,\)"):
        model.fit(np.zeros((4, 6)), np.zeros(4, int), augment=RandomAffine(), verbose=False)


def test_fit_with_augmentation_repeats_under_a_seed():
    x, y = images(n=32, h=8, w=8), np.arange(32) % 3

    def trained():
        model = Sequential([Flatten(), Dense(64, 3)], input_shape=(1, 8, 8), seed=4)
        model.fit(x, y, epochs=2, batch_size=8, verbose=False, augment=RandomAffine(1, 5, 0.05))
        return model.params["dense/w"]

    plain = Sequential([Flatten(), Dense(64, 3)], input_shape=(1, 8, 8), seed=4)
    plain.fit(x, y, epochs=2, batch_size=8, verbose=False)
    np.testing.assert_array_equal(trained(), trained())
    assert not np.array_equal(trained(), plain.params["dense/w"])
