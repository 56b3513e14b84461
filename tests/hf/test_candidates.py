"""A study over ``models:``: candidates of different sizes, families and tokenizers on one frontier,
scored on the same text bytes, and one pick across them that a hand computation reproduces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgescale.errors import UserError

MAX_BYTES = 2048


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, text_dir) -> Path:
    """A tiny Qwen2 (another family, width and tokenizer: a 400-id BPE trained here)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(p) for p in sorted(text_dir.glob("*.txt"))], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    out = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(2)
    config = Qwen2Config(
        vocab_size=416,  # padded above the tokenizer's 400 ids, as Qwen2.5's checkpoints are
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def _study(tmp: Path, text_dir: Path, models: str, target: float | None = None) -> Path:
    path = tmp / "study.yaml"
    path.write_text(
        "schema_version: 1\nname: family\n"
        f"corpus: {{source: {text_dir}, validation_fraction: 0.15, test_fraction: 0.15}}\n"
        f"models:\n{models}"
        "training: {threads: 1}\n"
        f"evaluation: {{context_length: 32, stride: 32, max_bytes: {MAX_BYTES}, batch_size: 8}}\n"
        "measurement: {prompt_len: 8, decode_context: 16, repeats: 3, warmup: 1, threads: 1}\n"
        "recipes: [fp32, int8_dynamic]\n"
        "devices: [host, rpi5-8gb]\n" + (f"loss_target_bpb: {target}\n" if target else "")
    )
    return path


def test_three_candidates_of_other_families_and_tokenizers_share_one_frontier_and_pick(
    tmp_path, text_dir, llama_dir, gpt2_dir, qwen_dir
):
    from edgescale.progress import Reporter
    from edgescale.report.pick import load_run_dir, pick
    from edgescale.run import run_study

    models = (
        f"  - {{hf: {llama_dir}, name: llama-tiny, block_size: 32}}\n"  # Llama, byte ids, GQA
        f"  - {{hf: {gpt2_dir}, name: gpt2-tiny, train_tokens: 1000000, block_size: 32}}\n"  # GPT-2, a 320-id BPE
        f"  - {{hf: {qwen_dir}, block_size: 32}}\n"  # Qwen2, a 400-id BPE, named after its folder
    )
    run = run_study(_study(tmp_path, text_dir, models), tmp_path / "run", Reporter(quiet=True))
    results = json.loads((run / "results.json").read_text())
    variants = results["variants"]
    sizes = {v["size"] for v in variants}
    qwen = qwen_dir.name.lower()
    assert sizes == {"llama-tiny", "gpt2-tiny", qwen} and len(variants) == 6
    assert {v["shape"]["model"] for v in variants} == {"huggingface:llama", "huggingface:gpt2", "huggingface:qwen2"}
    # each candidate scored in its own tokens, recorded per variant; the protocol has no one tokenizer
    tok = {v["size"]: v["tokenizer"] for v in variants}
    assert tok["llama-tiny"] == "bytes" and len(set(tok.values())) == 3
    assert results["protocol"]["tokenizer"] is None and results["protocol"]["max_bytes"] == MAX_BYTES
    # ... on the same text bytes: the cap is in bytes, the span ends at the cap to within one token
    for v in variants:
        val = v["loss"]["validation"]
        assert MAX_BYTES - 16 <= val["bytes"] <= MAX_BYTES, (v["variant_id"], val)
        assert math.isclose(val["context_bytes"], 32 * val["bytes"] / val["tokens"], rel_tol=1e-3)
    by_tokens = {v["size"]: v["loss"]["validation"]["tokens"] for v in variants if v["recipe"] == "fp32"}
    assert by_tokens["llama-tiny"] == MAX_BYTES > by_tokens["gpt2-tiny"]  # BPE reads the same bytes in fewer tokens
    # wall time and peak RSS per stage, each stage's own (the high-water mark reset at its start)
    for v in variants:
        stages = v["resources"]
        assert {"source", "export.onnx", "loss:validation", "loss:test"} <= set(stages), stages
        assert all(r["wall_s"] >= 0 and r["peak_rss_bytes"] > 0 for r in stages.values())
    assert results["measurement"]["resources"]["peak_rss_bytes"] > 0
    # one frontier over all of them: exactly the variants no other candidate's variant dominates
    pts = {v["variant_id"]: (v["cost"]["bytes_per_decoded_token"], v["loss"]["validation"]["bits_per_byte"])
           for v in variants}  # fmt: skip

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts.values())

    assert {v["variant_id"]: v["on_frontier"] for v in variants} == {k: not dominated(p) for k, p in pts.items()}
    fronts = results["analysis"]["frontiers"]
    assert {e["variant_id"] for e in fronts["bytes_per_decoded_token"]["front"]} == {
        k for k, p in pts.items() if not dominated(p)
    }

    # one pick across the family: the target between the best and the worst loss
    losses = sorted(v["loss"]["validation"]["bits_per_byte"] for v in variants)
    target = (losses[1] + losses[-2]) / 2
    got = pick([load_run_dir(run)], target, "rpi5-8gb")
    meets = [v for v in variants if v["loss"]["validation"]["bits_per_byte"] <= target]
    by_hand = min(
        meets,
        key=lambda v: (
            v["latency"]["rpi5-8gb"]["decode_ms"],
            v["loss"]["validation"]["bits_per_byte"],
            v["file_bytes"],
            v["variant_id"],
        ),
    )
    assert got["status"] == "ok" and got["variant"]["variant_id"] == by_hand["variant_id"]
    cheaper = [
        v
        for v in variants
        if v["latency"]["rpi5-8gb"]["decode_ms"] < by_hand["latency"]["rpi5-8gb"]["decode_ms"]
        and v["loss"]["validation"]["bits_per_byte"] > target
    ]
    if cheaper:
        closest = min(cheaper, key=lambda v: v["loss"]["validation"]["bits_per_byte"])
        assert got["cheaper_miss"]["variant_id"] == closest["variant_id"]
    else:
        assert got["cheaper_miss"] is None
    # the scaling fit: one candidate with known training tokens is too few, and it says so
    scaling = results["scaling"]
    assert scaling["status"] == "not_fitted" and [p["size"] for p in scaling["points"]] == ["gpt2-tiny"]
    assert "1 pretrained candidates with known train_tokens (gpt2-tiny)" in scaling["reason"]


