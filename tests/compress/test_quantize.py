"""quantize.int8_dynamic really quantizes, and stays close to float."""

import numpy as np
import onnx
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext


def test_int8_dynamic_replaces_matmuls_and_keeps_logits_close(tiny_onnx, tmp_path):
    out = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") >= 4
    int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in int8) >= 2 * 4 * 32 * 32 * 3  # the block matrices
    # The embedding tables stay float (Gather is not quantized), so the file shrinks by less than 4x.
    assert out.stat().st_size < 0.75 * tiny_onnx.stat().st_size
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0)).numpy()
    ref = OrtCausalLM(tiny_onnx).logits(ids).ravel()
    got = OrtCausalLM(out).logits(ids).ravel()
    cosine = float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosine > 0.99
