"""What ships to a phone: the ORT-format file loads; op coverage refusals name the op, its count and the runtime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import run_cli
from onnx import TensorProto, helper, numpy_helper

from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.export.ep_ops import QNN_OPS, XNNPACK_OPS
from edgescale.export.mobile import TARGETS, op_coverage, to_ort_format


@pytest.fixture
def int8_onnx(tiny_onnx, tmp_path):
    return int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))


def _save(tmp_path, nodes, inputs, outputs, inits, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def lacking_onnx(tmp_path):
    """Static shapes; one op each target lacks: LayerNormalization (NNAPI), IsNaN (CoreML),
    Add (XNNPACK), com.microsoft:DynamicQuantizeMatMul (QNN). The CPU EP runs all of them."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("LayerNormalization", ["a", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("IsNaN", ["ln"], ["nan"]),
        helper.make_node("Add", ["a", "a"], ["sum"]),
        helper.make_node("DynamicQuantizeMatMul", ["a", "wq", "wscale"], ["dq"], domain="com.microsoft"),
    ]
    inits = {
        "w": rng.standard_normal((8, 8)).astype(np.float32),
        "gamma": np.ones(8, np.float32),
        "beta": np.zeros(8, np.float32),
        "wq": rng.integers(-127, 127, (8, 8)).astype(np.int8),
        "wscale": np.array([0.01], np.float32),
    }
    outs = [
        helper.make_tensor_value_info(n, t, [1, 4, 8]) for n, t in (("nan", TensorProto.BOOL), ("sum", f), ("dq", f))
    ]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", f, [1, 4, 8])], outs, inits, "lacking")


def test_ort_format_conversion_loads_and_runs(tiny_onnx, tmp_path):
    out = to_ort_format(tiny_onnx, tmp_path / "tiny.ort")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert {i.name for i in sess.get_inputs()} >= {"input_ids", "attention_mask", "past_key_values.0.key"}
    assert not list(tmp_path.glob("*.tmp"))


def test_coverage_names_unsupported_ops_per_target(tiny_onnx, int8_onnx):
    assert op_coverage(int8_onnx, "cpu").complete
    coreml = op_coverage(int8_onnx, "coreml")
    assert not coreml.complete and "ai.onnx:MatMulInteger" in coreml.unsupported
    assert "CoreMLExecutionProvider" in coreml.message()
    assert op_coverage(tiny_onnx, "nnapi").supported_nodes < op_coverage(tiny_onnx, "nnapi").nodes
    with pytest.raises(UserError, match="unknown target 'tpu'; allowed: cpu, nnapi, coreml, xnnpack, qnn"):
        op_coverage(tiny_onnx, "tpu")


def test_each_target_refuses_the_op_it_lacks_with_count_and_ep(lacking_onnx):
    """Property: the message names the missing op, its node count and the EP; only XNNPACK falls back."""
    assert op_coverage(lacking_onnx, "cpu").all_on_ep  # contrib kernels included
    lacks = {
        "nnapi": "ai.onnx:LayerNormalization",
        "coreml": "ai.onnx:IsNaN",
        "xnnpack": "ai.onnx:Add",
        "qnn": "com.microsoft:DynamicQuantizeMatMul",
    }
    for target, op in lacks.items():
        cov = op_coverage(lacking_onnx, target)
        assert cov.unsupported[op] == 1 and not cov.all_on_ep, target
        assert f"{op} ×1" in cov.message() and TARGETS[target] in cov.message()
        assert cov.complete == (target == "xnnpack")  # CPU fallback only where the EP shares the CPU
    qnn = op_coverage(lacking_onnx, "qnn")
    assert qnn.unsupported == {"com.microsoft:DynamicQuantizeMatMul": 1} and not qnn.blockers
    assert op_coverage(lacking_onnx, "xnnpack").message().startswith("warning: XnnpackExecutionProvider takes 1 of 5")


def test_contrib_quantized_matmuls_only_where_the_sources_register_them():
    """Property: MatMulNBits is QNN-only among the mobile EPs; DynamicQuantizeMatMul and
    MatMulIntegerToFloat are in no mobile EP's list."""
    assert "com.microsoft:MatMulNBits" in QNN_OPS and not any(op.startswith("com.microsoft:") for op in XNNPACK_OPS)
    for op in ("com.microsoft:DynamicQuantizeMatMul", "com.microsoft:MatMulIntegerToFloat"):
        assert op not in QNN_OPS


def test_xnnpack_takes_constant_weight_matmuls_and_leaves_the_rest_to_cpu(tiny_onnx):
    """Property: XNNPACK takes exactly the MatMuls whose B is a constant initializer (the
    linear layers), not attention's activation×activation MatMuls; partial coverage is a warning."""
    g = onnx.load(str(tiny_onnx)).graph
    inits = {t.name for t in g.initializer}
    linear = sum(n.op_type == "MatMul" and n.input[1] in inits for n in g.node)
    attention = sum(n.op_type == "MatMul" for n in g.node) - linear
    cov = op_coverage(tiny_onnx, "xnnpack")
    assert linear > 0 and attention > 0
    assert cov.supported_nodes == linear and cov.unsupported["ai.onnx:MatMul"] == attention
    assert cov.reasons["ai.onnx:MatMul"] == "B is not a constant initializer"
    assert cov.complete and cov.fallback and not cov.all_on_ep
    assert "fall back to CPUExecutionProvider" in cov.message()


