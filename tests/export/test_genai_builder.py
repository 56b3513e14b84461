"""``export.genai``: onnxruntime-genai's model builder in its own environment, scored and measured by edgescale.

The tests that run the builder skip only when its environment is absent (``python3 dev.py
setup`` creates it; CI runs that setup, so there they run). The model is a tiny random Llama
with grouped-query attention (4 query heads, 2 key/value heads) built here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.recipe import compile_chain, load_recipe
from edgescale.compress.registry import StepContext, registry
from edgescale.config import Recipe
from edgescale.errors import UserError
from edgescale.export import genai_builder as gb

BLOCK = 64


def _builder_python() -> Path:
    try:
        return gb.genai_python()
    except UserError as e:
        pytest.skip(f"the model builder's environment is absent ({e.detail[:80]}...): run `python3 dev.py setup`")


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgescale.hf.export import HFCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=0,
        bos_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights: the greedy tokens change every step, so "identical" means something
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, p.shape[-1] ** -0.5 if "embed" not in name else 1.0)
    return HFCausalLM(model, BLOCK)


@pytest.fixture(scope="module")
def raw_build(llama, tmp_path_factory) -> Path:
    """The builder's own output folder, unfinished (symbolic KV head size, external data)."""
    python = _builder_python()
    src = tmp_path_factory.mktemp("hf")
    llama.hf.save_pretrained(src)
    gb.write_standin_tokenizer(src, 300, 0)
    return gb.run_builder(src, tmp_path_factory.mktemp("raw") / "out", gb.GenaiExportConfig(), lambda m: None, python)


def _step(llama, tmp_path: Path, **cfg) -> tuple[Path, dict]:
    step = registry()[gb.OP]
    ctx = StepContext(work_dir=tmp_path, log=lambda m: None)
    return step.implementation("hf")(llama, step.config(**cfg), ctx), ctx.metrics


# ---------------------------------------------------------------- no builder needed


