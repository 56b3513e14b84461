"""A study with ``hf_model:``: GPT-2 and Llama end to end, and the checks that run before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgescale.errors import UserError


def _study(tmp: Path, text_dir: Path, model_dir: Path, recipes: str, extra: str = "") -> Path:
    path = tmp / "study.yaml"
    path.write_text(
        "schema_version: 1\nname: hf\n"
        f"corpus: {{source: {text_dir}, validation_fraction: 0.15, test_fraction: 0.15}}\n"
        f"hf_model: {{path: {model_dir}, name: tiny, block_size: 32{extra}}}\n"
        "training: {threads: 1}\n"
        "evaluation: {context_length: 32, stride: 32, max_tokens: 512, batch_size: 8}\n"
        "measurement: {prompt_len: 16, decode_context: 32, repeats: 3, warmup: 1, threads: 1}\n"
        f"recipes: {recipes}\n"
        "devices: [host, rpi5-8gb]\n"
    )
    return path


def _recipe(tmp: Path, name: str, steps: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"schema_version: 1\nname: {name}\nsteps:\n{steps}")
    return path


def test_a_study_names_exactly_one_model_source():
    from edgescale.config import Study

    with pytest.raises(ValueError, match="exactly one of ladder"):
        Study.model_validate({"name": "x", "hf_model": {"path": "m"}, "ladder": {"sizes": [
            {"name": "s0", "n_layer": 1, "n_head": 1, "n_embd": 8}]}})  # fmt: skip
    assert Study.model_validate({"name": "x", "hf_model": {"path": "m", "block_size": 256}}).block_size == 256


def test_steps_a_hugging_face_model_cannot_take_stop_the_study_before_work(tmp_path, text_dir, llama_dir):
    from edgescale.study_inputs import load_inputs

    layers = _recipe(tmp_path, "drop", "  - op: prune.layers\n")
    with pytest.raises(UserError, match="prune.layers is not available for Hugging Face models") as e:
        load_inputs(_study(tmp_path, text_dir, llama_dir, f"[fp32, {layers}]"))
    assert e.value.file == str(layers) and e.value.field == "steps.0.op"
    recover = _recipe(tmp_path, "rec", "  - op: prune.ffn\n  - op: distill.recover\n")
    with pytest.raises(UserError, match="needs tokens") as e:
        load_inputs(_study(tmp_path, text_dir, llama_dir, f"[{recover}]"))
    assert e.value.field == "steps.1.tokens"
    glob = _recipe(tmp_path, "glob", "  - op: prune.heads\n    scope: global\n")
    with pytest.raises(UserError, match="scope: per_layer"):
        load_inputs(_study(tmp_path, text_dir, llama_dir, f"[{glob}]"))


def test_a_study_on_a_folder_that_is_not_a_causal_lm_stops_with_one_message(tmp_path, text_dir):
    from transformers import BertConfig

    from edgescale.study_inputs import load_inputs

    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               architectures=["BertForMaskedLM"]).save_pretrained(bert)  # fmt: skip
    with pytest.raises(UserError, match="not a causal language model") as e:
        load_inputs(_study(tmp_path, text_dir, bert, "[fp32]"))
    assert e.value.field == "hf_model.path"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["gpt2_dir", "llama_dir"])
def test_a_hugging_face_model_runs_through_a_study_end_to_end(which, request, tmp_path, text_dir):
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    prune = _recipe(
        tmp_path,
        "pruned",
        "  - {op: prune.heads, amount: 0.5, importance: weight_norm}\n"
        "  - {op: prune.ffn, amount: 0.5, importance: weight_norm}\n"
        "  - {op: distill.recover, tokens: 1024, batch_size: 4}\n"
        "  - {op: quantize.int4_weight_only}\n",
    )
    preset = _recipe(tmp_path, "avx2", "  - {op: quantize.optimum_preset, preset: avx2}\n")
    recipes = f"[fp32, int8_dynamic, int4_weight_only, {preset}, {prune}]"
    run = run_study(_study(tmp_path, text_dir, request.getfixturevalue(which), recipes), tmp_path / "run",
                    Reporter(quiet=True))  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    variants = {v["recipe"]: v for v in results["variants"]}
    assert set(variants) == {"fp32", "int8_dynamic", "int4_weight_only", "avx2", "pruned"}
    # the protocol names the tokens the loss was scored in: the GPT-2's own tokenizer by content
    # (its class and files' hash, not a path), the Llama's byte ids
    tokenizer = results["protocol"]["tokenizer"]
    if which == "gpt2_dir":
        assert re.fullmatch(r"\w+ sha256:[0-9a-f]{64}", tokenizer), tokenizer
    else:
        assert tokenizer == "bytes"
    fp32 = variants["fp32"]
    assert fp32["steps"][0]["metrics"]["exporter"].startswith("optimum")
    assert fp32["steps"][0]["metrics"]["greedy_tokens_identical"] == 24
    for v in variants.values():
        assert 0 < v["loss"]["validation"]["bits_per_byte"] < 20 and v["latency"]["host"]["decode_ms_p50"] > 0
        assert v["latency"]["rpi5-8gb"]["latency_source"] == "predicted"
    assert any(v["on_frontier"] for v in variants.values())
    # quantization really happened, and did not move the loss much on these float-trained weights
    assert variants["int8_dynamic"]["file_bytes"] < fp32["file_bytes"]
    assert variants["int4_weight_only"]["file_bytes"] < variants["int8_dynamic"]["file_bytes"]
    for r in ("int8_dynamic", "int4_weight_only", "avx2"):
        assert (
            abs(variants[r]["loss"]["validation"]["bits_per_byte"] - fp32["loss"]["validation"]["bits_per_byte"]) < 0.1
        )
    pruned = variants["pruned"]["steps"]
    assert [s["op"] for s in pruned] == ["prune.heads", "prune.ffn", "distill.recover", "export.onnx",
                                         "quantize.int4_weight_only"]  # fmt: skip
    assert pruned[1]["metrics"]["params_non_embedding_after"] < pruned[0]["metrics"]["params_non_embedding_before"]
    # the pruned variant is counted as it ships, not as its parent: parameters, KV cache, memory
    small, size = variants["pruned"], results["sizes"][0]
    assert fp32["params_total"] == size["params_total"] == pruned[0]["metrics"]["params_total_before"]
    assert small["params_total"] == pruned[1]["metrics"]["params_total_after"] < fp32["params_total"]
    assert small["cost"]["kv_bytes_per_token"] == pruned[0]["metrics"]["kv_bytes_per_token_after"]
    assert small["cost"]["kv_bytes_per_token"] < fp32["cost"]["kv_bytes_per_token"]
    assert small["cost"]["flops_per_token"] < fp32["cost"]["flops_per_token"]
    assert 0 < small["cost"]["peak_memory_bytes"] < fp32["cost"]["peak_memory_bytes"]
    assert small["shape"]["model"].startswith("huggingface:") and small["shape"]["config"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["packages"]["optimum-onnx"] == "0.1.0"
    # a rerun reuses every unit of work
    again = run_study(run.parent / "study.yaml", run, Reporter(quiet=True))
    assert json.loads((again / "results.json").read_text())["variants"][0]["onnx_sha256"] == fp32["onnx_sha256"]
