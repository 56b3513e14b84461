"""Checkpoints as they come: sharded weights, the layouts of current families, local tokenizers,
and the folders refused before any work (a missing shard, too little RAM, a tokenizer beyond
the vocabulary, an architecture optimum cannot export), each with one message.

Every model is a tiny random-weight one built here (2 layers, width 32); no loss is a result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgescale.errors import UserError
from edgescale.hf.checks import (
    RAM_FACTOR_BY_STAGE,
    check_fits_in_ram,
    mem_available_bytes,
    read_header,
    weight_bytes_fp32,
)
from edgescale.hf.source import accounting_hf, inspect_source, load_hf_config, load_hf_model, weight_files

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "max_position_embeddings": 64}


def _one_message(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --------------------------------------------------------------------------- sharded safetensors


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory, llama_dir) -> Path:
    """The conftest's Llama saved again in shards of at most 20 kB, with its index."""
    out = tmp_path_factory.mktemp("sharded")
    model, _ = load_hf_model(llama_dir)
    model.save_pretrained(out, max_shard_size="20KB")
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _index(folder: Path) -> dict:
    return json.loads((folder / "model.safetensors.index.json").read_text())


def test_sharded_weights_load_like_the_single_file(sharded_dir, llama_dir):
    shards = weight_files(sharded_dir)
    assert len(shards) > 2 and [f.name for f in shards] == sorted(set(_index(sharded_dir)["weight_map"].values()))
    spec, _ = inspect_source(sharded_dir, "s", "auto", 32)
    assert spec.weights_sha256 != inspect_source(llama_dir, "l", "auto", 32)[0].weights_sha256
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        a = load_hf_model(sharded_dir)[0](input_ids=ids).logits
        b = load_hf_model(llama_dir)[0](input_ids=ids).logits
    assert torch.equal(a, b)


def test_a_shard_missing_from_the_folder_stops_before_any_work(sharded_dir, tmp_path):
    bad = _copy(sharded_dir, tmp_path / "bad")
    gone = sorted(set(_index(bad)["weight_map"].values()))[1]
    (bad / gone).unlink()
    with pytest.raises(UserError, match=f"shard {gone} is missing") as e:
        inspect_source(bad, "s", "auto", 32)
    assert e.value.file == str(bad / gone) and _one_message(e).count(gone) == 2  # the file and the detail
    with pytest.raises(UserError, match=f"shard {gone} is missing"):
        load_hf_model(bad)


def test_an_index_naming_a_file_that_does_not_exist_stops_with_that_name(sharded_dir, tmp_path):
    bad = _copy(sharded_dir, tmp_path / "bad")
    index = _index(bad)
    tensor = sorted(index["weight_map"])[0]
    index["weight_map"][tensor] = "model-00009-of-00009.safetensors"
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="shard model-00009-of-00009.safetensors is missing") as e:
        inspect_source(bad, "s", "auto", 32)
    _one_message(e)


def test_an_index_placing_a_tensor_in_the_wrong_shard_is_refused(sharded_dir, tmp_path):
    bad = _copy(sharded_dir, tmp_path / "bad")
    index = _index(bad)
    shards = sorted(set(index["weight_map"].values()))
    tensor = next(t for t, s in sorted(index["weight_map"].items()) if s == shards[0])
    index["weight_map"][tensor] = shards[1]
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=f"places 1 tensors in {shards[1]} that it does not hold.*{tensor}") as e:
        inspect_source(bad, "s", "auto", 32)
    _one_message(e)


def test_a_file_the_index_does_not_name_is_ignored_as_transformers_ignores_it(sharded_dir, tmp_path):
    folder = _copy(sharded_dir, tmp_path / "stray")
    (folder / "model-old-00001-of-00002.safetensors").write_bytes(b"\x10\x00 not a safetensors file at all")
    assert [f.name for f in weight_files(folder)] == [f.name for f in weight_files(sharded_dir)]
    assert (
        inspect_source(folder, "s", "auto", 32)[0].weights_sha256
        == inspect_source(sharded_dir, "s", "auto", 32)[0].weights_sha256
    )


