"""The benchmark shapes and their work counts, against hand arithmetic."""
import time

import numpy as np
import pytest

from fastconv import explain, fusion, models, op_table, registry
from fastconv import workloads as workloads_module
from fastconv.layers import BatchNorm, BatchNorm2D, Conv2D
from fastconv.workloads import BENCHMARKED_MODELS, NETWORKS, Workload, workloads

REF = {"backend": "numpy", "algorithm": "reference"}


def layer(network, name):
    (found,) = [l for l in NETWORKS[network] if l.name == name]
    return found


@pytest.mark.parametrize(
    "network, name, out_chw",
    [
        ("cnn", "conv1", (32, 26, 26)),
        ("cnn", "pool1", (32, 13, 13)),
        ("cnn", "conv2", (64, 11, 11)),
        ("cnn", "pool2", (64, 5, 5)),
        ("lenet5", "conv1", (6, 24, 24)),
        ("lenet5", "pool1", (6, 12, 12)),
        ("lenet5", "conv2", (16, 8, 8)),
        ("lenet5", "pool2", (16, 4, 4)),
        ("cnn-fused", "block1", (32, 13, 13)),
        ("cnn-fused", "block2", (64, 5, 5)),
        ("cnn-deep", "conv1", (32, 28, 28)),  # "same" padding keeps 28x28
        ("cnn-deep", "pool1", (32, 14, 14)),
        ("cnn-deep", "conv2", (64, 14, 14)),
        ("cnn-deep", "pool2", (64, 7, 7)),
        ("cnn-deep", "conv3", (128, 7, 7)),
        ("cnn-deep", "norm1", (32, 14, 14)),  # batch norm keeps its input's shape
        ("cnn-deep", "norm4", (128,)),  # after the dense 128
        ("cnn-deep-fused", "block1", (32, 14, 14)),
        ("cnn-deep-fused", "block2", (64, 7, 7)),
    ],
)
def test_output_shapes(network, name, out_chw):
    assert Workload(layer(network, name), 7, "forward").out_shape == (7,) + out_chw


def test_networks_and_their_layer_names():
    assert {network: [l.name for l in layers] for network, layers in NETWORKS.items()} == {
        "cnn": ["conv1", "pool1", "conv2", "pool2"],
        "cnn-fused": ["block1", "block2"],
        "lenet5": ["conv1", "pool1", "conv2", "pool2"],
        "cnn-deep": ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "norm3", "norm4"],
        "cnn-deep-fused": ["block1", "block2"],  # conv3 is followed by batch norm, not a pool: not fused
    }
    assert {l.kind for layers in NETWORKS.values() for l in layers} == {
        op.name for op in (op_table.CONV2D, op_table.MAX_POOL2D, op_table.AVG_POOL2D, op_table.FUSED,
                           op_table.BATCH_NORM)}
    assert fusion.FUSED_OP == op_table.FUSED.name


def shapes_seen_running(model_name):
    """{(network, layer name): (input, output) per image} recorded while one
    image runs through the model step by step, as the benchmarks name them."""
    model = models.build(model_name, **REF)
    x = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    seen, counts = {}, {}

    def stem(layer):
        return "conv" if isinstance(layer, Conv2D) else "norm" if isinstance(layer, (BatchNorm2D, BatchNorm)) \
            else "pool"

    def record(network, stem, x, y):
        counts[network, stem] = counts.get((network, stem), 0) + 1
        seen[network, f"{stem}{counts[network, stem]}"] = (x.shape[1:], y.shape[1:])

    for step in model.steps:
        if isinstance(step, fusion.ConvReluMaxPoolStep):
            inner = x
            for layer in step.layers:  # as the unfused network times them
                out = layer.forward(inner, training=False)
                if layer.kind != "relu":
                    record(model_name, stem(layer), inner, out)
                inner = out
            y = step.forward(x, training=False)
            assert y.shape == inner.shape
            record(f"{model_name}-fused", "block", x, y)
        else:
            (layer,) = step.layers
            y = step.forward(x, training=False)
            if layer.kind in op_table.OPS or isinstance(layer, BatchNorm2D):
                record(model_name, stem(layer), x, y)
        x = y
    return seen


