"""The benchmark shapes and their work counts, against hand arithmetic."""
import numpy as np
import pytest

from fastconv import registry
from fastconv.workloads import NETWORKS, Workload, workloads


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
    ],
)
def test_output_shapes(network, name, out_chw):
    assert Workload(layer(network, name), 7, "forward").out_shape == (7,) + out_chw


def test_each_layer_feeds_the_next_after_pooling():
    for layers in NETWORKS.values():
        for pool, conv in zip(layers[1::2], layers[2::2]):
            assert Workload(pool, 1, "forward").out_shape[1:] == conv.in_shape


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