def test_a_single_file_beside_an_index_is_refused_as_ambiguous(sharded_dir, llama_dir, tmp_path):
    both = _copy(sharded_dir, tmp_path / "both")
    shutil.copy(llama_dir / "model.safetensors", both / "model.safetensors")
    with pytest.raises(UserError, match="both model.safetensors and model.safetensors.index.json"):
        inspect_source(both, "s", "auto", 32)


# --------------------------------------------------------------------------- RAM, before loading


def test_weight_bytes_come_from_the_headers_in_float32_whatever_the_stored_dtype(llama_dir, tmp_path):
    model, _ = load_hf_model(llama_dir)
    n = sum(p.numel() for p in model.parameters())  # untied: every tensor is stored
    assert weight_bytes_fp32(weight_files(llama_dir)) == 4 * n
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    files = weight_files(tmp_path / "bf16")
    assert {d for d, _ in read_header(files[0]).values()} == {"BF16"}
    assert weight_bytes_fp32(files) == 4 * n  # loaded as float32: 4 bytes each, though stored in 2


def test_a_checkpoint_that_cannot_fit_in_ram_is_refused_with_both_numbers(llama_dir):
    need_bytes = weight_bytes_fp32(weight_files(llama_dir))
    factor = max(RAM_FACTOR_BY_STAGE.values())
    need = int(need_bytes * factor)
    check_fits_in_ram(need_bytes, need)  # exactly enough passes
    with pytest.raises(UserError) as e:
        check_fits_in_ram(need_bytes, need - 1)
    text = _one_message(e)
    assert f"{need:,} bytes" in text and f"{need - 1:,} bytes" in text and f"{factor}x" in text
    with pytest.raises(UserError, match="MemAvailable") as e:
        inspect_source(llama_dir, "l", "auto", 32, available_bytes=1_000)
    assert e.value.field == "hf_model.path" and "1,000 bytes" in str(e.value)
    inspect_source(llama_dir, "l", "auto", 32, available_bytes=need)


def test_mem_available_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n")
    assert mem_available_bytes(meminfo) == 20_000_000 * 1024
    assert mem_available_bytes(tmp_path / "absent") is None
    if Path("/proc/meminfo").exists():
        assert mem_available_bytes() > 0


# --------------------------------------------------------------------------- tokenizer against vocabulary


def _with_vocab(src: Path, dst: Path, vocab_size: int) -> Path:
    folder = _copy(src, dst)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = vocab_size
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_tokenizer_beyond_the_vocabulary_stops_in_inspect_source_naming_both_numbers(gpt2_dir, tmp_path):
    # its tokenizer has 320 ids; its weights, 320 rows, would not even load into a 300-row config:
    # the tokenizer's message, not transformers' size mismatch, shows the check runs first
    bad = _with_vocab(gpt2_dir, tmp_path / "small-vocab", 300)
    with pytest.raises(UserError, match="ids up to 319 .320 tokens. but the model's vocab_size is 300") as e:
        inspect_source(bad, "g", "auto", 32)
    assert e.value.field == "hf_model.tokenizer"
    _one_message(e)


def test_a_vocabulary_padded_above_the_tokenizer_is_accepted(gpt2_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    padded = tmp_path / "padded"  # as Qwen2.5 pads 151,665 ids to 151,936 rows
    GPT2LMHeadModel(GPT2Config(vocab_size=384, n_positions=64, n_embd=32, n_layer=2, n_head=4)).save_pretrained(padded)
    for f in gpt2_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, padded / f.name)
    spec, tok = inspect_source(padded, "g", "auto", 32)
    assert spec.vocab_size == 384 and len(tok) == 320


