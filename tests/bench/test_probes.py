"""Calibration probes are the kernels onnxruntime runs, at the sizes asked for."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgescale.bench.probes import BYTES_PER_WEIGHT, GEMV_CLASSES, OP_CLASSES, ProbeSpec, gemv_chain, op_chain


@pytest.mark.parametrize("cls", GEMV_CLASSES)
def test_gemv_chain_holds_the_fused_kernel_of_its_class(cls):
    data = gemv_chain(cls, 64, 3)
    g = onnx.load_from_string(data).graph
    op = {"fp32": "MatMul", "int8": "DynamicQuantizeMatMul"}.get(cls, "MatMulNBits")
    assert [n.op_type for n in g.node] == [op] * 6
    if op == "MatMulNBits":
        level = {a.name: a.i for a in g.node[0].attribute}["accuracy_level"]
        assert level == (4 if cls == "int4_acc4" else 0)
    weights = sum(np.prod(t.dims) * (4 if t.data_type == 1 else 1) for t in g.initializer if len(t.dims) >= 2)
    assert weights == pytest.approx(3 * 8 * 64 * 64 * BYTES_PER_WEIGHT[cls], rel=0.02)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": np.ones((1, 64), np.float32)})
    assert out.shape == (1, 64) and np.isfinite(out).all()


@pytest.mark.parametrize("op", OP_CLASSES)
def test_op_chain_runs_at_its_size(op):
    data = op_chain(op, 1024)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = sess.get_inputs()[0]
    assert np.prod(x.shape) in (1024, 64)  # the attention probe's input is a query over a 1024-element cache
    out = sess.run(None, {x.name: np.ones(x.shape, np.float32)})[0]
    assert np.isfinite(out).all()


def test_probe_spec_reaches_the_working_sets_asked_for():
    spec = ProbeSpec(widths=(64, 1024), working_sets_mb=(1, 64), fp32_dram_mb=(512,), max_layers=48)
    pts = spec.gemv_points()
    fp32 = {(d, L) for c, d, L in pts if c == "fp32"}
    # 1 MiB at width 64 (32 KiB pairs x 4 B) is 8 layers; 64 MiB at width 1024 is 2 layers; 512 MiB is 16
    assert (64, 8) in fp32 and (1024, 2) in fp32 and (1024, 16) in fp32
    assert all(L <= 48 for _, _, L in pts)
    assert not any(c != "fp32" and L * 8 * d * d * BYTES_PER_WEIGHT[c] > 100 * 2**20 for c, d, L in pts)
