"""A user's ONNX file: bench, quantize and predict accept optimum's exports and refuse non-causal-LM graphs."""

from __future__ import annotations

import json

import pytest
from cli_runner import run_cli

from edgescale.compress.onnx_graph import op_counts
from edgescale.errors import UserError
from edgescale.hf.onnx_file import bench, quantize


@pytest.fixture(scope="module")
def study_file(text_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(
        "schema_version: 1\nname: s\n"
        f"corpus: {{source: {text_dir}, validation_fraction: 0.15, test_fraction: 0.15}}\n"
        "ladder: {block_size: 32, sizes: [{name: s0, n_layer: 1, n_head: 1, n_embd: 8}]}\n"
        "evaluation: {context_length: 32, stride: 32, max_tokens: 512, batch_size: 8}\n"
        "measurement: {prompt_len: 16, decode_context: 32}\n"
    )
    return path


def _cli(*args):
    return run_cli(*args)


def test_bench_measures_latency_and_bits_per_byte_with_the_models_tokenizer(gpt2_onnx, study_file):
    out = bench(gpt2_onnx, study_file, prompt_len=8, decode_context=16, repeats=3, threads=1)
    assert out["signature"] == {"n_layer": 2, "kv_heads": [4, 4], "kv_cache": True, "vocab_size": 320}
    assert out["latency"]["decode_ms_p50"] > 0 and out["latency"]["decode"] == "kv-cache"
    loss = out["loss"]
    # the study's cap (max_tokens: 512, the old name of max_bytes) is in text bytes: fewer BPE tokens
    # cover the same 512 bytes, to within one token
    assert loss["tokenizer"].startswith("PreTrainedTokenizerFast") and loss["tokens"] < 512
    assert 512 - 16 <= loss["bytes"] <= 512
    as_bytes = bench(gpt2_onnx, study_file, "bytes", prompt_len=8, decode_context=16, repeats=3, threads=1)
    assert as_bytes["loss"]["bytes"] == as_bytes["loss"]["tokens"] == 512  # byte ids: one byte per token


def test_quantize_applies_a_recipes_onnx_steps(llama_onnx, study_file, tmp_path):
    out, records = quantize(llama_onnx, "int8_dynamic", tmp_path / "q.onnx")
    assert out.exists() and op_counts(out)["MatMulInteger"] == 15 and records[0]["op"] == "quantize.int8_dynamic"
    out, _ = quantize(llama_onnx, "int8_static", tmp_path / "s.onnx", study_file, "bytes")  # calibrates on train
    assert op_counts(out).get("QLinearMatMul", 0) > 0
    with pytest.raises(UserError, match="no ONNX-stage steps"):
        quantize(llama_onnx, "fp32", tmp_path / "x.onnx")
    with pytest.raises(UserError, match="torch-stage steps .prune.heads"):
        quantize(llama_onnx, "heads_ffn50_recover", tmp_path / "x.onnx")


def test_cli_refuses_a_graph_that_is_not_a_causal_lm(relu_onnx, gpt2_onnx, tmp_path):
    for args in (("bench", relu_onnx), ("quantize", relu_onnx, "--recipe", "int8_dynamic"),
                 ("predict", relu_onnx, "--device", "rpi5-8gb")):  # fmt: skip
        r = _cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0 and "not a causal LM" in r.stderr and str(relu_onnx) in r.stderr
    r = _cli("predict", gpt2_onnx, "--device", "rpi5-8gb", "--decode-context", "32", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decode_ms"] > 0
    r = _cli("quantize", gpt2_onnx, "--recipe", "int4_weight_only", "--out", tmp_path / "q4.onnx")
    assert r.returncode == 0 and op_counts(tmp_path / "q4.onnx")["com.microsoft:MatMulNBits"] == 9, r.stderr
