"""Real transformer layouts for the analytic predictor: a Hugging Face ``config.json`` read into
an :class:`Architecture`, and a few published configs shipped with their source.

Parameters are counted per tensor class, because each class is stored and read differently in
a decode step (batch 1):

- ``matrices``: the 2-D attention and FFN weights of every layer, all streamed once per token;
- ``embedding``: the input table (and GPT-2's position table): one row of each read per token;
- ``head``: an untied LM head, streamed whole once per token. A tied head is the embedding table
  itself, so the whole table is streamed once per token and stored once;
- ``norms_biases``: 1-D tensors (norm weights, biases), stored at 32 bits: llama.cpp quantizes
  only tensors of two or more dimensions (ggml-org/llama.cpp src/llama-quant.cpp,
  ``quantize &= (ggml_n_dims(tensor) >= 2)``) and its converter writes 1-D tensors as F32.

Two FFN kinds: ``gated`` (Llama, Qwen2, SmolLM, Mistral: gate, up and down, 3·d·d_ff) and
``gpt2`` (fc and proj, 2·d·d_ff with d_ff = ``n_inner`` or 4·d, biases, learned positions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgescale.errors import UserError

# model_type with a gated FFN (gate, up, down; Phi-3 fuses gate+up and q,k,v, which counts the same)
GATED_TYPES = ("llama", "qwen2", "mistral", "phi3", "gemma2")
TIED_BY_DEFAULT = ("gpt2", "gemma2")  # transformers' config default for tie_word_embeddings; the rest untie
GPT2_TYPES = ("gpt2",)
QKV_BIAS_TYPES = ("qwen2",)  # Qwen2 has q, k and v biases without an attention_bias key

# --------------------------------------------------------------------------- published configs
# Each value is copied from the file named in its source; random-weight benchmarks build from them too.

# SmolLM2-135M: huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json
# (LlamaForCausalLM, 30 layers of width 576, 9 heads in 3 KV groups, tied embeddings).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
# Qwen2.5-0.5B: huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json
# (Qwen2ForCausalLM, 24 layers of width 896, 14 heads in 2 KV groups, tied embeddings, QKV biases).
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
# TinyLlama-1.1B: huggingface.co/TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T/blob/main/config.json
# (LlamaForCausalLM, 1,100,048,384 parameters, untied embeddings).
TINYLLAMA_1_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
# Llama-3.2-1B: huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
# (LlamaForCausalLM, 16 layers of width 2048, 32 heads of 64 in 8 KV groups, tied embeddings).
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
# GPT-2 (124M): huggingface.co/openai-community/gpt2/blob/main/config.json
# (GPT2LMHeadModel, 12 layers of width 768, 12 heads, n_inner null = 4·768, 1024 positions, tied).
GPT2_124M = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "n_layer": 12,
    "n_embd": 768,
    "n_head": 12,
    "n_inner": None,
    "n_positions": 1024,
    "n_ctx": 1024,
    "vocab_size": 50257,
    "activation_function": "gelu_new",
}


# Layouts of the models the device anchors were measured on (devices/*.yaml ``arch``), copied from the
# config.json named in each source; only the fields the predictor reads.


def _gated(kind: str, d: int, d_ff: int, layers: int, heads: int, kv: int, vocab: int, tied: bool, **extra) -> dict:
    return {
        "model_type": kind,
        **{"hidden_size": d, "intermediate_size": d_ff, "num_hidden_layers": layers},
        **{"num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab},
        "tie_word_embeddings": tied,
        **extra,
    }


ANCHOR_LAYOUTS = {
    "llama-3.2-3b": (
        _gated("llama", 3072, 8192, 28, 24, 8, 128256, True, head_dim=128),
        "huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json",
    ),
    "llama-3.1-8b": (
        _gated("llama", 4096, 14336, 32, 32, 8, 128256, False),
        "huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (Llama 3 8B has the same layout)",
    ),
    "llama-2-7b": (
        _gated("llama", 4096, 11008, 32, 32, 32, 32000, False),
        "huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json",
    ),
    "qwen2.5-7b": (
        _gated("qwen2", 3584, 18944, 28, 28, 4, 152064, False),
        "huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json",
    ),
    "phi-3.5-mini": (
        _gated("phi3", 3072, 8192, 32, 32, 32, 32064, False),
        "huggingface.co/microsoft/Phi-3.5-mini-instruct/blob/main/config.json",
    ),
    "gemma-2-2b": (
        _gated("gemma2", 2304, 9216, 26, 8, 4, 256000, True, head_dim=256),
        "huggingface.co/google/gemma-2-2b/blob/main/config.json",
    ),
    "gemma-2-9b": (
        _gated("gemma2", 3584, 14336, 42, 16, 8, 256000, True, head_dim=256),
        "huggingface.co/google/gemma-2-9b/blob/main/config.json",
    ),
}

PUBLISHED: dict[str, tuple[dict, str]] = {
    "smollm2-135m": (SMOLLM2_135M, "huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json"),
    "qwen2.5-0.5b": (QWEN25_05B, "huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json"),
    "tinyllama-1.1b": (
        TINYLLAMA_1_1B,
        "huggingface.co/TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T/blob/main/config.json",
    ),
    "llama-3.2-1b": (LLAMA32_1B, "huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json"),
    "gpt2": (GPT2_124M, "huggingface.co/openai-community/gpt2/blob/main/config.json"),
    **ANCHOR_LAYOUTS,
}


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class Architecture:
    name: str
    source: str  # where the numbers come from: a published config's URL, or the user's file
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab_size: int
    d_ff: int
    mlp: Literal["gated", "gpt2"]
    tied: bool
    qkv_bias: bool = False
    n_positions: int = 0  # rows of a learned position table (GPT-2), else 0

    def params_by_class(self) -> dict[str, int]:
        """Parameters per tensor class (see the module docstring)."""
        d, q, kv = self.n_embd, self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        attn = d * q + 2 * d * kv + q * d  # (d, q) query, (d, kv) key and value, (q, d) output
        ffn = (3 if self.mlp == "gated" else 2) * d * self.d_ff
        if self.mlp == "gated":  # two RMSNorm weights a layer (+ q, k, v biases), one final norm
            per_layer_1d, final_1d = 2 * d + (q + 2 * kv if self.qkv_bias else 0), d
        else:  # two LayerNorms (weight, bias), biases on qkv, out, fc, proj; a final LayerNorm
            per_layer_1d, final_1d = 4 * d + (q + 2 * kv) + d + self.d_ff + d, 2 * d
        return {
            "matrices": self.n_layer * (attn + ffn),
            "embedding": (self.vocab_size + self.n_positions) * d,
            "head": 0 if self.tied else self.vocab_size * d,
            "norms_biases": self.n_layer * per_layer_1d + final_1d,
        }

    def kv_bytes_per_token(self, kv_bits: float) -> float:
        """Key and value of every layer for one token: 2 · L · kv_heads · head_dim · kv_bits / 8."""
        return 2 * self.n_layer * self.n_kv_head * self.head_dim * kv_bits / 8


@dataclass(frozen=True)
class WeightLoad:
    """What a decode step reads and what the model stores, at the given bits per tensor class."""

    bytes_by_class: dict[str, float]  # stored
    bits_by_class: dict[str, float]
    streamed_bytes_per_token: float  # weights read by one decode step
    compute_params: float  # parameters in matrix products per token (2 FLOPs each)


def weight_load(arch: Architecture, bits: float, embed_bits: float | None, head_bits: float | None) -> WeightLoad:
    """Stored and per-token streamed weight bytes. ``embed_bits`` and ``head_bits`` default to ``bits``;
    a tied table is one tensor, stored and read at ``head_bits`` when given (llama.cpp quantizes a
    tied token_embd as its output tensor), else at ``embed_bits``."""
    p = arch.params_by_class()
    e_bits = bits if embed_bits is None else embed_bits
    h_bits = e_bits if arch.tied and head_bits is None else (bits if head_bits is None else head_bits)
    if arch.tied:
        e_bits = h_bits
    b = {"matrices": bits, "embedding": e_bits, "head": h_bits, "norms_biases": 32.0}
    stored = {k: p[k] * b[k] / 8 for k in p}
    row = (1 + (arch.n_positions > 0)) * arch.n_embd * e_bits / 8  # one token row (+ one position row)
    head_read = arch.vocab_size * arch.n_embd * (e_bits if arch.tied else h_bits) / 8
    streamed = stored["matrices"] + stored["norms_biases"] + row + head_read
    return WeightLoad(stored, b, streamed, p["matrices"] + arch.vocab_size * arch.n_embd)


# --------------------------------------------------------------------------- reading a config


def from_hf_config(cfg: object, source: str, name: str = "", file: str | Path | None = None) -> Architecture:
    """An :class:`Architecture` from a Hugging Face config (as a dict); one ``UserError`` naming the
    field otherwise. Defaults follow transformers: KV heads = heads, head_dim = hidden / heads,
    GPT-2's FFN width 4 · hidden and tied embeddings; Llama-family embeddings are untied unless stated."""
    if not isinstance(cfg, dict):
        raise UserError("a config.json must hold one JSON object", file=file)
    kind = cfg.get("model_type")
    if kind not in GATED_TYPES + GPT2_TYPES:
        allowed = ", ".join(GATED_TYPES + GPT2_TYPES)
        raise UserError(f"model_type {kind!r} is not supported; allowed: {allowed}", file=file, field="model_type")
    for moe in ("num_local_experts", "num_experts"):
        if cfg.get(moe):
            raise UserError("mixture-of-experts configs are not supported", file=file, field=moe)
    gpt2 = kind in GPT2_TYPES

    def count(key: str, alias: str, default: int | None = None) -> int:
        k = key if key in cfg else alias
        value = default if cfg.get(k) is None else cfg[k]  # transformers reads null as unset
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"must be a positive integer, got {value!r}", file=file, field=key)
        return value

    d = count("hidden_size", "n_embd")
    heads = count("num_attention_heads", "n_head")
    if "head_dim" not in cfg and d % heads:
        raise UserError(
            f"hidden_size {d} is not a multiple of num_attention_heads {heads}", file=file, field="head_dim"
        )
    kv = count("num_key_value_heads", "num_key_value_heads", heads)
    if heads % kv:
        raise UserError(
            f"num_attention_heads {heads} is not a multiple of {kv}", file=file, field="num_key_value_heads"
        )
    tied = cfg.get("tie_word_embeddings", kind in TIED_BY_DEFAULT)
    if not isinstance(tied, bool):
        raise UserError(f"must be true or false, got {tied!r}", file=file, field="tie_word_embeddings")
    d_ff = count("n_inner", "n_inner", 4 * d) if gpt2 else count("intermediate_size", "intermediate_size")
    return Architecture(
        name=name or str(cfg.get("_name_or_path") or kind),
        source=source,
        n_layer=count("num_hidden_layers", "n_layer"),
        n_embd=d,
        n_head=heads,
        n_kv_head=kv,
        head_dim=count("head_dim", "head_dim", d // heads),
        vocab_size=count("vocab_size", "vocab_size"),
        d_ff=d_ff,
        mlp="gpt2" if gpt2 else "gated",
        tied=tied,
        qkv_bias=kind in QKV_BIAS_TYPES or cfg.get("attention_bias") is True,
        n_positions=count("n_positions", "n_positions", 1024) if gpt2 else 0,
    )


def load_config(path: Path) -> Architecture:
    """Read a Hugging Face ``config.json`` (the file's path is its source)."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no such file", file=path, field="--config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"not a readable JSON config ({e})", file=path, field="--config") from None
    return from_hf_config(cfg, source=str(path), name=path.parent.name or path.stem, file=path)


def get_architecture(name: str) -> Architecture:
    """A shipped published config by name (case-insensitive), with its source."""
    key = name.lower()
    if key not in PUBLISHED:
        raise UserError(f"unknown architecture {name!r}; allowed: {', '.join(PUBLISHED)}", field="--arch")
    cfg, source = PUBLISHED[key]
    return from_hf_config(cfg, source=source, name=key)
