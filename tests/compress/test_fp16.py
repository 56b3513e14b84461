"""quantize.fp16 stores float16, keeps float32 I/O, and the loss and decoding harnesses run on it."""

import numpy as np
import onnx

from edgescale.bench.loss import onnx_loss
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.fp16 import Fp16Config, fp16
from edgescale.compress.onnx_graph import initializer_bytes, load
from edgescale.compress.registry import StepContext

# float16 rounding of weights and activations: measured SQNR 81 dB on the trained tiny model.
MIN_SQNR_DB = 60.0


def _run(src, tmp_path, cfg=None):
    return fp16(src, cfg or Fp16Config(), StepContext(tmp_path, log=lambda m: None))


def test_weights_are_float16_and_io_stays_float32(trained_onnx, tmp_path, val_ids, agreement):
    out = _run(trained_onnx, tmp_path)
    before, after = initializer_bytes(load(trained_onnx)), initializer_bytes(load(out))
    assert after.get("FLOAT16", 0) >= 0.95 * before["FLOAT"] / 2 and after.get("FLOAT", 0) < 0.05 * before["FLOAT"]
    g = onnx.load(str(out)).graph
    for v in (*g.input, *g.output):
        assert v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), v.name
    assert agreement(trained_onnx, out, val_ids)[1] > MIN_SQNR_DB


def test_loss_and_decoding_harnesses_run_on_the_fp16_graph(trained_onnx, corpus, tmp_path):
    out = _run(trained_onnx, tmp_path)
    ref = onnx_loss(trained_onnx, corpus["validation"], 64, 64, 4096, 8)
    got = onnx_loss(out, corpus["validation"], 64, 64, 4096, 8)
    assert np.isfinite(got.bits_per_byte) and abs(got.bits_per_byte / ref.bits_per_byte - 1) < 0.005
    lm = OrtCausalLM(out)
    assert lm.sig.kv_dtype is np.float32  # the harness feeds a float32 cache, as for fp32 graphs
    prompt = corpus["validation"].tokens[:16].astype(np.int64)[None]
    assert lm.generate(prompt, 8) == OrtCausalLM(trained_onnx).generate(prompt, 8)


def test_listed_op_types_compute_in_float32(trained_onnx, tmp_path):
    """A blocked op gets every input through a Cast to float32 (its parameters are stored as float16)."""
    out = _run(trained_onnx, tmp_path, Fp16Config(float32_op_types=["LayerNormalization"]))
    g = onnx.load(str(out)).graph
    producers = {o: n for n in g.node for o in n.output}
    norms = [n for n in g.node if n.op_type == "LayerNormalization"]
    assert norms
    for node in norms:
        for name in node.input:
            cast = producers[name]
            assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT, (node.name, name)