def test_qnn_fuses_dynamic_int8_and_gelu_but_refuses_dynamic_shapes(int8_onnx):
    """Property: DynamicQuantizeLinear→MatMulInteger→Cast→Mul and Erf-Gelu are taken (fusions),
    Shape/Range are not, and dynamic graph inputs block QNN outright."""
    cov = op_coverage(int8_onnx, "qnn")
    for fused in ("ai.onnx:DynamicQuantizeLinear", "ai.onnx:MatMulInteger", "ai.onnx:Erf"):
        assert fused not in cov.unsupported
    assert set(cov.unsupported) == {"ai.onnx:Shape", "ai.onnx:Range"}
    assert not cov.complete and "input_ids(batch×seq)" in cov.blockers[0]
    assert "QNNExecutionProvider refuses dynamic shapes" in cov.message()


def test_conditions_read_from_the_graph(tmp_path):
    """Property: an op in the list is still refused, with the reason, when a checked condition fails."""
    f = TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", f, [1, 4, 8])
    nodes = [
        helper.make_node("Erf", ["x"], ["e"]),  # no Gelu around it: QNN has no Erf builder
        helper.make_node("Gemm", ["x2", "w"], ["g"], alpha=2.0),  # XNNPACK: alpha must be 1
        helper.make_node(
            "MatMulNBits", ["x", "b", "s"], ["n4"], domain="com.microsoft", K=8, N=8, bits=4, block_size=8
        ),
        helper.make_node(
            "MatMulNBits", ["x", "b3", "s"], ["n3"], domain="com.microsoft", K=8, N=8, bits=3, block_size=8
        ),
    ]
    inits = {
        "w": np.ones((8, 8), np.float32),
        "b": np.zeros((8, 1, 4), np.uint8),
        "b3": np.zeros((8, 1, 3), np.uint8),
        "s": np.ones(8, np.float32),
    }
    inputs = [x, helper.make_tensor_value_info("x2", f, [4, 8])]
    outs = [helper.make_tensor_value_info(n, f, None) for n in ("e", "g", "n4", "n3")]
    path = _save(tmp_path, nodes, inputs, outs, inits, "conditions")
    qnn = op_coverage(path, "qnn")
    assert qnn.unsupported == {"ai.onnx:Erf": 1, "com.microsoft:MatMulNBits": 1}
    assert "Gelu" in qnn.reasons["ai.onnx:Erf"] and "bits=3" in qnn.reasons["com.microsoft:MatMulNBits"]
    xnn = op_coverage(path, "xnnpack")
    assert xnn.reasons["ai.onnx:Gemm"] == "alpha or beta is not 1"


def test_xnnpack_fuses_relu_only_behind_a_conv_it_takes(tmp_path):
    """Property: Relu after a constant-weight 2-D Conv is fused (taken); a Relu on its own falls back."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["fused"]),
        helper.make_node("Relu", ["x"], ["alone"]),
    ]
    inits = {"w": np.ones((4, 3, 3, 3), np.float32)}
    outs = [helper.make_tensor_value_info("fused", f, [1, 4, 8, 8]), helper.make_tensor_value_info("alone", f, None)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])], outs, inits, "conv_relu")
    cov = op_coverage(path, "xnnpack")
    assert cov.supported_nodes == 2 and cov.unsupported == {"ai.onnx:Relu": 1}
    assert "Conv" in cov.reasons["ai.onnx:Relu"]


def test_validate_cli_refuses_with_op_and_runtime(int8_onnx, lacking_onnx):
    def run(*args):
        return run_cli("validate", *args)

    r = run(int8_onnx, "--target", "coreml")
    assert r.returncode == 2 and "MatMulInteger" in r.stderr and "CoreMLExecutionProvider" in r.stderr
    r = run(int8_onnx)
    assert r.returncode == 0 and "CPUExecutionProvider" in r.stderr
    r = run(lacking_onnx, "--target", "qnn")
    assert r.returncode == 2 and "com.microsoft:DynamicQuantizeMatMul ×1" in r.stderr
    assert "QNNExecutionProvider" in r.stderr and "Traceback" not in r.stderr
    r = run(int8_onnx, "--target", "qnn")
    assert r.returncode == 2 and "ai.onnx:Shape ×5" in r.stderr and "dynamic shapes" in r.stderr
    r = run(lacking_onnx, "--target", "xnnpack")
    assert r.returncode == 0 and "warning: XnnpackExecutionProvider" in r.stderr and "ai.onnx:Add ×1" in r.stderr