# --------------------------------------------------------------------------- architectures optimum cannot export


def test_an_architecture_without_an_onnx_config_names_itself_and_what_is_missing(tmp_path):
    from transformers import MixtralConfig

    MixtralConfig(vocab_size=256, num_attention_heads=4, num_key_value_heads=2, num_local_experts=2, **TINY,
                  architectures=["MixtralForCausalLM"]).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(UserError) as e:
        load_hf_config(tmp_path)
    text = _one_message(e)
    assert "MixtralForCausalLM (model_type 'mixtral') cannot be exported" in text
    assert "optimum has no ONNX export config for this model_type" in text and "llama" in text


def test_an_architecture_optimum_exports_without_a_kv_cache_says_which_tasks_it_has(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, is_decoder=True,
               architectures=["BertLMHeadModel"]).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(UserError) as e:
        load_hf_config(tmp_path)
    text = _one_message(e)
    assert "BertLMHeadModel (model_type 'bert') cannot be exported" in text
    assert "exports only feature-extraction, fill-mask" in text and "text-generation-with-past" in text


# --------------------------------------------------------------------------- layouts of current families

# (config class, extra config, tied embeddings): grouped-query attention everywhere (4 query heads,
# fewer KV heads), RoPE scaling on the Llamas, tied and untied heads. Gemma's head_dim is set
# explicitly (its default is 256); Phi-3's pad id must fit the tiny vocabulary.
LAYOUTS = {
    "llama-gqa-llama3-rope-tied": ("LlamaConfig", {"num_key_value_heads": 2, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}, True),
    "llama-mqa-linear-rope-untied": ("LlamaConfig", {"num_key_value_heads": 1, "rope_scaling": {
        "rope_type": "linear", "factor": 2.0}}, False),
    "qwen2-tied": ("Qwen2Config", {"num_key_value_heads": 2}, True),
    "mistral-untied": ("MistralConfig", {"num_key_value_heads": 2}, False),
    "phi3-untied": ("Phi3Config", {"num_key_value_heads": 2, "pad_token_id": 0}, False),
    "gemma-tied": ("GemmaConfig", {"num_key_value_heads": 1, "head_dim": 8}, True),
}  # fmt: skip


