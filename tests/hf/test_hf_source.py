"""Loading a local Hugging Face folder: what is accepted, what is refused with one clear message."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgescale.errors import UserError
from edgescale.hf.source import accounting_hf, inspect_source, load_hf, load_hf_model, save_hf


def test_gpt2_and_llama_folders_load_offline(gpt2_dir, llama_dir):
    g, _ = load_hf_model(gpt2_dir)
    spec, tok = inspect_source(gpt2_dir, "g", "auto", 32)
    assert spec.model_type == "gpt2" and tok is not None and spec.tokenizer != "bytes" and spec.n_positions == 64
    spec, tok = inspect_source(llama_dir, "l", "auto", 32)
    assert spec.model_type == "llama" and tok is None and spec.tokenizer == "bytes"
    assert g.config.vocab_size == 320


def test_a_folder_that_is_not_a_causal_lm_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(UserError, match="not a causal language model .BertForMaskedLM.") as e:
        load_hf_model(tmp_path)
    assert e.value.field == "hf_model.path" and str(e.value).count("\n") == 0


def test_missing_folder_and_missing_config_are_refused(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        load_hf_model(tmp_path / "nope")
    with pytest.raises(UserError, match="no config.json"):
        load_hf_model(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_safetensors_file_is_refused(gpt2_dir, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(gpt2_dir, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"
    )
    with pytest.raises(UserError, match="truncated or corrupt") as e:
        load_hf_model(bad)
    assert e.value.file.endswith("model.safetensors")


def test_pickled_weights_are_never_opened(gpt2_dir, tmp_path):
    bad = tmp_path / "pickle"
    shutil.copytree(gpt2_dir, bad)
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not opened")
    with pytest.raises(UserError, match="pickles, which edgescale never opens"):
        load_hf_model(bad)


def test_block_size_beyond_the_position_table_is_refused(gpt2_dir):
    with pytest.raises(UserError, match="exceeds the model's 64 positions"):
        inspect_source(gpt2_dir, "g", "auto", 128)


@pytest.mark.parametrize("which", ["gpt2_dir", "llama_dir"])
def test_run_checkpoint_round_trip_is_exact(which, request, tmp_path):
    model, _ = load_hf_model(request.getfixturevalue(which))
    again = load_hf(save_hf(model, tmp_path / "m.safetensors"))
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_accounting_counts_every_parameter_once(gpt2_dir, llama_dir):
    g, _ = load_hf_model(gpt2_dir)
    a = accounting_hf(g, 32)
    assert a.params_total == sum(p.numel() for p in g.parameters())  # tied head counted once
    assert a.params_embedding == 320 * 32 + 64 * 32  # token + position tables
    assert a.kv_bytes_per_token_fp32 == 2 * 2 * 32 * 4  # K and V, 2 layers, 4 heads x 8, float32
    llama, _ = load_hf_model(llama_dir)
    b = accounting_hf(llama, 32)
    assert b.params_embedding == 2 * 256 * 32  # untied head counts as embedding
    assert b.kv_bytes_per_token_fp32 == 2 * 2 * (2 * 8) * 4  # only the 2 KV heads are cached
