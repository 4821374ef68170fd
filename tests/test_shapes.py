"""Output-size, FLOP and receptive-field arithmetic against hand-computed tables."""
import pytest

from fastconv.shapes import FieldRow, as_pair, conv_flops, conv_out_size, dense_flops, receptive_field


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected",
    [
        (28, 3, 1, 0, 26),  # reference CNN conv1
        (26, 2, 2, 0, 13),  # pool1
        (13, 3, 1, 0, 11),  # conv2
        (11, 2, 2, 0, 5),  # pool2 drops the last row
        (28, 5, 1, 2, 28),  # "same" padding
        (7, 3, 2, 1, 4),
        (5, 5, 1, 0, 1),  # kernel == input
        (1, 3, 1, 1, 1),
        (10, 1, 3, 0, 4),
    ],
)
def test_conv_out_size_table(size, kernel, stride, padding, expected):
    assert conv_out_size(size, kernel, stride, padding) == expected


def test_conv_out_size_rejects_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match="kernel 6 is larger than the padded input 5"):
        conv_out_size(3, 6, 1, 1)


@pytest.mark.parametrize("stride, padding, message", [(0, 0, "stride"), (-1, 0, "stride"), (1, -1, "padding")])
def test_conv_out_size_rejects_bad_stride_and_padding(stride, padding, message):
    with pytest.raises(ValueError, match=message):
        conv_out_size(8, 3, stride, padding)


def test_exact_mode_rejects_a_stride_that_does_not_tile():
    assert conv_out_size(12, 2, 2, exact=True) == 6
    with pytest.raises(ValueError, match="does not tile"):
        conv_out_size(11, 2, 2, exact=True)


def test_conv_flops_count_a_multiply_and_an_add_per_weight_per_output_pixel():
    # reference CNN conv2 on one image: 64 filters of 32x3x3 at 11x11 positions
    assert conv_flops(1, 64, 32, 3, 3, 11, 11) == 2 * 64 * 32 * 9 * 121 == 4_460_544
    assert conv_flops(64, 64, 32, 3, 3, 11, 11) == 64 * 4_460_544
    assert conv_flops(2, 3, 5, 7, 1, 4, 6) == 2 * 2 * 3 * 5 * 7 * 1 * 4 * 6  # every factor counts once
    assert conv_flops(0, 32, 1, 3, 3, 26, 26) == 0  # an empty batch does no work


def test_dense_flops_are_those_of_a_1x1_conv():
    assert dense_flops(1, 1600, 128) == 2 * 1600 * 128 == 409_600
    assert dense_flops(3, 128, 10) == 3 * 2 * 128 * 10 == conv_flops(3, 10, 128, 1, 1, 1, 1)


def test_as_pair():
    assert as_pair(3, "stride", 1) == (3, 3)
    assert as_pair((1, 2), "stride", 1) == (1, 2)
    with pytest.raises(TypeError, match="stride"):
        as_pair(1.5, "stride", 1)
    with pytest.raises(TypeError, match="stride"):
        as_pair(True, "stride", 1)
    with pytest.raises(ValueError, match="stride"):
        as_pair((1, 2, 3), "stride", 1)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        as_pair((0, -1), "padding", 0)


def test_receptive_field_of_the_reference_cnn():
    # conv 3x3, pool 2, conv 3x3, pool 2 on 28x28: fields 3/4/8/10, not 3/6/10/20.
    rows = receptive_field([(3, 1, 0), (2, 2, 0), (3, 1, 0), (2, 2, 0)], 28)
    assert rows == [
        FieldRow(size=26, receptive_field=3, jump=1, start=1.5),
        FieldRow(size=13, receptive_field=4, jump=2, start=2.0),
        FieldRow(size=11, receptive_field=8, jump=2, start=4.0),
        FieldRow(size=5, receptive_field=10, jump=4, start=5.0),
    ]


def test_receptive_field_with_stride_two_and_padding():
    # conv k3 s2 p1, conv k3 s1 p1, pool k2 s2 on a 7-pixel axis, by hand:
    #   size 4, field 3, jump 2, start 0.5 (the padding centres the window on pixel 0)
    #   size 4, field 3 + 2*2 = 7, jump 2, start 0.5
    #   size 2, field 7 + 1*2 = 9, jump 4, start 0.5 + 0.5*2 = 1.5
    rows = receptive_field([(3, 2, 1), (3, 1, 1), (2, 2, 0)], 7)
    assert [(r.size, r.receptive_field, r.jump, r.start) for r in rows] == [
        (4, 3, 2, 0.5),
        (4, 7, 2, 0.5),
        (2, 9, 4, 1.5),
    ]


def test_receptive_field_of_lenet5():
    # conv 5, avgpool 2, conv 5, avgpool 2 on 28: 5, 6, 14, 16
    rows = receptive_field([(5, 1, 0), (2, 2, 0), (5, 1, 0), (2, 2, 0)], 28)
    assert [r.receptive_field for r in rows] == [5, 6, 14, 16]
    assert [r.size for r in rows] == [24, 12, 8, 4]
