"""The fused decode graph computes what torch (and the traced graph) computes, in ~9 nodes per layer."""

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.registry import StepContext
from edgescale.export.fused import CONTRIB_OPS, export_fused
from edgescale.export.onnx import export_onnx
from edgescale.export.steps import ExportConfig, resolve_graph
from edgescale.export.verify import verify_export
from edgescale.models.gpt import GPT, GPTConfig

PRUNED = GPTConfig(n_layer=3, n_head=4, n_embd=64, block_size=64, layer_heads=(4, 2, 3), layer_ffn=(256, 96, 160))


def _sharp(model: GPT) -> GPT:
    """Larger weights, so greedy tokens change from step to step and a token check means something."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return model.eval()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    model = _sharp(GPT(PRUNED, seed=3))
    return model, export_fused(model, tmp_path_factory.mktemp("fused") / "model.onnx")


@pytest.fixture(scope="module")
def traced(pruned, tmp_path_factory):
    """The same model through torch's exporter (slow: exported once for the module)."""
    return export_onnx(pruned[0], tmp_path_factory.mktemp("traced") / "traced.onnx")


def test_the_fused_graph_matches_torch_prefill_decode_and_greedy_tokens(pruned):
    model, path = pruned
    check = verify_export(model, path, atol=1e-5, gen_tokens=48)
    assert check["greedy_tokens_identical"] == 48
    ids = np.random.default_rng(0).integers(0, 256, (2, 24))
    lm = OrtCausalLM(path)
    _, past = lm.run(ids[:, :16])
    steps = []
    for t in range(16, 24):  # one token at a time through the KV cache
        logits, past = lm.run(ids[:, t : t + 1], past)
        steps.append(logits[:, 0])
    with torch.no_grad():
        ref = model.logits(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(np.stack(steps, 1), ref[:, 16:], atol=1e-4)
    assert {k: v.shape for k, v in past.items()}["past_key_values.1.key"] == (2, 2, 24, 16)  # pruned layer: 2 heads


def test_the_fused_graph_has_nine_nodes_per_layer_and_the_traced_io(pruned, traced):
    _, path = pruned
    fused = onnx.load(str(path))
    traced_path, traced = traced, onnx.load(str(traced))
    per_layer = Counter(n.name.split(".")[1] for n in fused.graph.node if n.name.startswith("blocks."))
    assert set(per_layer.values()) <= {9, 10}  # 9, plus layer 0's first SkipLayerNormalization
    assert len(fused.graph.node) <= 10 * PRUNED.n_layer + 10 < len(traced.graph.node) / 3
    ops = {f"{n.domain}:{n.op_type}" for n in fused.graph.node if n.domain}
    assert ops == set(CONTRIB_OPS)

    def io(m):
        return [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]

    assert io(fused) == io(traced)
    ids = np.random.default_rng(1).integers(0, 256, (1, 20))
    np.testing.assert_allclose(OrtCausalLM(path).logits(ids), OrtCausalLM(traced_path).logits(ids), atol=1e-5)


def test_untied_embeddings_keep_their_own_head(tmp_path):
    model = _sharp(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, tie_embeddings=False), seed=5))
    assert (
        verify_export(model, export_fused(model, tmp_path / "m.onnx"), gen_tokens=16)["greedy_tokens_identical"] == 16
    )


def test_the_quantizers_find_every_weight_of_the_fused_graph(pruned, tmp_path):
    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic

    _, path = pruned
    weights = 4 * PRUNED.n_layer + 1  # qkv, attention output, two MLP matrices per layer, and the LM head
    int4 = onnx.load(str(int4_weight_only(path, Int4WeightOnlyConfig(), StepContext(tmp_path, log=print))))
    assert Counter(n.op_type for n in int4.graph.node)["MatMulNBits"] == weights
    assert not [n for n in int4.graph.node if n.op_type == "MatMul"]
    int8 = onnx.load(str(int8_dynamic(path, Int8DynamicConfig(), StepContext(tmp_path, log=print))))
    assert Counter(n.op_type for n in int8.graph.node)["MatMulInteger"] == weights
    for q in (tmp_path / "model.int4.onnx", tmp_path / "model.int8_dynamic.onnx"):
        assert Counter(n.op_type for n in onnx.load(str(q)).graph.node)["GroupQueryAttention"] == PRUNED.n_layer


@pytest.mark.parametrize(
    ("ep", "graph"),
    [
        (None, "fused"),
        ("CPUExecutionProvider", "fused"),
        ("CUDAExecutionProvider", "fused"),
        ("NnapiExecutionProvider", "traced"),
        ("CoreMLExecutionProvider", "traced"),
        ("XnnpackExecutionProvider", "traced"),
    ],
)
def test_auto_picks_the_fused_graph_only_where_the_provider_runs_its_ops(ep, graph):
    assert resolve_graph(ExportConfig(), ep).graph == graph
    assert resolve_graph(ExportConfig(graph="traced"), "CPUExecutionProvider").graph == "traced"  # never overridden


def test_a_recipe_for_nnapi_compiles_to_the_traced_graph_and_its_facts_say_so(tmp_path):
    from edgescale.compress.recipe import load_recipe_file

    def chain(ep):
        f = tmp_path / f"{ep}.yaml"
        f.write_text(f"schema_version: 1\nname: r\ntarget: {{execution_provider: {ep}}}\nsteps: []\n")
        return load_recipe_file(f)

    cpu, nnapi = chain("CPUExecutionProvider"), chain("NnapiExecutionProvider")
    assert cpu.steps[-1].config.graph == "fused" and cpu.steps[-1].facts.writes == CONTRIB_OPS
    assert nnapi.steps[-1].config.graph == "traced" and nnapi.steps[-1].facts.writes == frozenset()


def test_the_measurement_worker_shares_the_kv_buffer_only_where_logits_stay_identical(pruned, traced):
    from edgescale.bench.measure import MeasureSpec, measure_variants

    fused = pruned[1]
    spec = MeasureSpec(
        prompt_len=8, decode_context=16, repeats=3, processes=1, warmup=1, aa_control=False, profile=False
    )
    report = measure_variants({"traced": traced, "fused": fused}, spec)
    assert {n: v.kv_buffer for n, v in report.variants.items()} == {"traced": "concat", "fused": "shared"}
