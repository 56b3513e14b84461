"""What ships to a phone: the ORT-format file loads; op coverage refusals name the op and the runtime."""

import subprocess
import sys

import onnxruntime as ort
import pytest

from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.export.mobile import op_coverage, to_ort_format


def test_ort_format_conversion_loads_and_runs(tiny_onnx, tmp_path):
    out = to_ort_format(tiny_onnx, tmp_path / "tiny.ort")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert {i.name for i in sess.get_inputs()} >= {"input_ids", "attention_mask", "past_key_values.0.key"}
    assert not list(tmp_path.glob("*.tmp"))


def test_coverage_names_unsupported_ops_per_target(tiny_onnx, tmp_path):
    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    assert op_coverage(q, "cpu").complete
    coreml = op_coverage(q, "coreml")
    assert not coreml.complete and "ai.onnx:MatMulInteger" in coreml.unsupported
    assert "CoreMLExecutionProvider" in coreml.message()
    assert op_coverage(tiny_onnx, "nnapi").supported_nodes < op_coverage(tiny_onnx, "nnapi").nodes
    with pytest.raises(UserError, match="unknown target 'tpu'; allowed: cpu, nnapi, coreml"):
        op_coverage(tiny_onnx, "tpu")


def test_validate_cli_refuses_with_op_and_runtime(tiny_onnx, tmp_path):
    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    cmd = [sys.executable, "-m", "edgescale.cli", "validate", str(q), "--target", "coreml"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "MatMulInteger" in r.stderr and "CoreMLExecutionProvider" in r.stderr
    r = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "CPUExecutionProvider" in r.stderr
