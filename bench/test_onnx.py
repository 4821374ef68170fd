"""onnxruntime running fastconv's models exported by fastconv
(``fastconv.interop.save_onnx``), when it is installed (never a dependency),
with as many intra-op threads as fastconv: the same groups as
bench/test_training.py's inference (``<model> inference N=...``)."""
import numpy as np
import pytest

from fastconv import interop, models
from fastconv.workloads import BATCHES, INFERENCE_MODELS

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnx", reason='the interop extra is not installed (pip install "fastconv[interop]")')


@pytest.mark.parametrize("batch", BATCHES, ids=lambda n: f"N{n}-onnx")
@pytest.mark.parametrize("name", INFERENCE_MODELS)
def test_onnx_inference(measure, thread_count, tmp_path, name, batch):
    path = tmp_path / f"{name}.onnx"
    interop.save_onnx(models.build(name, seed=0), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = thread_count
    options.inter_op_num_threads = 1  # one chain of nodes: nothing runs beside it
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch,) + models.INPUT_SHAPE, dtype=np.float32)
    measure(f"{name} inference N={batch}", lambda: session.run(["logits"], {"x": x}),
            lambda seconds: (batch / seconds, "images/s"), images=batch)
