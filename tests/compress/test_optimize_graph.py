"""optimize.graph fuses nodes with onnxruntime's optimisers, reports what it did, and keeps the outputs."""

import numpy as np
import pytest
from pydantic import ValidationError

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.onnx_graph import op_counts
from edgescale.compress.optimize_graph import OptimizeGraphConfig, optimize_graph
from edgescale.compress.registry import StepContext


def _run(src, tmp_path, **cfg):
    ctx = StepContext(tmp_path, log=lambda m: None)
    return optimize_graph(src, OptimizeGraphConfig(**cfg), ctx), ctx.metrics


def test_default_fuses_and_reports_node_counts(trained_onnx, tmp_path, val_ids):
    out, m = _run(trained_onnx, tmp_path)
    assert m["nodes_after"] < m["nodes_before"] == sum(op_counts(trained_onnx).values())
    assert m["nodes_after"] == sum(op_counts(out).values())
    assert m["fusions"].get("SkipLayerNormalization", 0) >= 2  # one per LayerNorm after a residual Add
    assert m["op_changes"]["LayerNormalization"] < 0 and m["op_changes"]["com.microsoft:SkipLayerNormalization"] > 0
    assert list(m["nodes_per_stage"]) == ["input", "transformer_fusions", "onnxruntime_extended"]
    ref, got = (OrtCausalLM(p).logits(val_ids) for p in (trained_onnx, out))
    assert np.abs(ref - got).max() < 1e-4 * np.abs(ref).max()


def test_basic_level_alone_writes_no_contrib_ops(trained_onnx, tmp_path):
    out, m = _run(trained_onnx, tmp_path, level="basic", transformer_fusions=False)
    assert not [op for op in op_counts(out) if op.startswith("com.microsoft:")]
    assert m["fusions"] == {} and m["nodes_after"] <= m["nodes_before"]


def test_a_step_that_does_nothing_is_refused():
    with pytest.raises(ValidationError, match="does nothing"):
        OptimizeGraphConfig(level="none", transformer_fusions=False)
    with pytest.raises(ValidationError, match="'none', 'basic' or 'extended'"):
        OptimizeGraphConfig(level="all")
