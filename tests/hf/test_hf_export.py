"""optimum's export runs through edgescale's harness; GPT-2's projections become quantizable MatMuls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.onnx_graph import op_counts
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.hf.export import HFCausalLM
from edgescale.hf.source import load_hf_model


@pytest.mark.parametrize(
    ("which", "onnx_fixture", "kv_heads"), [("gpt2_dir", "gpt2_onnx", 4), ("llama_dir", "llama_onnx", 2)]
)
def test_optimum_export_matches_torch_through_the_kv_cache(which, onnx_fixture, kv_heads, request):
    from edgescale.export.verify import verify_export

    hf, _ = load_hf_model(request.getfixturevalue(which))
    path = request.getfixturevalue(onnx_fixture)
    lm = OrtCausalLM(path)
    assert lm.sig.n_layer == 2 and lm.sig.layer_heads == (kv_heads, kv_heads)
    check = verify_export(HFCausalLM(hf, 32), path, atol=1e-4, gen_tokens=16)
    assert check["greedy_tokens_identical"] == 16 and check["max_abs_logit_diff"] < 1e-4


def test_gpt2_conv1d_exports_as_matmul_with_weight_initializers(gpt2_onnx):
    import onnx

    graph = onnx.load(str(gpt2_onnx)).graph
    inits = {t.name for t in graph.initializer}
    weight_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert not [n for n in graph.node if n.op_type == "Gemm"]
    assert len(weight_matmuls) == 2 * 4 + 1  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer + LM head


def test_head_pruned_gpt2_exports_with_per_layer_kv_heads(gpt2_dir, tmp_path):
    from edgescale.hf.export import export_and_verify

    hf, _ = load_hf_model(gpt2_dir)
    hf.prune_heads({0: [1, 2], 1: [3]})
    check = export_and_verify(hf, tmp_path / "m.onnx", 32, 18, 1e-4, 8, 0)
    assert check["greedy_tokens_identical"] == 8
    assert OrtCausalLM(tmp_path / "m.onnx").sig.layer_heads == (2, 3)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


# weight MatMuls: GPT-2 c_attn, attn.c_proj, c_fc, mlp.c_proj; Llama q, k, v, o, gate, up, down; x 2 layers + LM head
@pytest.mark.parametrize(("onnx_fixture", "weights"), [("gpt2_onnx", 2 * 4 + 1), ("llama_onnx", 2 * 7 + 1)])
def test_quantize_steps_act_on_optimum_exports(onnx_fixture, weights, request, tmp_path):
    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.hf.quantize import OptimumPresetConfig, optimum_preset

    src = request.getfixturevalue(onnx_fixture)
    ids = np.random.default_rng(0).integers(0, 256, (2, 16))
    ref = OrtCausalLM(src).logits(ids)
    outs = {}
    for name, fn, cfg in (
        ("int8", int8_dynamic, Int8DynamicConfig()),
        ("int4", int4_weight_only, Int4WeightOnlyConfig()),
        ("avx2", optimum_preset, OptimumPresetConfig(preset="avx2")),
    ):
        (tmp_path / name).mkdir()
        outs[name] = fn(src, cfg, StepContext(tmp_path / name, log=lambda m: None))
        assert _cosine(OrtCausalLM(outs[name]).logits(ids).ravel(), ref.ravel()) > 0.99, name
    assert op_counts(outs["int8"]).get("MatMulInteger", 0) == weights
    assert op_counts(outs["int4"]).get("com.microsoft:MatMulNBits", 0) == weights
    assert op_counts(outs["avx2"]).get("MatMulInteger", 0) >= weights


def test_optimum_preset_refuses_reduce_range_where_the_preset_has_none(gpt2_onnx, tmp_path):
    from edgescale.hf.quantize import OptimumPresetConfig, optimum_preset

    with pytest.raises(UserError, match="reduce_range applies to the avx2 and avx512 presets"):
        optimum_preset(gpt2_onnx, OptimumPresetConfig(preset="arm64", reduce_range=True), StepContext(tmp_path))


def test_edgescale_gpt_converts_to_gpt2_exactly():
    from edgescale.compress.prune_structured import rebuild
    from edgescale.hf.convert import gpt_to_hf, max_logit_difference
    from edgescale.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(2, 4, 32, block_size=64), seed=3)
    ids = torch.randint(0, 256, (2, 24))
    assert max_logit_difference(model, gpt_to_hf(model), ids) == 0.0
    pruned = rebuild(model, heads=[torch.tensor([0, 2]), torch.tensor([1, 2, 3])])
    hf = gpt_to_hf(pruned)
    assert hf.config.pruned_heads == {0: [2, 3], 1: [3]} and max_logit_difference(pruned, hf, ids) == 0.0
