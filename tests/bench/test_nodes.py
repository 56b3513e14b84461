"""The decode graph as onnxruntime runs it: fused nodes, weight classes, exact sizes."""

import pytest

from edgescale.bench.nodes import decode_graph
from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext


def test_fp32_decode_graph_has_every_gemv_and_the_kv_working_set(tiny_onnx, tiny_cfg):
    g = decode_graph(tiny_onnx, context=32)
    L, d = tiny_cfg.n_layer, tiny_cfg.n_embd
    gemvs = g.gemvs
    # qkv, attention out, fc, proj per layer, and the LM head (a folded transpose of the embedding)
    assert len(gemvs) == 4 * L + 1
    assert sorted((n.k, n.n) for n in gemvs).count((d, 256)) == 1
    assert {n.weight_class for n in gemvs} == {"fp32"}
    assert g.kv_bytes == pytest.approx(2 * L * d * 4 * 32)
    assert g.working_set_bytes == pytest.approx(sum(n.weight_bytes for n in g.nodes) + g.kv_bytes)
    # the KV concat of a layer touches its whole present cache: heads x context x head_dim
    concat = max(n.elements for n in g.others if n.op == "Concat")
    assert concat == tiny_cfg.n_head * 32 * (d // tiny_cfg.n_head)


def test_int8_graph_is_read_after_onnxruntime_fuses_it(tiny_onnx, tmp_path):
    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    g = decode_graph(q, context=16)
    classes = [n.weight_class for n in g.gemvs]
    # every block matrix and the LM head (a constant since export folds its transpose)
    assert classes == ["int8"] * 9 and all(n.op == "DynamicQuantizeMatMul" for n in g.gemvs)
    assert not any(n.op in ("MatMulInteger", "DynamicQuantizeLinear") for n in g.nodes)  # fused away
    assert g.weight_bytes_by_class()["int8"] == 2 * 12 * 32 * 32 + 32 * 256  # one byte per weight
