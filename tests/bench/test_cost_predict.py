"""Graph cost accounting read from the exported ONNX file."""

from edgescale.bench.cost import graph_cost
from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.registry import StepContext
from edgescale.models.shape import accounting


def test_graph_cost_matches_the_family_accounting(tiny_onnx, tiny_cfg):
    c = graph_cost(tiny_onnx)
    acct = accounting(tiny_cfg, 64)
    d, L = tiny_cfg.n_embd, tiny_cfg.n_layer
    assert c.kv_bytes_per_token == acct.kv_bytes_per_token_fp32 == 4 * 2 * L * d
    assert c.attention_flops_per_context_token == 2 * 2 * L * d
    # every block matrix plus the (tied, transposed) LM head: 2 FLOPs per weight per token
    assert c.flops_per_token == 2 * (L * 12 * d * d + 256 * d)
    assert c.has_kv_cache and c.weight_bytes_by_precision["fp32"] > 4 * L * 12 * d * d


def test_graph_cost_sees_int8_weights(tiny_onnx, tmp_path):
    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    c, f = graph_cost(q), graph_cost(tiny_onnx)
    assert c.weight_bytes_by_precision["int8"] > 0 and c.weight_bytes < f.weight_bytes
    assert c.n_nodes > f.n_nodes  # dynamic quantisation adds nodes