def test_candidates_are_checked_before_any_work(tmp_path, text_dir, llama_dir, gpt2_onnx):
    from edgescale.inputs import load_study

    twice = f"  - {{hf: {llama_dir}, name: a}}\n  - {{hf: {llama_dir}, name: a}}\n"
    with pytest.raises(UserError, match="candidate names must differ: a repeated"):
        load_study(_study(tmp_path, text_dir, twice))
    both = f"  - {{hf: {llama_dir}, onnx: {gpt2_onnx}}}\n"
    with pytest.raises(UserError, match="exactly one of hf"):
        load_study(_study(tmp_path, text_dir, both))
    with pytest.raises(UserError, match="ladder size 's9' is not in the ladder"):
        load_study(_study(tmp_path, text_dir, "  - {ladder: s9}\n"))


def test_an_onnx_file_is_a_candidate_and_refuses_torch_stage_recipes(tmp_path, text_dir, gpt2_onnx, llama_dir):
    from edgescale.progress import Reporter
    from edgescale.run import run_study
    from edgescale.study_inputs import load_inputs

    models = (
        f"  - {{hf: {llama_dir}, name: llama-tiny, block_size: 32}}\n"
        f"  - {{onnx: {gpt2_onnx}, name: gpt2-file, block_size: 32}}\n"
    )
    study = _study(tmp_path, text_dir, models)
    run = run_study(study, tmp_path / "run", Reporter(quiet=True))
    results = json.loads((run / "results.json").read_text())
    onnx = {v["recipe"]: v for v in results["variants"] if v["size"] == "gpt2-file"}
    assert set(onnx) == {"fp32", "int8_dynamic"} and onnx["fp32"]["shape"]["model"] == "onnx:model.onnx"
    assert onnx["fp32"]["tokenizer"].startswith("PreTrainedTokenizerFast sha256:")
    assert onnx["int8_dynamic"]["file_bytes"] < onnx["fp32"]["file_bytes"]
    assert onnx["fp32"]["params_total"] > 0 and onnx["fp32"]["cost"]["kv_bytes_per_token"] > 0
    pruned = tmp_path / "pruned.yaml"
    pruned.write_text("schema_version: 1\nname: pruned\nsteps:\n  - {op: prune.ffn, amount: 0.5}\n")
    text = study.read_text().replace("recipes: [fp32, int8_dynamic]", f"recipes: [fp32, {pruned}]")
    study.write_text(text)
    with pytest.raises(UserError, match="candidate gpt2-file is an ONNX file.*prune.ffn"):
        load_inputs(study)


def test_a_ladder_trains_every_size_and_compresses_the_ones_the_candidates_name(tmp_path, text_dir, llama_dir):
    import copy

    import yaml
    from tiny_study import TINY

    from edgescale.progress import Reporter
    from edgescale.run import run_study

    study = copy.deepcopy(TINY)
    study.pop("distillation")
    study.pop("loss_target_bpb")
    study["corpus"] = {"source": str(text_dir), "validation_fraction": 0.15, "test_fraction": 0.15}
    study["training"] |= {"min_tokens": 4096, "max_tokens": 8192, "eval_every_tokens": 4096}
    study["models"] = [{"ladder": "b"}, {"hf": str(llama_dir), "name": "llama-tiny", "block_size": 32}]
    study["recipes"] = ["fp32"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    results = json.loads((run_study(path, tmp_path / "run", Reporter(quiet=True)) / "results.json").read_text())
    assert [s["size"] for s in results["sizes"]] == ["a", "b", "llama-tiny"]  # a is trained, for the fit
    assert sorted(v["variant_id"] for v in results["variants"]) == ["b/fp32", "llama-tiny/fp32"]
    assert {v["tokenizer"] for v in results["variants"]} == {"bytes"} == {results["protocol"]["tokenizer"]}
