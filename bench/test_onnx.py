"""onnxruntime running the reference CNN exported by fastconv
(``fastconv.interop.save_onnx``), when it is installed (never a dependency),
with as many intra-op threads as fastconv: the same groups as
bench/test_training.py's inference (``cnn inference N=...``)."""
import numpy as np
import pytest

from fastconv import interop, models

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnx", reason='the interop extra is not installed (pip install "fastconv[interop]")')


@pytest.mark.parametrize("batch", (1, 64, 256), ids=lambda n: f"N{n}-onnx")
def test_onnx_inference(measure, thread_count, tmp_path, batch):
    path = tmp_path / "cnn.onnx"
    interop.save_onnx(models.build("cnn", seed=0), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = thread_count
    options.inter_op_num_threads = 1  # one chain of nodes: nothing runs beside it
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch,) + models.INPUT_SHAPE, dtype=np.float32)
    measure(f"cnn inference N={batch}", lambda: session.run(["logits"], {"x": x}),
            lambda seconds: (batch / seconds, "images/s"), images=batch)
