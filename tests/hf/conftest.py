"""Tiny Hugging Face models built here with random weights (``save_pretrained``), never downloaded.

- ``gpt2_dir``: GPT-2, 2 layers, width 32, 4 heads, 64 positions, with a byte-level BPE
  tokenizer (320 ids) trained here on the fixture corpus with ``tokenizers``;
- ``llama_dir``: Llama, 2 layers, width 32, 4 query heads in 2 key/value groups
  (grouped-query attention), FFN 64, no tokenizer (byte ids, vocabulary 256);
- ``text_dir``: a folder of 8 small UTF-8 works (some non-ASCII), the study corpus.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: edgescale.hf sets it too

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "that",
    "is",
    "was",
    "he",
    "for",
    "it",
    "with",
    "as",
    "his",
    "on",
    "be",
    "at",
    "by",
    "this",
    "had",
    "not",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "naïve",
    "café",
    "über",
    "señor",
    "straße",
]


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    rng = random.Random(0)
    for i in range(8):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "." for _ in range(70)]
        (root / f"w{i}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer(text_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train([str(p) for p in sorted(text_dir.glob("*.txt"))], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4)
    GPT2LMHeadModel(config).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("llama")
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def byte_corpus(text_dir):
    from edgescale.config import CorpusConfig
    from edgescale.data.corpus import load_corpus

    return load_corpus(CorpusConfig(source=str(text_dir), validation_fraction=0.15, test_fraction=0.15))


@pytest.fixture(scope="session")
def gpt2_onnx(gpt2_dir, tmp_path_factory) -> Path:
    """optimum's export of the tiny GPT-2, in a folder with its tokenizer (as optimum leaves it)."""
    import shutil

    from edgescale.hf.export import export_hf
    from edgescale.hf.source import load_hf_model

    out = tmp_path_factory.mktemp("gpt2-onnx")
    for f in gpt2_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    return export_hf(load_hf_model(gpt2_dir)[0], out / "model.onnx")


@pytest.fixture(scope="session")
def llama_onnx(llama_dir, tmp_path_factory) -> Path:
    from edgescale.hf.export import export_hf
    from edgescale.hf.source import load_hf_model

    return export_hf(load_hf_model(llama_dir)[0], tmp_path_factory.mktemp("llama-onnx") / "model.onnx")
