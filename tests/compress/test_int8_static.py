"""quantize.int8_static really quantizes, calibrates on the train split, and keeps logits, KV cache and I/O float."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

from edgescale.compress.int8_static import Int8StaticConfig, int8_static
from edgescale.compress.onnx_graph import activation_matmuls, op_counts, weight_matmuls
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256

# Stated thresholds on the briefly trained tiny model, validation text, centred logits.
# Measured: cosine 0.9988, SQNR 23.5 dB (QOperator and QDQ alike); int8 dynamic gives 24.5 dB.
MIN_COSINE, MIN_SQNR_DB = 0.995, 18.0


def _run(src, tmp_path, corpus, name="q", **cfg):
    work = tmp_path / name
    work.mkdir()
    return int8_static(src, Int8StaticConfig(**cfg), StepContext(work, log=lambda m: None, corpus=corpus))


def _scales(path) -> dict[str, float]:
    g = onnx.load(str(path)).graph
    return {t.name: float(numpy_helper.to_array(t)) for t in g.initializer if t.name.endswith("_scale") and not t.dims}


def _io_types(path) -> dict[str, int]:
    g = onnx.load(str(path)).graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output)}


def test_qoperator_turns_every_weight_matmul_into_qlinearmatmul(trained_onnx, corpus, tmp_path, val_ids, agreement):
    src = onnx.load(str(trained_onnx))
    out = _run(trained_onnx, tmp_path, corpus)
    counts = op_counts(out)
    assert counts["QLinearMatMul"] == len(weight_matmuls(src)) >= 8
    assert counts["MatMul"] == len(activation_matmuls(src))  # attention stays float by default
    assert _io_types(out) == _io_types(trained_onnx)  # float KV cache and logits
    int8 = sum(t.data_type == onnx.TensorProto.INT8 for t in onnx.load(str(out)).graph.initializer)
    assert int8 >= counts["QLinearMatMul"]
    cosine, sqnr = agreement(trained_onnx, out, val_ids)
    assert cosine > MIN_COSINE and sqnr > MIN_SQNR_DB, (cosine, sqnr)


def test_qdq_inserts_pairs_and_leaves_matmul_outputs_float(trained_onnx, corpus, tmp_path, val_ids, agreement):
    out = _run(trained_onnx, tmp_path, corpus, format="qdq")
    counts = op_counts(out)
    n_weights = len(weight_matmuls(onnx.load(str(trained_onnx))))
    assert "QLinearMatMul" not in counts
    assert counts["QuantizeLinear"] >= 1 and counts["DequantizeLinear"] >= n_weights + counts["QuantizeLinear"] - 1
    graph = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers["logits"] != "DequantizeLinear"  # logits are not rounded to 8 bits
    cosine, sqnr = agreement(trained_onnx, out, val_ids)
    assert cosine > MIN_COSINE and sqnr > MIN_SQNR_DB, (cosine, sqnr)


def test_calibration_uses_the_train_split(trained_onnx, corpus, tmp_path):
    """The default draws from train: same artifact as explicit train tokens; validation text gives other scales."""
    default = _run(trained_onnx, tmp_path, corpus, "default", calibration_windows=16)
    work = tmp_path / "explicit"
    work.mkdir()
    cfg = Int8StaticConfig(calibration_windows=16)
    explicit = int8_static(trained_onnx, cfg, StepContext(work, log=lambda m: None, calibration=corpus["train"].tokens))
    work = tmp_path / "val"
    work.mkdir()
    other = int8_static(
        trained_onnx, cfg, StepContext(work, log=lambda m: None, calibration=corpus["validation"].tokens)
    )
    assert artifact_sha256(default) == artifact_sha256(explicit)
    a, b = _scales(default), _scales(other)
    assert a.keys() == b.keys() and any(not np.isclose(a[k], b[k]) for k in a)


def test_entropy_and_percentile_choose_other_ranges_than_minmax(trained_onnx, corpus, tmp_path):
    """Guards against onnxruntime's 128-bin default, under which entropy silently equals min/max."""
    minmax = _scales(_run(trained_onnx, tmp_path, corpus, "minmax", calibration_windows=16))
    for method in ("entropy", "percentile"):
        other = _scales(_run(trained_onnx, tmp_path, corpus, method, calibration_windows=16, calibrate_method=method))
        narrower = [k for k in minmax if other[k] < minmax[k] * 0.999]
        assert narrower, f"{method} kept every min/max range"


def test_exclusions_and_attention_switch(trained_onnx, corpus, tmp_path):
    src = onnx.load(str(trained_onnx))
    first = weight_matmuls(src)[0]
    excluded = op_counts(_run(trained_onnx, tmp_path, corpus, "ex", calibration_windows=8, exclude_nodes=[first]))
    assert excluded["QLinearMatMul"] == len(weight_matmuls(src)) - 1
    attn = _run(trained_onnx, tmp_path, corpus, "attn", calibration_windows=8, quantize_attention_matmuls=True)
    assert op_counts(attn)["QLinearMatMul"] == len(weight_matmuls(src)) + len(activation_matmuls(src))
    assert _io_types(attn) == _io_types(trained_onnx)


def test_without_calibration_data_the_step_says_so(tiny_onnx, tmp_path):
    with pytest.raises(UserError, match="quantize.int8_static needs calibration data"):
        int8_static(tiny_onnx, Int8StaticConfig(), StepContext(tmp_path, log=lambda m: None))


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        ({"activation_type": "qint8"}, "needs format qdq"),
        ({"activation_type": "qint8", "weight_type": "quint8", "format": "qdq"}, "has no onnxruntime kernel"),
        ({"calibrate_method": "kl"}, "minmax"),
        ({"op_types": ["Concat"]}, "MatMul"),  # the KV cache's Concat is never quantized
    ],
)
def test_config_refuses_combinations_onnxruntime_cannot_run(cfg, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Int8StaticConfig(**cfg)