def test_a_missing_environment_names_the_command_that_creates_it(monkeypatch, tmp_path):
    monkeypatch.delenv(gb.PYTHON_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(UserError, match=r"run `python3 dev.py setup`") as e:
        gb.genai_python()
    assert str(tmp_path / "venv" / "genai") in e.value.detail
    monkeypatch.setenv(gb.PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(UserError, match=r"EDGESCALE_GENAI_PYTHON=.*nowhere/python does not exist"):
        gb.genai_python()


def test_a_failing_builder_is_reported_with_its_last_lines(monkeypatch, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Reading layer 0'\necho 'ValueError: unsupported architecture Foo' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(gb.PYTHON_ENV, str(fake))
    with pytest.raises(UserError, match=r"failed \(exit 3\)") as e:
        gb.run_builder(tmp_path, tmp_path / "out", gb.GenaiExportConfig(), lambda m: None)
    assert "ValueError: unsupported architecture Foo" in e.value.detail


def test_recipes_say_export_genai_and_nothing_is_inserted_before_it():
    for name, precision in (("genai_fp32", "fp32"), ("genai_int4", "int4")):
        chain = load_recipe(name)
        assert [(s.op, s.inserted) for s in chain.steps] == [("export.genai", False)]
        assert chain.steps[0].config.precision == precision
    then_int8 = Recipe.model_validate({"name": "x", "steps": [{"op": "export.genai"}, {"op": "quantize.int8_dynamic"}]})
    assert [s.op for s in compile_chain(then_int8, "x.yaml").steps] == ["export.genai", "quantize.int8_dynamic"]
    int4 = load_recipe("genai_int4").steps[0].facts
    assert "com.microsoft:MatMulNBits" in int4.writes and int4.weight_bytes == 0.625
    assert load_recipe("genai_fp32").steps[0].facts.weight_bytes is None


def test_export_genai_is_refused_for_models_other_than_hugging_face():
    step = registry()[gb.OP]
    with pytest.raises(UserError, match="Hugging Face checkpoint"):
        step.implementation()(None, step.config(), StepContext(work_dir=Path(".")))
    with pytest.raises(UserError, match="not available for your own modules"):
        step.implementation("custom")


def test_a_head_size_the_cpu_kernel_refuses_stops_before_the_build(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgescale.hf.export import HFCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    with pytest.raises(UserError, match="multiple of 16; this llama has 8"):
        _step(HFCausalLM(LlamaForCausalLM(config), 32), tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the builder itself (one build per precision)


@pytest.fixture(scope="module")
def fp32_build(llama, tmp_path_factory) -> tuple[Path, dict]:
    _builder_python()
    return _step(llama, tmp_path_factory.mktemp("fp32"), precision="fp32")


@pytest.fixture(scope="module")
def int4_build(llama, tmp_path_factory) -> tuple[Path, dict]:
    _builder_python()
    return _step(llama, tmp_path_factory.mktemp("int4"), precision="int4", block_size=32)


@pytest.mark.slow
def test_the_fp32_graph_matches_torch_and_decodes_the_same_tokens(llama, fp32_build):
    graph, metrics = fp32_build
    assert metrics["greedy_tokens_identical"] == 32 and metrics["max_abs_logit_diff"] < 1e-4
    assert sorted(p.name for p in graph.parent.iterdir()) == ["genai_config.json", "model.onnx"]  # data folded in
    model = onnx.load(str(graph))
    ops = {n.op_type for n in model.graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops and "MatMulNBits" not in ops
    lm = OrtCausalLM(graph)
    assert not lm.sig.has_position_ids and set(lm.sig.kv_shapes.values()) == {(2, 16)}  # GQA: 2 KV heads of 16
    ids = torch.randint(0, 300, (3, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = llama.logits(ids).numpy()
    np.testing.assert_allclose(lm.logits(ids.numpy()), ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    prompt = ids[:1, :6]
    assert lm.generate(prompt.numpy(), 40) == llama.generate(prompt, 40).tolist()


@pytest.mark.slow
def test_the_builder_graphs_score_a_loss_and_are_measured(llama, fp32_build, int4_build):
    from edgescale.bench.loss import score
    from edgescale.bench.measure import MeasureSpec, measure_variants
    from edgescale.data.corpus import Split

    (fp32, _), (int4, _) = fp32_build, int4_build
    tokens = np.random.default_rng(0).integers(0, 300, 400).astype(np.int32)
    split = Split("validation", ("random",), tokens, "0" * 64)
    ref = score(lambda x: llama.logits(torch.from_numpy(x)).detach().numpy(), split, 32, 32, 256, 4)
    got = score(OrtCausalLM(fp32).logits, split, 32, 32, 256, 4)
    assert got.tokens == ref.tokens == 256 and abs(got.nats_per_token - ref.nats_per_token) < 1e-4
    q = score(OrtCausalLM(int4).logits, split, 32, 32, 256, 4)
    assert q.nats_per_token != got.nats_per_token and abs(q.nats_per_token - got.nats_per_token) < 0.5
    spec = MeasureSpec(prompt_len=8, decode_context=24, repeats=3, warmup=1, threads=1)
    report = measure_variants({"fp32": fp32, "int4": int4}, spec, baseline="fp32")
    assert all(
        v.decode_ms_p50 > 0 and v.prefill_ms_p50 > 0 and v.decode == "kv-cache" for v in report.variants.values()
    )


@pytest.mark.slow
def test_the_int4_graph_has_4_bit_weights_and_stays_close_to_torch(fp32_build, int4_build):
    (fp32, _), (graph, metrics) = fp32_build, int4_build
    nbits = [n for n in onnx.load(str(graph)).graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 5 + 1  # per layer fused qkv, o, gate, up, down; and the LM head
    assert all({a.name: a.i for a in n.attribute}["block_size"] == 32 for n in nbits)
    assert graph.stat().st_size < 0.5 * fp32.stat().st_size
    assert 0 < metrics["max_abs_logit_diff"] < 1.0
    ids = np.random.default_rng(1).integers(0, 300, (2, 16))
    diff = np.abs(OrtCausalLM(graph).logits(ids) - OrtCausalLM(fp32).logits(ids)).max()
    assert 0 < diff < 1.0


@pytest.mark.slow
def test_the_raw_builder_graph_loads_with_its_genai_config(raw_build, tmp_path):
    """Symbolic KV head size: read from genai_config.json beside the graph; without it, refused."""
    from edgescale.bench.measure import MeasureSpec, measure_variants

    lm = OrtCausalLM(raw_build)
    assert set(lm.sig.kv_shapes.values()) == {(2, 16)}
    spec = MeasureSpec(prompt_len=4, decode_context=8, repeats=3, warmup=0, threads=1)
    assert measure_variants({"raw": raw_build}, spec).variants["raw"].decode_ms_p50 > 0
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in ("model.onnx", "model.onnx.data"):
        shutil.copy(raw_build.parent / f, alone / f)
    with pytest.raises(UserError, match="fixed heads and head_dim"):
        OrtCausalLM(alone / "model.onnx")


@pytest.mark.slow
def test_a_large_graph_keeps_its_external_data_beside_it(raw_build, tmp_path):
    for name, limit in (("one", gb.EMBED_BELOW), ("two", 0)):
        shutil.copytree(raw_build.parent, tmp_path / name, ignore=shutil.ignore_patterns(".cache"))
        gb.finish_graph(tmp_path / name / "model.onnx", embed_below=limit)
    assert not (tmp_path / "one" / "model.onnx.data").exists()
    assert (tmp_path / "two" / "model.onnx.data").stat().st_size > 100_000
    (tmp_path / "two" / "genai_config.json").unlink()  # the head size is in the graph now
    ids = np.arange(12).reshape(1, 12)
    one, two = (OrtCausalLM(tmp_path / n / "model.onnx") for n in ("one", "two"))
    np.testing.assert_array_equal(one.logits(ids), two.logits(ids))
    config = json.loads((raw_build.parent / "genai_config.json").read_text())
    assert config["model"]["decoder"]["num_key_value_heads"] == 2


@pytest.mark.slow
def test_a_study_scores_and_measures_the_builder_graphs_beside_optimums(llama, tmp_path):
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    _builder_python()
    llama.hf.save_pretrained(tmp_path / "hf")
    texts = tmp_path / "texts"
    texts.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # byte ids < 256 < the model's 300: no tokenizer needed
        (texts / f"w{i}.txt").write_text(" ".join(rng.choice(["the", "of", "and", "to", "a"], 400)) + "\n")
    study = tmp_path / "study.yaml"
    study.write_text(
        "schema_version: 1\nname: genai\n"
        f"corpus: {{source: {texts}, validation_fraction: 0.2, test_fraction: 0.2}}\n"
        f"hf_model: {{path: {tmp_path / 'hf'}, name: tiny, block_size: 32}}\n"
        "training: {threads: 1}\n"
        "evaluation: {context_length: 32, stride: 32, max_tokens: 256, batch_size: 8}\n"
        "measurement: {prompt_len: 8, decode_context: 24, repeats: 3, warmup: 1, threads: 1}\n"
        "recipes: [fp32, genai_fp32, genai_int4]\ndevices: [host]\n"
    )
    run = run_study(study, tmp_path / "run", Reporter(quiet=True))
    variants = {v["recipe"]: v for v in json.loads((run / "results.json").read_text())["variants"]}
    assert [s["op"] for s in variants["genai_fp32"]["steps"]] == ["export.genai"]
    assert variants["genai_fp32"]["steps"][0]["metrics"]["greedy_tokens_identical"] == 24  # block 32 - prompt 8
    loss = {r: v["loss"]["validation"]["bits_per_byte"] for r, v in variants.items()}
    assert abs(loss["genai_fp32"] - loss["fp32"]) < 1e-5 and loss["genai_int4"] != loss["fp32"]
    assert all(v["latency"]["host"]["decode_ms_p50"] > 0 for v in variants.values())
    assert variants["genai_int4"]["file_bytes"] < 0.5 * variants["genai_fp32"]["file_bytes"]
