"""Shared ONNX-stage helpers: onnxruntime's logging side effects are undone; I/O changes are caught."""

import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from edgescale.compress.onnx_graph import activation_matmuls, check_io_unchanged, op_counts, weight_matmuls


def test_quiet_onnxruntime_undoes_basicconfig_at_import():
    """Importing matmul_nbits_quantizer calls logging.basicConfig (root → INFO, a stderr handler)."""
    code = (
        "import logging\n"
        "from edgescale.compress.onnx_graph import quiet_onnxruntime\n"
        "with quiet_onnxruntime():\n"
        "    import onnxruntime.quantization.matmul_nbits_quantizer\n"
        "    print('swallowed')\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "30"]  # no handler left, root level back to WARNING


def test_matmul_roles_on_the_exported_graph(tiny_onnx, tiny_cfg):
    model = onnx.load(str(tiny_onnx))
    n = tiny_cfg.n_layer
    assert len(activation_matmuls(model)) == 2 * n  # q·kᵀ and probabilities·v per layer
    assert len(weight_matmuls(model)) >= 4 * n  # qkv, attention out, fc, proj per layer
    assert op_counts(model)["MatMul"] == len(weight_matmuls(model)) + len(activation_matmuls(model))


def test_check_io_unchanged_catches_a_changed_output_type(relu_onnx, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1])],
    )
    half = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph), str(half))
    check_io_unchanged(relu_onnx, relu_onnx, "op")
    with pytest.raises(RuntimeError, match=r"op changed the graph's inputs/outputs \['x', 'y'\]"):
        check_io_unchanged(relu_onnx, half, "op")
