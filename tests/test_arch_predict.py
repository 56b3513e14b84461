"""``predict --config`` / ``--arch``: real layouts (GQA KV cache, embedding rows, tied or untied head, bits
per tensor class) checked against numbers worked out by hand below, through the library and the CLI."""

from __future__ import annotations

import json

import pytest
from cli_runner import run_cli

from edgescale.bench.architectures import PUBLISHED, from_hf_config, get_architecture, weight_load
from edgescale.bench.devices import get_device
from edgescale.bench.predict import predict, predict_architecture

# huggingface.co/TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T/blob/main/config.json (the fields used)
TINYLLAMA = {
    "model_type": "llama",
    "num_hidden_layers": 22,
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "intermediate_size": 5632,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
# huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json (the fields used)
LLAMA32_1B = {
    "model_type": "llama",
    "num_hidden_layers": 16,
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "intermediate_size": 8192,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}

# TinyLlama-1.1B by hand (head_dim = 2048 / 32 = 64; KV width = 4 x 64 = 256):
#   KV per token, 16-bit: 2 (K, V) x 22 layers x 4 KV heads x 64 x 2 bytes           = 22,528 bytes
#     (multi-head attention would be 2 x 22 x 2048 x 2 = 180,224: 8x more)
#   a layer's matrices: q 2048*2048 = 4,194,304; k, v 2 * 2048*256 = 1,048,576; o 4,194,304;
#     FFN 3 * 2048*5632 = 34,603,008                                                  = 44,040,192
#   matrices 22 * 44,040,192 = 968,884,224; embedding 32000*2048 = 65,536,000; head (untied) 65,536,000;
#   norms 22 * 2 * 2048 + 2048 = 92,160; total 1,100,048,384 (the published parameter count)
#   bytes at 4.5 bits (0.5625 bytes) a weight, norms at 4 bytes:
#     matrices 968,884,224 * 0.5625 = 544,997,376; embedding 36,864,000; head 36,864,000; norms 368,640
#     stored 544,997,376 + 36,864,000 + 36,864,000 + 368,640                           = 619,094,016
#     streamed a token: 544,997,376 + 368,640 + one row 2048 * 0.5625 = 1,152 + head 36,864,000 = 582,231,168
TINY = {"n_layer": 22, "n_embd": 2048, "n_head": 32, "n_kv_head": 4, "kv_per_token": 22_528, "params": 1_100_048_384}
TINY_BYTES = {"matrices": 544_997_376, "embedding": 36_864_000, "head": 36_864_000, "norms_biases": 368_640}
TINY_STORED, TINY_STREAMED = 619_094_016, 582_231_168

# Llama-3.2-1B by hand (KV width = 8 x 64 = 512), at --bits 4.5 --head-bits 6.5625 (llama.cpp Q4_0 with its
# Q6_K output tensor; the tied table is that tensor):
#   KV per token, 16-bit: 2 x 16 layers x 8 KV heads x 64 x 2 bytes                     = 32,768 bytes
#   a layer's matrices: q 4,194,304; k, v 2 * 2048*512 = 2,097,152; o 4,194,304; FFN 3 * 2048*8192 = 50,331,648
#                                                                                       = 60,817,408
#   matrices 16 * 60,817,408 = 973,078,528; tied table 128256*2048 = 262,668,288; norms 16*2*2048 + 2048 = 67,584;
#   total 1,235,814,400
#   bytes: matrices 973,078,528 * 0.5625 = 547,356,672; table 262,668,288 * 6.5625/8 = 215,470,080; norms 270,336
#     stored 547,356,672 + 215,470,080 + 270,336                                        = 763,097,088
#     streamed a token: 547,356,672 + 270,336 + one row 2048 * 6.5625/8 = 1,680 + the whole table 215,470,080
#                                                                                       = 763,098,768
LLAMA = {"n_layer": 16, "n_embd": 2048, "n_head": 32, "n_kv_head": 8, "kv_per_token": 32_768, "params": 1_235_814_400}
LLAMA_BYTES = {"matrices": 547_356_672, "embedding": 215_470_080, "head": 0, "norms_biases": 270_336}
LLAMA_STORED, LLAMA_STREAMED = 763_097_088, 763_098_768

CASES = [
    ("tinyllama-1.1b", TINYLLAMA, TINY, TINY_BYTES, TINY_STORED, TINY_STREAMED, []),
    ("llama-3.2-1b", LLAMA32_1B, LLAMA, LLAMA_BYTES, LLAMA_STORED, LLAMA_STREAMED, ["--head-bits", "6.5625"]),
]


def _check(p: dict, shape: dict, by_class: dict, stored: int, streamed: int, context: int) -> None:
    for key in ("n_layer", "n_embd", "n_head", "n_kv_head"):
        assert p[key] == shape[key], key
    assert p["params"] == shape["params"]
    assert p["kv_bytes_per_token"] == shape["kv_per_token"]
    assert p["kv_bytes"] == shape["kv_per_token"] * context
    assert p["weight_bytes_by_class"] == pytest.approx(by_class, abs=0.5)
    assert p["weight_bytes"] == pytest.approx(stored, abs=0.5)
    assert p["streamed_bytes_per_token"] == pytest.approx(streamed, abs=0.5)


@pytest.mark.parametrize(("name", "config", "shape", "by_class", "stored", "streamed", "flags"), CASES)
def test_library_matches_hand_arithmetic(name, config, shape, by_class, stored, streamed, flags):
    head_bits = float(flags[1]) if flags else None
    device = get_device("rpi5-8gb")
    for arch in (get_architecture(name), from_hf_config(config, source="test")):  # shipped and user config agree
        p = predict_architecture(device, arch, 4.5, context=2048, head_bits=head_bits).to_dict()
        _check(p, shape, by_class, stored, streamed, 2048)
    assert "huggingface.co/" in get_architecture(name).source
    # decode is memory-bound here: the bytes it streams (not the stored total) over the decode bandwidth
    t = (streamed + shape["kv_per_token"] * 2048) / (device.decode_gbps() * 1e9)
    overhead = device.efficiency.overhead_ms_per_token
    assert p["decode_ms"] == pytest.approx(1000 * t + (overhead.value if overhead else 0), rel=1e-9)


@pytest.mark.parametrize(("name", "config", "shape", "by_class", "stored", "streamed", "flags"), CASES)
def test_cli_config_and_arch_match_hand_arithmetic(tmp_path, name, config, shape, by_class, stored, streamed, flags):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    common = ["--device", "rpi5-8gb", "--bits", "4.5", "--decode-context", "2048", *flags, "--json"]
    for layout in (["--config", path], ["--arch", name]):
        r = run_cli("predict", *layout, *common)
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout)
        _check(p, shape, by_class, stored, streamed, 2048)
    assert p["shape_source"] == PUBLISHED[name][1]


