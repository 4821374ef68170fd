"""Layer windows and the receptive-field column of Sequential.summary()."""
import io

from fastconv import models
from fastconv.layers import IDENTITY_WINDOW, AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastconv.model import Sequential


def test_window_layers_report_kernel_stride_padding():
    assert Conv2D(1, 4, (3, 5), stride=(1, 2), padding=(0, 1)).window == ((3, 5), (1, 2), (0, 1))
    assert MaxPool2D(2).window == ((2, 2), (2, 2), (0, 0))  # stride defaults to the kernel
    assert AvgPool2D(3, stride=1, padding=1).window == ((3, 3), (1, 1), (1, 1))


def test_elementwise_layers_pass_through_and_flat_layers_end_the_geometry():
    assert ReLU().window == Dropout(0.5).window == IDENTITY_WINDOW == ((1, 1), (1, 1), (0, 0))
    assert Flatten().window is None
    assert Dense(4, 2).window is None


def fields_and_jumps(model):
    return [None if f is None else ((f[0].receptive_field, f[1].receptive_field), (f[0].jump, f[1].jump))
            for f in model.receptive_fields()]


def test_receptive_fields_of_the_reference_cnn():
    # conv3 -> 3, relu keeps it, pool2 adds 1 step of jump 1 -> 4, conv3 at jump 2 -> 8, pool -> 10
    square = [(3, 1), (3, 1), (4, 2), (8, 2), (8, 2), (10, 4)]
    expected = [((f, f), (j, j)) for f, j in square] + [None] * 5
    assert fields_and_jumps(models.build("cnn")) == expected


def test_receptive_fields_along_each_axis_separately():
    # H: conv k3 -> 3 (jump 1), pool k1 -> 3. W: conv k1 -> 1, pool k2 s2 -> 2 (jump 2).
    model = Sequential([Conv2D(1, 2, (3, 1)), MaxPool2D((1, 2)), Flatten(), Dense(2 * 6 * 4, 3)],
                       input_shape=(1, 8, 8))
    assert fields_and_jumps(model) == [((3, 1), (1, 1)), ((3, 2), (1, 2)), None, None]


def test_a_relu_after_flatten_has_no_field_and_neither_does_a_flat_input():
    model = models.build("dense")
    assert model.receptive_fields() == [None] * 4
    flat = Sequential([ReLU(), Dense(784, 10)], input_shape=(784,))
    assert flat.receptive_fields() == [None, None]


def summary_rows(model, **kwargs):
    out = io.StringIO()
    model.summary(file=out, **kwargs)
    lines = out.getvalue().splitlines()
    return lines, {line.split()[0]: line for line in lines if line.split() and line.split()[0] in
                   ["input"] + [layer.name for layer in model.layers]}


def test_summary_receptive_field_column_for_the_cnn():
    model = models.build("cnn")
    lines, rows = summary_rows(model, receptive_field=True)
    assert "Receptive field" in lines[2]
    assert rows["input"].endswith("1x1")
    expected = {"conv2d": "3x3", "relu": "3x3", "max_pool2d": "4x4", "conv2d_1": "8x8",
                "relu_1": "8x8", "max_pool2d_1": "10x10"}
    for layer in model.layers:
        row = rows[layer.name]
        if layer.name in expected:
            assert row.split()[-1] == expected[layer.name] and row.split()[-2] == f"{layer.param_count():,}"
        else:  # flattened: the column is blank, the row ends with the parameter count
            assert row.split()[-1] == f"{layer.param_count():,}", row


def test_summary_without_the_flag_has_no_field_column():
    lines, rows = summary_rows(models.build("cnn"))
    assert "Receptive field" not in "\n".join(lines)
    assert rows["conv2d"].split()[-1] == "320"
    assert rows["max_pool2d_1"].split()[-1] == "0"


def test_summary_receptive_field_column_for_lenet5():
    # conv5 -> 5, avg-pool2 -> 6 (jump 2), conv5 -> 6 + 4*2 = 14, avg-pool2 -> 16
    model = models.build("lenet5")
    _, rows = summary_rows(model, receptive_field=True)
    fields = [rows[layer.name].split()[-1] for layer in model.layers[:6]]
    assert fields == ["5x5", "5x5", "6x6", "14x14", "14x14", "16x16"]