def _build(name: str, folder: Path, vocab_size: int = 256) -> Path:
    import transformers

    cls, extra, tied = LAYOUTS[name]
    config = getattr(transformers, cls)(
        vocab_size=vocab_size, num_attention_heads=4, tie_word_embeddings=tied, **TINY, **extra
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_family_layout_exports_verifies_and_scores_through_onnxruntime(name, tmp_path, byte_corpus):
    from edgescale.hf.export import export_and_verify
    from edgescale.hf.tokens import hf_onnx_loss, tokenize_corpus

    folder = _build(name, tmp_path / name)
    spec, tok = inspect_source(folder, name, "auto", 32)
    model, config = load_hf_model(folder)
    tied = LAYOUTS[name][2]
    assert (model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()) == tied
    check = export_and_verify(model, tmp_path / "model.onnx", 32, opset=18, atol=1e-4, tokens=8, seed=0)
    assert check["greedy_tokens_identical"] == 8 and check["max_abs_logit_diff"] <= 1e-4 * 50
    res = hf_onnx_loss(tmp_path / "model.onnx", tokenize_corpus(byte_corpus, tok, 256), "validation", 32, 32, 256, 8)
    assert res.tokens == 256 and 0 < res.bits_per_byte < 16  # random weights: a number, not a result
    # counted as it ships: KV cache of the KV heads only, the head once when tied
    acct = accounting_hf(model, 32)
    kv_heads, head_dim = config.num_key_value_heads, getattr(config, "head_dim", None) or 32 // 4
    assert kv_heads < config.num_attention_heads
    assert acct.kv_bytes_per_token_fp32 == 2 * 2 * kv_heads * head_dim * 4  # K and V, 2 layers, float32
    assert acct.params_embedding == (1 if tied else 2) * 256 * 32
    assert acct.params_total == sum(p.numel() for p in model.parameters())


def test_a_gqa_llama_with_its_tokenizer_folder_runs_a_whole_study(tmp_path, text_dir, tiny_tokenizer):
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    folder = _build("llama-gqa-llama3-rope-tied", tmp_path / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    study = tmp_path / "study.yaml"
    study.write_text(
        "schema_version: 1\nname: gqa\n"
        f"corpus: {{source: {text_dir}, validation_fraction: 0.15, test_fraction: 0.15}}\n"
        "hf_model: {path: llama, name: gqa, block_size: 32}\n"
        "training: {threads: 1}\n"
        "evaluation: {context_length: 32, stride: 32, max_tokens: 512, batch_size: 8}\n"
        "measurement: {prompt_len: 16, decode_context: 32, repeats: 3, warmup: 1, threads: 1}\n"
        "recipes: [fp32, int4_weight_only]\ndevices: [host]\n"
    )
    run = run_study(study, tmp_path / "run", Reporter(quiet=True))
    results = json.loads((run / "results.json").read_text())
    assert results["protocol"]["tokenizer"].startswith("PreTrainedTokenizerFast sha256:")
    variants = {v["recipe"]: v for v in results["variants"]}
    assert set(variants) == {"fp32", "int4_weight_only"}
    assert variants["fp32"]["steps"][0]["metrics"]["greedy_tokens_identical"] == 24
    for v in variants.values():
        assert 0 < v["loss"]["validation"]["bits_per_byte"] < 20  # random weights: a number, not a result
    kv = 2 * 2 * 2 * 8 * 4  # K and V, 2 layers, 2 KV heads of 8, float32: the 4 query heads are not cached
    assert variants["fp32"]["cost"]["kv_bytes_per_token"] == kv


# --------------------------------------------------------------------------- sentencepiece tokenizer.model only

# special pieces first, in each family's order (Llama: unk, bos, eos; Gemma: pad, eos, bos, unk)
SPECIALS = {
    "LlamaTokenizer": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
    "GemmaTokenizer": {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
}
PIECES = ["▁", "t", "h", "e", "a", "n", "d", "o", "f", "▁t", "he", "▁the", "an", "▁an", "▁and", "▁o", "▁of"]


def _sentencepiece_folder(folder: Path, tokenizer_class: str) -> Path:
    """A BPE sentencepiece model with byte fallback (as Llama's and Gemma's), written with protobuf."""
    from transformers.utils import sentencepiece_model_pb2_new as pb

    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.normalizer_spec.name = "identity"
    kind = pb.ModelProto.SentencePiece
    specials = SPECIALS[tokenizer_class]
    for name, piece in specials.items():
        m.pieces.add(piece=piece, score=0, type=kind.UNKNOWN if name == "unk_token" else kind.CONTROL)
    for b in range(256):
        m.pieces.add(piece=f"<0x{b:02X}>", score=0, type=kind.BYTE)
    for i, piece in enumerate(PIECES):  # earlier pieces merge first
        m.pieces.add(piece=piece, score=-float(i), type=kind.NORMAL)
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(m.SerializeToString())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class, **specials}))
    return folder