@pytest.mark.parametrize("model_name", BENCHMARKED_MODELS)
def test_layer_shapes_are_those_the_model_computes(model_name):
    seen = shapes_seen_running(model_name)
    derived = {(l.network, l.name): (l.in_shape, Workload(l, 1, "forward").out_shape[1:])
               for network in (model_name, f"{model_name}-fused") for l in NETWORKS.get(network, ())}
    assert derived == seen


def test_cnn_deep_convs_are_same_padded_and_run_through_ops():
    for conv in (l for l in NETWORKS["cnn-deep"] if l.kind == op_table.CONV2D.name):
        assert conv.padding == (1, 1) and conv.window[1:] == (3, 3)
    for layer in NETWORKS["cnn-deep"] + NETWORKS["cnn-deep-fused"]:
        forward, backward = Workload(layer, 2, "forward"), Workload(layer, 2, "backward")
        out = forward.call(*registry.REFERENCE)()
        out = out[0] if isinstance(out, tuple) else out  # the fused op returns its code, batch norm statistics
        assert out.shape == forward.out_shape, layer.label
        grads = backward.call(*registry.REFERENCE)()
        dx = grads[0] if isinstance(grads, tuple) else grads
        assert dx.shape == backward.x_shape, layer.label


def test_a_compiled_variant_agrees_with_the_reference_on_a_padded_conv():
    work = Workload(dict((l.name, l) for l in NETWORKS["cnn-deep"])["conv2"], 2, "forward")
    backend, algorithm = next(v for v in registry.variants(work.op) if v != registry.REFERENCE)
    np.testing.assert_allclose(work.call(backend, algorithm)(), work.call(*registry.REFERENCE)(),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_name", BENCHMARKED_MODELS)
def test_conv_flops_agree_with_explain_layer_by_layer(model_name):
    model = models.build(model_name, **REF)
    explained = [cost.flops for layer, cost in zip(model.layers, explain.layer_costs(model))
                 if isinstance(layer, Conv2D)]
    convs = [l for l in NETWORKS[model_name] if l.kind == op_table.CONV2D.name]
    assert [Workload(l, 1, "forward").flops() for l in convs] == explained
    # a fused block counts the work of its conv alone
    blocks = NETWORKS.get(f"{model_name}-fused", ())
    assert [Workload(b, 1, "forward").flops() for b in blocks] == explained[:len(blocks)]


def test_cnn_deep_conv_flops_per_image():
    per_image = [Workload(l, 1, "forward").flops() for l in NETWORKS["cnn-deep"] if l.kind == "conv2d"]
    assert per_image == [2 * 32 * 1 * 9 * 28 * 28, 2 * 64 * 32 * 9 * 14 * 14, 2 * 128 * 64 * 9 * 7 * 7]


def test_each_layer_feeds_the_next_until_flatten():
    for layers in NETWORKS.values():
        for before, after in zip(layers, layers[1:]):
            if len(after.in_shape) == 3:  # not the batch norm of features after Flatten and Dense
                assert Workload(before, 1, "forward").out_shape[1:] == after.in_shape, (before.label, after.label)


@pytest.mark.parametrize(
    "network, name, batch, forward_flops",
    [
        ("cnn", "conv1", 1, 2 * 32 * 1 * 3 * 3 * 26 * 26),  # 389,376
        ("cnn", "conv2", 64, 2 * 64 * 64 * 32 * 3 * 3 * 11 * 11),  # 285,474,816
        ("lenet5", "conv2", 256, 2 * 256 * 16 * 6 * 5 * 5 * 8 * 8),
    ],
)
def test_conv_flops_forward_and_twice_backward(network, name, batch, forward_flops):
    conv = layer(network, name)
    assert Workload(conv, batch, "forward").flops() == forward_flops
    assert Workload(conv, batch, "backward").flops() == 2 * forward_flops
    assert Workload(conv, batch, "forward").counts() == {"flops": forward_flops}


def test_reference_cnn_conv_flops_per_image():
    # conv1 + conv2 of one image: 0.39 + 4.46 MFLOP (the dense layers add the rest of 5.26)
    per_image = sum(Workload(l, 1, "forward").flops() for l in NETWORKS["cnn"] if l.kind == "conv2d")
    assert per_image == 389_376 + 4_460_544


@pytest.mark.parametrize(
    "network, name, batch, direction, elements",
    [
        ("cnn", "pool1", 64, "forward", 64 * 32 * (26 * 26 + 13 * 13)),  # x in, out out
        ("cnn", "pool1", 64, "backward", 64 * 32 * (13 * 13 + 2 * 26 * 26)),  # dy, x in; dx out
        ("lenet5", "pool1", 1, "backward", 6 * (12 * 12 + 24 * 24)),  # avg-pool: x not read
    ],
)
def test_pool_bytes(network, name, batch, direction, elements):
    work = Workload(layer(network, name), batch, direction)
    assert work.bytes_moved() == 4 * elements
    assert work.counts() == {"bytes": 4 * elements}


def test_rate_units():
    conv = Workload(layer("cnn", "conv2"), 64, "forward")
    assert conv.rate(0.5) == (conv.flops() / 0.5e9, "GFLOP/s")
    pool = Workload(layer("cnn", "pool1"), 64, "backward")
    assert pool.rate(2.0) == (pool.bytes_moved() / 2e9, "GB/s")


def test_workloads_cover_every_layer_batch_and_direction():
    found = workloads()
    assert len(found) == sum(len(l) for l in NETWORKS.values()) * 3 * 2
    assert {w.op for w in found} == set(registry.OPS)
    assert len(set(found)) == len(found)


def test_workloads_filter_by_op_and_reject_unknown_network():
    found = workloads(["cnn"], [64], ["max_pool2d"])
    assert [(w.layer.name, w.direction) for w in found] == [("pool1", "forward"), ("pool2", "forward")]
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        workloads(["vgg"])


def test_calls_run_the_named_op():
    conv = Workload(layer("lenet5", "conv2"), 2, "forward")
    assert conv.call("numpy", "reference")().shape == conv.out_shape
    dx, dw, db = Workload(conv.layer, 2, "backward").call("numpy", "reference")()
    assert (dx.shape, dw.shape, db.shape) == (conv.x_shape, conv.w_shape, (16,))
    pool = Workload(layer("lenet5", "pool2"), 2, "backward")
    dx = pool.call("numpy", "reference")()
    assert dx.shape == pool.x_shape and dx.dtype == np.float32


def test_gemm_call_runs_both_directions():
    conv = layer("cnn", "conv1")
    assert Workload(conv, 2, "forward").gemm_call()().shape == (32, 2 * 26 * 26)
    Workload(conv, 2, "backward").gemm_call()()


def test_label_and_slug_name_the_workload():
    work = Workload(layer("cnn", "conv2"), 64, "backward")
    assert work.label == "cnn.conv2 N=64 backward"
    assert work.slug == "cnn.conv2-N64-backward"


def test_a_workload_offers_only_the_variants_that_can_compute_it():
    lenet = {w.layer.name: w for w in workloads(["lenet5"], [1], directions=["forward"])}
    cnn = {w.layer.name: w for w in workloads(["cnn"], [1], directions=["forward"])}
    assert "winograd" not in {a for _, a in lenet["conv1"].variants()}  # 5x5
    assert {("cython", "winograd"), ("numba", "winograd")} <= set(cnn["conv2"].variants())
    assert cnn["conv2"].variants("numba") == [v for v in cnn["conv2"].variants() if v[0] == "numba"]




def test_interleaved_timing_takes_turns_and_gives_each_functions_median(monkeypatch):
    calls = []

    def busy(name, seconds):
        def call():
            calls.append(name)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return call

    fns = [busy("a", 0.001), busy("b", 0.004), busy("c", 0.0)]
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    medians = workloads_module.interleaved_median_seconds(fns, repeat=3, settle=0.25)
    assert sleeps == [0.25] * 9  # before each sample
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # each warmed up, then one call sizes its samples
    turns = [name for i, name in enumerate(calls[6:]) if i == 0 or calls[6 + i - 1] != name]
    assert turns == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # a round each, one further along
    # each turn: the untimed calls, then the sample, as many of each
    first_turn = len(calls[6:]) - len("".join(calls[6:]).lstrip("a"))
    assert first_turn >= 2 and first_turn % 2 == 0
    assert medians[0] >= 0.001 and medians[1] >= 0.004 and medians[1] > medians[0] > medians[2]
