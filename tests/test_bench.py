"""fastconv-bench: runs on small shapes and reports every variant (no
timing is checked, only that the table is complete and consistent)."""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv import bench, registry
from fastconv.workloads import workloads

NETWORKS, BATCH = ["cnn", "lenet5"], 1


def run(argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = bench.main(argv)
    return status, printed.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One run over both networks at batch 1: (printed, markdown, json)."""
    folder = tmp_path_factory.mktemp("bench")
    markdown, as_json = folder / "table.md", folder / "table.json"
    status, printed = run(
        ["--network", *NETWORKS, "--batch", str(BATCH), "--repeat", "1",
         "--markdown", str(markdown), "--json", str(as_json)]
    )
    assert status == 0
    return printed, markdown.read_text(), json.loads(as_json.read_text())


def expected_rows():
    """(layer, N, op, direction, variant) of every variant, GEMM for conv."""
    rows = set()
    for work in workloads(NETWORKS, [BATCH]):
        names = ["/".join(v) for v in work.variants()] + (["numpy/gemm"] if work.is_conv else [])
        base = work.op.removesuffix("_backward")
        rows |= {(work.layer.label, str(BATCH), base, work.direction, name) for name in names}
    return rows


def test_prints_every_variant_once(report):
    printed, _, _ = report
    *table, legend = printed.splitlines()[2:]
    lines = [line.split() for line in table if line.strip()]
    assert sorted(tuple(cells[:5]) for cells in lines) == sorted(expected_rows())
    assert legend == bench.LEGEND


def test_the_legend_says_conv_rates_are_effective_and_may_pass_gemm(report):
    printed, markdown, _ = report
    assert "effective: the direct convolution's FLOPs" in bench.LEGEND and "exceed 100% of GEMM" in bench.LEGEND
    assert printed.rstrip().endswith(bench.LEGEND) and markdown.rstrip().endswith(bench.LEGEND)


def test_markdown_and_json_hold_the_same_rows(report):
    _, markdown, as_json = report
    assert len(markdown.splitlines()) == 2 + len(expected_rows()) + 2  # a blank line, the legend
    assert {(r["layer"], str(r["batch"]), r["op"].removesuffix("_backward"), r["direction"], r["variant"])
            for r in as_json["rows"]} == expected_rows()
    assert as_json["conditions"]["repeat"] == 1
    assert as_json["conditions"]["threads"] >= 1


def test_comparisons_follow_the_variants(report):
    _, _, as_json = report
    for row in as_json["rows"]:
        backend, algorithm = row["variant"].split("/")
        conv = row["op"].startswith("conv")
        assert (row["pct_of_gemm"] is not None) == conv
        if row["variant"] == "numpy/gemm":
            assert row["pct_of_gemm"] == pytest.approx(100)
        assert (row["speedup_over_naive"] is not None) == (backend in registry.COMPILED_BACKENDS)
        if algorithm == "naive":
            assert row["speedup_over_naive"] == pytest.approx(1)


def test_throughput_counts_the_workload(report):
    _, _, as_json = report
    works = {(w.layer.label, w.direction): w for w in workloads(NETWORKS, [BATCH])}
    for row in as_json["rows"]:
        work = works[row["layer"], row["direction"]]
        assert row["rate"] == pytest.approx(work.rate(row["ms"] / 1e3)[0])
        assert row["unit"] == ("GFLOP/s" if work.is_conv else "GB/s")


def test_runs_as_a_module_with_filters(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fastconv.bench", "--network", "lenet5", "--ops", "avg_pool2d",
         "--backend", "numpy", "--batch", "2", "--repeat", "1", "--threads", "1"],
        capture_output=True, text=True, check=True, cwd=tmp_path,  # not the source folder
    ).stdout
    assert out.startswith("threads: 1,")
    rows = [line.split()[:5] for line in out.splitlines()[2:] if line.strip()]
    assert rows == [[f"lenet5.pool{i}", "2", "avg_pool2d", "forward", "numpy/reference"] for i in (1, 2)]


def test_no_matching_layer_is_an_error(capsys):
    assert bench.main(["--network", "cnn", "--ops", "avg_pool2d", "--repeat", "1"]) == 2
    assert "no layer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--repeat", "0"], ["--batch", "0"], ["--threads", "0"], ["--ops", "conv3d"]]
)
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2


def test_the_header_names_the_cpu_and_the_cython_build(report):
    from fastconv import isa

    header = report[0].splitlines()[0]
    assert f"Cython kernels: the {isa.chosen()} build" in header
    assert report[2]["conditions"]["machine"]["cython_build"] == isa.chosen()


def installed(*modules) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


ENGINE_MODULES = {"fastconv": (), "torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx")}


def inference_lines(printed):
    """(model, N, engine, ms, ratio or None) per row of the inference table."""
    rows = []
    for line in printed.splitlines()[2:-1]:
        cells = line.split()
        rows.append((cells[0], int(cells[1]), cells[2], float(cells[3]),
                     float(cells[5].rstrip("x")) if len(cells) == 6 else None))
    return rows


def test_inference_mode_times_each_model_in_every_installed_engine_with_ratios():
    status, printed = run(["--inference", "--model", "cnn", "logreg", "--batch", "1", "2", "--repeat", "1"])
    assert status == 0
    assert "forward pass of cnn, logreg" in printed.splitlines()[0]
    assert printed.splitlines()[-1] == bench.ENGINE_LEGEND
    rows = inference_lines(printed)
    engines = [engine for engine, modules in ENGINE_MODULES.items() if installed(*modules)]
    assert [row[:3] for row in rows] == [(model, n, engine) for model in ("cnn", "logreg") for n in (1, 2)
                                         for engine in engines]
    fastconv_ms = {(model, n): ms for model, n, engine, ms, _ in rows if engine == "fastconv"}
    for model, n, engine, ms, ratio in rows:
        if engine == "fastconv":
            assert ratio is None
        else:  # fastconv's img/s over the engine's, from the printed (3-digit) times
            assert ratio == pytest.approx(ms / fastconv_ms[model, n], rel=0.02)


@pytest.mark.parametrize("missing, engine, reason", [
    ("onnx", "onnxruntime", 'the onnx package is needed for this: pip install "fastconv[interop]"'),
    ("onnxruntime", "onnxruntime", "onnxruntime"),
    ("torch", "torch", "torch"),
])
def test_inference_mode_without_an_engine_leaves_its_rows_out(monkeypatch, capsys, missing, engine, reason):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError, as when not installed
    monkeypatch.setattr(bench, "interleaved_median_seconds", lambda fns, repeat: [1e-3] * len(fns))  # which rows
    assert bench.main(["--inference", "--model", "cnn", "cnn-deep", "--batch", "1", "--repeat", "1"]) == 0
    out, err = capsys.readouterr()
    shown = {row[2] for row in inference_lines(out)}
    assert "fastconv" in shown and engine not in shown
    assert f"fastconv-bench: {engine} left out (" in err and reason in err
    assert err.count(f"{engine} left out") == 1 and "Traceback" not in err  # once, not once per model


def test_training_mode_times_fastconv_and_torch_steps_with_ratios():
    status, printed = run(["--training", "--model", "cnn", "logreg", "--batch", "2", "--repeat", "1"])
    assert status == 0
    assert "a training step of cnn, logreg (SGD with momentum)" in printed.splitlines()[0]
    assert printed.splitlines()[-1] == bench.ENGINE_LEGEND
    rows = inference_lines(printed)
    engines = ["fastconv"] + (["torch"] if installed("torch") else [])
    assert [row[:3] for row in rows] == [(model, 2, engine) for model in ("cnn", "logreg") for engine in engines]
    fastconv_ms = {model: ms for model, _, engine, ms, _ in rows if engine == "fastconv"}
    for model, _, engine, ms, ratio in rows:
        assert (ratio is None) == (engine == "fastconv")
        if ratio is not None:
            assert ratio == pytest.approx(ms / fastconv_ms[model], rel=0.02)


def test_a_timed_training_step_trains_the_model_and_torchs_a_copy():
    from fastconv import models

    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    y = np.arange(4)
    model = models.build("cnn", seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    if installed("torch"):
        bench._torch_train_step(model, x, y)()
        assert all(np.array_equal(before[k], v) for k, v in model.params.items())  # torch's step: its own copy
    bench._fastconv_train_step(model, x, y)()
    assert all(not np.array_equal(before[k], v) for k, v in model.params.items())


def test_training_without_torch_leaves_its_rows_out(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench, "interleaved_median_seconds", lambda fns, repeat: [1e-3] * len(fns))
    assert bench.main(["--training", "--model", "cnn", "cnn-deep", "--batch", "2", "--repeat", "1"]) == 0
    out, err = capsys.readouterr()
    assert {row[2] for row in inference_lines(out)} == {"fastconv"}
    assert err.count("fastconv-bench: torch left out (") == 1


@pytest.mark.parametrize("mode, timed", [("--inference", "the whole evaluation forward pass of cnn"),
                                         ("--training", "a training step of cnn (SGD with momentum)")])
def test_engine_tables_go_to_markdown_and_json_too(tmp_path, monkeypatch, capsys, mode, timed):
    # fastconv's call 2 ms, each other engine's 4 ms: fastconv twice as fast
    monkeypatch.setattr(bench, "interleaved_median_seconds", lambda fns, repeat: [2e-3] + [4e-3] * (len(fns) - 1))
    markdown, as_json = tmp_path / "table.md", tmp_path / "table.json"
    assert bench.main([mode, "--model", "cnn", "--batch", "8", "--repeat", "1",
                       "--markdown", str(markdown), "--json", str(as_json)]) == 0
    printed = capsys.readouterr().out
    records = json.loads(as_json.read_text())
    assert records["conditions"]["timed"] == timed and records["conditions"]["repeat"] == 1
    engines = [row[2] for row in inference_lines(printed)]
    assert [r["engine"] for r in records["rows"]] == engines and engines[0] == "fastconv"
    for r in records["rows"]:
        seconds = 2e-3 if r["engine"] == "fastconv" else 4e-3
        assert (r["model"], r["batch"]) == ("cnn", 8)
        assert r["ms"] == pytest.approx(seconds * 1e3) and r["images_per_second"] == pytest.approx(8 / seconds)
        assert r["fastconv_over_engine"] == (None if r["engine"] == "fastconv" else pytest.approx(2))
    lines = markdown.read_text().splitlines()
    assert lines[0] == "| model | N | engine | ms | img/s | fastconv/engine |"
    assert lines[2] == "| cnn | 8 | fastconv | 2.00 | 4,000 |  |"
    assert all(line.endswith("| 2.00x |") for line in lines[3:3 + len(engines) - 1])
    assert lines[-1] == bench.ENGINE_LEGEND


@pytest.mark.parametrize("argv, message", [
    (["--model", "cnn"], "--model goes with --inference or --training"),
    (["--inference", "--training"], "--inference and --training are two different tables"),
    (["--training", "--tune"], "--tune saves auto's choices and exits: run it alone"),
    (["--inference", "--network", "lenet5"], "--network is for the kernel table"),
    (["--training", "--ops", "conv2d", "--backend", "numba"], "--ops and --backend are for the kernel table"),
])
def test_options_of_one_table_are_refused_with_another(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def missing_folder(tmp_path, monkeypatch):
    return tmp_path / "no-such-folder" / "table.out", "no such folder"


def a_folder(tmp_path, monkeypatch):
    return tmp_path, "is a folder"


def read_only_folder(tmp_path, monkeypatch):
    """A folder the kernel refuses to write into (stubbed: root, which the
    tests may run as, may write into any folder of this machine)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(tmp_path) and real_access(path, mode))
    return tmp_path / "table.out", "not writable"