@pytest.mark.parametrize("tokenizer_class", sorted(SPECIALS))
def test_a_sentencepiece_only_tokenizer_is_converted_to_a_fast_one_offline(tokenizer_class, tmp_path, byte_corpus):
    from edgescale.hf.source import load_tokenizer
    from edgescale.hf.tokens import tokenize_split

    folder = _sentencepiece_folder(tmp_path / "sp", tokenizer_class)
    tok = load_tokenizer(folder)
    assert tok.is_fast and len(tok) == len(SPECIALS[tokenizer_class]) + 256 + len(PIECES)
    enc = tok("the and of", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(enc["input_ids"])[-2:] == ["▁and", "▁of"]  # merges from the piece scores
    text = "the café\nof naïve"  # characters without a piece go through byte fallback
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    split, ends = tokenize_split(byte_corpus["validation"], tok, len(tok))
    assert ends[-1] == byte_corpus["validation"].n_bytes and split.tokens.size < byte_corpus["validation"].n_bytes


def test_a_sentencepiece_folder_scores_through_onnxruntime(tmp_path, byte_corpus):
    from edgescale.hf.export import export_and_verify
    from edgescale.hf.tokens import hf_onnx_loss, tokenize_corpus

    folder = _sentencepiece_folder(tmp_path / "llama", "LlamaTokenizer")
    vocab = 3 + 256 + len(PIECES)
    _build("llama-gqa-llama3-rope-tied", tmp_path / "model", vocab_size=vocab)
    for f in (tmp_path / "model").iterdir():
        shutil.copy(f, folder / f.name)
    spec, tok = inspect_source(folder, "sp", "auto", 32)
    assert spec.tokenizer == "LlamaTokenizerFast" and spec.tokenizer_sha256
    model, _ = load_hf_model(folder)
    export_and_verify(model, tmp_path / "model.onnx", 32, opset=18, atol=1e-4, tokens=4, seed=0)
    res = hf_onnx_loss(tmp_path / "model.onnx", tokenize_corpus(byte_corpus, tok, vocab), "validation", 32, 32, 128, 8)
    assert res.tokens == 128 and res.bytes > res.tokens


def test_a_sentencepiece_tokenizer_of_another_family_is_refused_with_one_message(tmp_path):
    from edgescale.hf.source import load_tokenizer

    folder = _sentencepiece_folder(tmp_path / "sp", "LlamaTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(UserError, match="converts LlamaTokenizer and GemmaTokenizer models .* and no others") as e:
        load_tokenizer(folder)
    assert "T5Tokenizer" in _one_message(e) and e.value.field == "hf_model.tokenizer"


# --------------------------------------------------------------------------- bad input stops a study before any work


@pytest.mark.parametrize("bad", ["missing-shard", "no-ram", "tokenizer-beyond-vocab"])
def test_bad_input_stops_a_study_before_any_work_with_one_message(bad, tmp_path, text_dir, sharded_dir, gpt2_dir,
                                                                  monkeypatch):  # fmt: skip
    import edgescale.hf.backend
    import edgescale.hf.source
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    def never(*a, **k):
        raise AssertionError("weights were loaded before the input was refused")

    monkeypatch.setattr(edgescale.hf.backend, "load_hf_model", never)
    if bad == "missing-shard":
        folder = _copy(sharded_dir, tmp_path / "model")
        (folder / sorted(set(_index(folder)["weight_map"].values()))[0]).unlink()
        expect = "shard model-00001-of-.* is missing"
    elif bad == "no-ram":
        folder = _copy(sharded_dir, tmp_path / "model")
        monkeypatch.setattr(edgescale.hf.source, "mem_available_bytes", lambda: 10_000)
        expect = "need about .* of RAM .* but 0.00 GB .10,000 bytes. is available"
    else:
        folder = _with_vocab(gpt2_dir, tmp_path / "model", 300)
        expect = "ids up to 319 .* vocab_size is 300"
    study = tmp_path / "study.yaml"
    study.write_text(
        f"schema_version: 1\nname: bad\ncorpus: {{source: {text_dir}}}\n"
        "hf_model: {path: model, block_size: 32}\nevaluation: {context_length: 32, stride: 32}\n"
        "measurement: {prompt_len: 16, decode_context: 32}\nrecipes: [fp32]\ndevices: [host]\n"
    )
    with pytest.raises(UserError, match=expect) as e:
        run_study(study, tmp_path / "run", Reporter(quiet=True))
    _one_message(e)
    assert not (tmp_path / "run").exists()
