"""fastconv-explain: per-layer parameters, FLOPs, receptive fields, and the
dense-vs-CNN comparison, from named models and from checkpoints."""
import pytest

from fastconv import explain, models
from fastconv.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastconv.model import Sequential

REF = {"backend": "numpy", "algorithm": "reference"}


def costs_by_name(model):
    return {c.name: c for c in explain.layer_costs(model)}


def test_cnn_parameters_split_into_weights_and_biases():
    costs = costs_by_name(models.build("cnn"))
    split = {name: (c.weights, c.biases, c.params) for name, c in costs.items() if c.params}
    assert split == {
        "conv2d": (32 * 1 * 3 * 3, 32, 320),
        "conv2d_1": (64 * 32 * 3 * 3, 64, 18_496),
        "dense": (1600 * 128, 128, 204_928),
        "dense_1": (128 * 10, 10, 1_290),
    }
    assert sum(c.params for c in costs.values()) == models.build("cnn").param_count()


def test_cnn_forward_flops_per_layer():
    costs = costs_by_name(models.build("cnn"))
    assert costs["conv2d"].flops == 2 * 1 * 3 * 3 * 26 * 26 * 32 == 389_376
    assert costs["conv2d_1"].flops == 2 * 32 * 3 * 3 * 11 * 11 * 64
    assert costs["dense"].flops == 2 * 1600 * 128
    assert costs["dense_1"].flops == 2 * 128 * 10
    for name in ("relu", "max_pool2d", "flatten", "dropout"):
        assert costs[name].flops == 0, name
    # comparisons: one per ReLU value, three per 2x2 max-pool output
    assert costs["relu"].other_ops == 32 * 26 * 26
    assert costs["max_pool2d"].other_ops == 3 * 32 * 13 * 13
    assert costs["dropout"].other_ops == costs["flatten"].other_ops == 0


def test_avg_pool_counts_its_additions_and_the_division():
    costs = costs_by_name(models.build("lenet5"))
    assert costs["avg_pool2d"].other_ops == 4 * 6 * 12 * 12
    assert costs["conv2d"].flops == 2 * 1 * 5 * 5 * 24 * 24 * 6


def test_cnn_receptive_fields_and_jumps():
    costs = explain.layer_costs(models.build("cnn"))
    assert [c.field for c in costs] == [(3, 3), (3, 3), (4, 4), (8, 8), (8, 8), (10, 10)] + [None] * 5
    assert [c.jump for c in costs[:6]] == [(1, 1), (1, 1), (2, 2), (2, 2), (2, 2), (4, 4)]


def table_rows(text):
    """{first word of a table row: its cells}, for rows that start with a layer name or Total."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) > 1 and cells[1].startswith("(") or cells[:1] == ["Total"]:
            rows[cells[0]] = cells
    return rows


def test_command_prints_the_cnn_table_and_comparison(capsys):
    assert explain.main(["cnn"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    # name (type) shape weights biases params flops other field jump
    assert rows["conv2d"][2:] == ["32x26x26", "288", "32", "320", "0", "389,376", "0", "3x3", "1"]
    assert rows["max_pool2d"][-2:] == ["4x4", "2"]
    assert rows["conv2d_1"][3:6] == ["18,432", "64", "18,496"]
    assert rows["max_pool2d_1"][-2:] == ["10x10", "4"]
    assert rows["dense"][2:] == ["128", "204,800", "128", "204,928", "0", "409,600", "0"]  # no field, no jump
    assert rows["dense_1"][5] == "1,290"
    costs = explain.layer_costs(models.build("cnn"))
    total_flops, total_other = sum(c.flops for c in costs), sum(c.other_ops for c in costs)
    assert total_flops == 389_376 + 2 * 32 * 9 * 121 * 64 + 2 * 1600 * 128 + 2 * 128 * 10
    assert rows["Total"][1:] == ["224,800", "234", "225,034", "0", f"{total_flops:,}", f"{total_other:,}"]
    assert explain.FOOTER in out
    assert "32 filters x (3x3x1 weights + 1 bias) = 32 x 10 = 320 parameters" in out
    assert "784 inputs x 128 units + 128 biases = 100,480 parameters" in out
    assert "784 x 21,632 + 21,632 = 16,981,120 parameters" in out


def small_cnn():
    """A model unlike the named ones: 4 filters, padding 1, on 1x6x6."""
    return Sequential([Conv2D(1, 4, 3, padding=1, **REF), ReLU(), MaxPool2D(2, **REF), Flatten(), Dense(36, 3)],
                      input_shape=(1, 6, 6))


def test_command_explains_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "small.npz"
    small_cnn().save(path)
    assert explain.main(["--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: input 1x6x6")
    rows = table_rows(out)
    assert rows["conv2d"][2:] == ["4x6x6", "36", "4", "40", "0", f"{2 * 9 * 6 * 6 * 4:,}", "0", "3x3", "1"]
    assert rows["max_pool2d"][2:] == ["4x3x3", "0", "0", "0", "0", "0", f"{3 * 4 * 3 * 3}", "4x4", "2"]
    assert rows["dense"][2:6] == ["3", "108", "3", "111"]
    # the comparison takes its numbers from the checkpoint's model
    assert "4 filters x (3x3x1 weights + 1 bias) = 4 x 10 = 40 parameters" in out
    assert "6x6 = 36 positions" in out
    assert "36 x 144 + 144 = 5,328 parameters" in out
    assert "784 inputs x 128 units + 128 biases = 100,480 parameters" in out


def test_checkpoint_of_a_named_model_gives_the_named_table(tmp_path, capsys):
    path = tmp_path / "lenet5.npz"
    models.build("lenet5", **REF).save(path)
    explain.main(["lenet5"])
    named_table, named_comparison = capsys.readouterr().out.split("\n\n")
    explain.main(["--checkpoint", str(path)])
    saved_table, saved_comparison = capsys.readouterr().out.split("\n\n")
    assert saved_table.splitlines()[1:] == named_table.splitlines()[1:]  # all but the title
    assert saved_comparison == named_comparison.replace("lenet5", str(path))
    assert "6 filters x (5x5x1 weights + 1 bias) = 6 x 26 = 156 parameters" in saved_comparison


def test_batch_norm_rows_count_gamma_and_beta_as_trainable_and_the_statistics_as_fixed(capsys):
    explain.main(["cnn-deep"])
    rows = table_rows(capsys.readouterr().out)
    # 32 channels: gamma and beta trainable, running mean and variance fixed; a scale and a shift per value
    assert rows["batch_norm2d"][2:] == ["32x14x14", "32", "32", "64", "64", "0", f"{2 * 32 * 14 * 14:,}", "4x4", "2"]
    assert rows["batch_norm"][2:] == ["128", "128", "128", "256", "256", "0", "256"]
    assert rows["Total"][3:5] == ["897,610", "704"]


def test_a_model_without_conv_is_compared_with_the_reference_cnn(capsys):
    explain.main(["dense"])
    out = capsys.readouterr().out
    assert "cnn conv2d: 32 filters" in out
    rows = table_rows(out)
    assert rows["dense"][2:] == ["128", "100,352", "128", "100,480", "0", f"{2 * 784 * 128:,}", "0"]


@pytest.mark.parametrize("argv, message", [
    ([], "one of the arguments model --checkpoint is required"),
    (["resnet"], "invalid choice: 'resnet'"),
    (["cnn", "--checkpoint", "x.npz"], "not allowed with argument"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        explain.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_checkpoint_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        explain.main(["--checkpoint", "/nonexistent/model.npz"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "fastconv-explain: error: /nonexistent/model.npz: no such checkpoint file\n"