def test_params_mode_says_its_shape_is_a_guess():
    r = run_cli("predict", "--device", "rpi5-8gb", "--params", "1.1e9", "--bits", "4.5", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert "guess" in p["shape_source"] and any("guess" in a for a in p["assumptions"])
    assert p["n_kv_head"] is None  # no heads in a planner shape: KV is multi-head by assumption
    assert p["kv_bytes_per_token"] == 2 * p["n_layer"] * p["n_embd"] * 2
    # same numbers as before the layouts existed: planner shape, every weight streamed at --bits
    assert p["weight_bytes"] == p["streamed_bytes_per_token"] == 1.1e9 * 4.5 / 8
    assert predict(get_device("rpi5-8gb"), 1.1e9, 4.5).decode_ms == pytest.approx(p["decode_ms"])


def test_gpt2_layout_and_tied_default():
    arch = get_architecture("gpt2")
    assert (arch.mlp, arch.d_ff, arch.tied, arch.n_kv_head) == ("gpt2", 3072, True, 12)
    # 12 x (768*2304 + 768*768 + 2 * 768*3072) matrices + (50257 + 1024) * 768 tables + 1-D:
    # 12 x (4*768 + 2304 + 768 + 3072 + 768) + 2*768 = 121,344 -> 124,439,808 (GPT-2 small)
    assert sum(arch.params_by_class().values()) == 124_439_808
    # one token row and one position row at 8 bits (embed = head = 8 for a tied table), plus the table
    w = weight_load(arch, 8, None, None)
    assert w.streamed_bytes_per_token == 84_934_656 + 121_344 * 4 + 2 * 768 + 50_257 * 768


def test_tied_table_reads_whole_untied_embedding_one_row():
    tied = from_hf_config(TINYLLAMA | {"tie_word_embeddings": True}, source="test")
    untied = from_hf_config(TINYLLAMA, source="test")
    t, u = weight_load(tied, 4, None, None), weight_load(untied, 4, None, None)
    table = 32_000 * 2048 * 4 / 8
    assert sum(u.bytes_by_class.values()) - sum(t.bytes_by_class.values()) == table  # the head, stored once more
    assert u.streamed_bytes_per_token == t.streamed_bytes_per_token  # both stream one table and read one row
    embed_8 = weight_load(untied, 4, 8, None)  # the untied embedding's bits change one row a token
    assert embed_8.streamed_bytes_per_token - u.streamed_bytes_per_token == 2048 * (8 - 4) / 8


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "--config"),
        ("[1, 2]", "one JSON object"),
        (json.dumps(TINYLLAMA | {"hidden_size": "big"}), "hidden_size"),
        (json.dumps({k: v for k, v in TINYLLAMA.items() if k != "num_hidden_layers"}), "num_hidden_layers"),
        (json.dumps(TINYLLAMA | {"num_key_value_heads": 5}), "num_key_value_heads"),
        (json.dumps(TINYLLAMA | {"model_type": "t5"}), "model_type"),
        (json.dumps(TINYLLAMA | {"tie_word_embeddings": "yes"}), "tie_word_embeddings"),
        (json.dumps(TINYLLAMA | {"num_local_experts": 8}), "num_local_experts"),
    ],
)
def test_malformed_config_is_one_error_line(tmp_path, text, field):
    path = tmp_path / "config.json"
    path.write_text(text)
    r = run_cli("predict", "--config", path, "--device", "rpi5-8gb", "--bits", "4")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], r.stderr
    assert field in lines[0]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--arch", "no-such-model", "--bits", "4"], "allowed: smollm2-135m"),
        (["--arch", "gpt2"], "--bits"),
        (["--arch", "gpt2", "--params", "1e9", "--bits", "4"], "--arch + --params"),
        (["--params", "1e9", "--bits", "4", "--head-bits", "6"], "--config or --arch"),
        (["--arch", "gpt2", "--bits", "4", "--embed-bits", "0"], "--embed-bits"),
        (["--config", "missing.json", "--bits", "4"], "no such file"),
    ],
)
def test_bad_layout_flags(tmp_path, args, expect):
    r = run_cli("predict", "--device", "rpi5-8gb", *args, cwd=tmp_path)
    assert r.returncode == 2 and expect in r.stderr, r.stderr