@pytest.mark.parametrize("option", ["--markdown", "--json"])
@pytest.mark.parametrize("unwritable", [missing_folder, a_folder, read_only_folder])
def test_an_unwritable_output_is_refused_before_any_timing(tmp_path, monkeypatch, capsys, option, unwritable):
    path, reason = unwritable(tmp_path, monkeypatch)
    monkeypatch.setattr(bench, "median_seconds", lambda *args: pytest.fail("timed before checking the output"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--network", "lenet5", "--batch", "1", "--repeat", "1", option, str(path)])
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"fastconv-bench: error: {option} {path}: ") and reason in last_line


def test_a_timed_user_variant_is_registered_only_while_the_command_runs(tmp_path):
    # Parsed by the docs test or run in a notebook, the command must not
    # leave the learner's function in the process's registry.
    from fastconv import ops

    source = tmp_path / "mine.py"
    source.write_text("from fastconv import ops\n"
                      "def mine(x, kernel_size, stride=None, padding=0):\n"
                      "    return ops.max_pool2d(x, kernel_size, stride, padding, backend='numpy', algorithm='reference')\n")
    argv = ["--ops", "max_pool2d", "--batch", "1", "--repeat", "1", "--user-variant", f"max_pool2d={source}:mine"]
    bench.parse_args(argv)
    assert ("user", "mine") not in ops.variants("max_pool2d")
    status, printed = run(argv)
    assert status == 0 and "user/mine" in printed
    assert ("user", "mine") not in ops.variants("max_pool2d")
