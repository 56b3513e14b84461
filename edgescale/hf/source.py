"""Load a local Hugging Face causal LM, check it, and keep it as a single-file checkpoint.

A folder is accepted when its ``config.json`` names a causal-LM architecture that
transformers knows and optimum can export as ``text-generation-with-past``, and its
weights are safetensors that open (a truncated or corrupt file is refused before
anything runs; pickled ``pytorch_model.bin`` weights are never opened).

Inside a run directory the model travels as one safetensors file whose metadata holds
the transformers config (``{"edgescale": {"kind": "hf", "config": ...}}``), so it is
content-hashed, cached and quarantined like every other artifact. A GPT-2 with pruned
heads records them in its config (``pruned_heads``, transformers' own mechanism), and a
pruned Llama its smaller ``num_key_value_heads``/``intermediate_size`` with an explicit
``head_dim``: every checkpoint this package writes loads with stock transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgescale.atomic import atomic_path
from edgescale.errors import UserError
from edgescale.hf.checks import (
    check_fits_in_ram,
    check_tokenizer_vocab,
    checkpoint_files,
    mem_available_bytes,
    weight_bytes_fp32,
)
from edgescale.hf.spm import fast_from_sentencepiece
from edgescale.models.shape import ModelAccounting

# Layouts the structured pruning steps know (edgescale.hf.prune): module names and weight
# orientation. Export, quantization, loss and latency work for any model optimum exports.
PRUNABLE = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "llama"}
# model types named as examples when one cannot be exported (those optimum knows are shown)
_COMMON_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gpt2", "gpt_neox", "olmo")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")


@dataclass(frozen=True)
class HFSpec:
    """What the pipeline knows about a Hugging Face source (``SizePlan.cfg`` for an hf_model study)."""

    name: str
    path: Path
    model_type: str
    config: dict  # transformers config, as config.to_dict()
    weights_sha256: str
    tokenizer: str  # "bytes" or the tokenizer's class name
    tokenizer_sha256: str  # hash of the tokenizer files ("" for bytes)
    vocab_size: int
    n_positions: int
    block_size: int
    corpus: Any = field(default=None, compare=False, repr=False)  # edgescale.hf.tokens.TokenizedCorpus

    def to_dict(self) -> dict:
        return {
            "hf": str(self.path),
            "model_type": self.model_type,
            "weights_sha256": self.weights_sha256,
            "tokenizer": self.tokenizer,
            "tokenizer_sha256": self.tokenizer_sha256,
            "vocab_size": self.vocab_size,
            "block_size": self.block_size,
        }


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _files_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_hf_config(path: Path, field_name: str = "hf_model.path"):
    """The folder's transformers config, refused unless it is a causal LM optimum can export."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    _quiet_transformers()
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            "not a folder (a Hugging Face model folder with config.json is expected)", file=path, field=field_name
        )
    if not (path / "config.json").is_file():
        raise UserError("no config.json: not a Hugging Face model folder", file=path, field=field_name)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise UserError(
            f"transformers cannot read config.json: {str(e).splitlines()[0]}", file=path, field=field_name
        ) from None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = list(getattr(config, "architectures", None) or [])
    is_causal = (archs and archs[0] in causal) or (
        not archs and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not config.is_encoder_decoder
    )
    if not is_causal:
        what = archs[0] if archs else config.model_type
        raise UserError(
            f"not a causal language model ({what}); allowed: a *ForCausalLM / *LMHeadModel architecture "
            "such as GPT2LMHeadModel or LlamaForCausalLM",
            file=path / "config.json",
            field=field_name,
        )
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the export configs)
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(config.model_type, "onnx", library_name="transformers")
    except KeyError:  # optimum's way of saying it does not know the model type
        tasks = {}
    if "text-generation-with-past" not in tasks:
        raise UserError(_not_exportable(config, archs, tasks), file=path / "config.json", field=field_name)
    return config


def _not_exportable(config, archs: list[str], tasks) -> str:
    """One message: the architecture, and what optimum lacks to export it with a KV cache."""
    from optimum.exporters.tasks import TasksManager

    what = f"{archs[0] if archs else 'a model'} (model_type {config.model_type!r})"
    if tasks:
        missing = f"optimum's ONNX config for it exports only {', '.join(sorted(tasks))}"
    else:
        missing = "optimum has no ONNX export config for this model_type"
    known = set(TasksManager.get_supported_model_type_for_task("text-generation-with-past", "onnx"))
    common = [t for t in _COMMON_FAMILIES if t in known]
    return (
        f"{what} cannot be exported: edgescale needs optimum's text-generation-with-past export (a causal LM "
        f"with a KV cache) and {missing}; optimum exports {len(known)} model types this way, such as "
        f"{', '.join(common)}"
    )


def weight_files(path: Path, field_name: str = "hf_model.path") -> list[Path]:
    """The safetensors files transformers loads (``model.safetensors`` or the shards its index names,
    :func:`edgescale.hf.checks.checkpoint_files`), each opened to check it is whole."""
    from safetensors import SafetensorError, safe_open

    files = checkpoint_files(path, field_name)
    for f in files:
        try:
            with safe_open(str(f), "pt") as st:
                names = list(st.keys())
                if names:  # reading the last tensor proves the data section is all there
                    st.get_slice(names[-1])
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(
                f"not a readable safetensors file (truncated or corrupt): {e}", file=f, field=field_name
            ) from None
    return files


def load_tokenizer(path: Path, mode: str = "auto"):
    """The folder's own tokenizer (None for byte ids): ``mode`` auto or bytes."""
    if mode == "bytes" or not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        if (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").is_file():
            return fast_from_sentencepiece(path)  # a fast tokenizer, for character offsets
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- tokenizers raise many types; one message names the folder
        raise UserError(
            f"transformers cannot load the tokenizer: {str(e).splitlines()[0]}", file=path, field="hf_model.tokenizer"
        ) from None


def load_hf_model(path: Path, field_name: str = "hf_model.path"):
    """(model in eval mode, float32, on CPU; its config) from a local folder."""
    import torch
    from transformers import AutoModelForCausalLM

    config = load_hf_config(path, field_name)
    weight_files(path, field_name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, dtype=torch.float32
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(
            f"transformers cannot load the weights: {str(e).splitlines()[0]}", file=path, field=field_name
        ) from None
    return model.eval(), config


def inspect_source(
    path: Path, name: str, tokenizer_mode: str, block_size: int, available_bytes: int | None = None
) -> tuple[HFSpec, Any]:
    """Check a folder and describe it, loading no weights; returns (spec without corpus, tokenizer or None).

    Refused here: a shard missing from the index, weights that cannot fit in ``available_bytes``
    of RAM (default: MemAvailable now) at some stage, a tokenizer with ids beyond ``vocab_size``."""
    config = load_hf_config(path)
    files = weight_files(path)
    available = mem_available_bytes() if available_bytes is None else available_bytes
    if available is not None:
        check_fits_in_ram(weight_bytes_fp32(files), available, where=path)
    tok = load_tokenizer(path, tokenizer_mode)
    if tok is not None:
        check_tokenizer_vocab(tok, int(config.vocab_size), where=path)
    n_pos = int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 0) or block_size)
    if block_size > n_pos:
        raise UserError(f"block_size {block_size} exceeds the model's {n_pos} positions", field="hf_model.block_size")
    vocab = int(config.vocab_size)
    if tok is None and vocab < 256:
        raise UserError(
            f"no tokenizer and vocab_size {vocab} < 256: byte ids cannot be fed", file=path, field="hf_model.tokenizer"
        )
    tok_files = [path / f for f in TOKENIZER_FILES if (path / f).exists()] if tok is not None else []
    spec = HFSpec(
        name=name,
        path=path,
        model_type=config.model_type,
        config=config.to_dict(),
        weights_sha256=_files_sha256(files),
        tokenizer=type(tok).__name__ if tok is not None else "bytes",
        tokenizer_sha256=_files_sha256(tok_files) if tok_files else "",
        vocab_size=vocab,
        n_positions=n_pos,
        block_size=block_size,
    )
    return spec, tok


# --------------------------------------------------------------------------- run-directory checkpoints


def config_from_dict(d: dict):
    from transformers import AutoConfig

    d = dict(d)
    if d.get("pruned_heads"):  # JSON keys are strings; transformers indexes layers by int
        d["pruned_heads"] = {int(k): list(v) for k, v in d["pruned_heads"].items()}
    return AutoConfig.for_model(d.pop("model_type"), **d)


def save_hf(model, path: Path, meta: dict | None = None) -> Path:
    """One safetensors file: the weights (each storage once) and the config in the metadata."""
    from safetensors.torch import save_file

    seen, tensors = set(), {}
    for k, v in model.state_dict().items():
        ptr = v.untyped_storage().data_ptr()
        if ptr not in seen:  # a tied LM head is stored once
            seen.add(ptr)
            tensors[k] = v.detach().contiguous()
    info = {"kind": "hf", "config": model.config.to_dict(), **(meta or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"edgescale": json.dumps(info, sort_keys=True, default=str)})
    return Path(path)


def read_hf_meta(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["edgescale"])
    except SafetensorError as e:
        raise UserError(f"not a readable safetensors file (truncated or corrupt): {e}", file=path) from None
    except (KeyError, json.JSONDecodeError):
        raise UserError("safetensors file without edgescale metadata", file=path) from None
    if meta.get("kind") != "hf":
        raise UserError("not a Hugging Face checkpoint written by edgescale", file=path)
    return meta


def load_hf(path: Path):
    """A model saved by :func:`save_hf` (config rebuilt, weights loaded strictly but for tied copies).

    The module tree is built with its parameters on the meta device and the file's tensors
    are assigned in place (``assign=True``): the weights are in memory once, and the random
    init that ``from_config`` would spend (minutes and a second copy at 1B parameters) never runs.
    Buffers computed at construction (RoPE frequencies) are built on the CPU as usual."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.integrations.accelerate import init_empty_weights

    _quiet_transformers()
    meta = read_hf_meta(path)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config_from_dict(meta["config"]))
    with safe_open(str(path), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    _, unexpected = model.load_state_dict(state, strict=False, assign=True)
    del state
    model.tie_weights()  # a tied LM head was stored once: point it at the loaded embedding again
    empty = [k for k, v in model.state_dict().items() if v.is_meta]
    if empty or unexpected:
        raise UserError(
            f"tensors do not fit the recorded config: missing {empty[:3]}, unexpected {list(unexpected)[:3]}",
            file=path,
        )
    return model.float().eval()


def empty_model(config: dict):
    """A transformers model of ``config`` (``config.to_dict()``) on the meta device: every shape, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config_from_dict(config))


def accounting_hf(model, decode_context: int):
    """Parameter, FLOP and KV-cache counts of a transformers causal LM, from its modules.

    Embedding parameters are the token (and learned position) tables and an untied LM
    head; N is the rest (Kaplan's convention). FLOPs per token: 2 per multiply-accumulate
    of every weight matrix except the embedding lookups, plus attention over ``decode_context``
    (2·2·decode_context·d_attn per layer). KV bytes per token: 2 (K, V) × layers × KV heads ×
    head_dim × 4 (float32), read from the model's config after pruning.
    """
    emb_modules = [model.get_input_embeddings()]
    pos = getattr(getattr(model, "transformer", None), "wpe", None)
    if pos is not None:
        emb_modules.append(pos)
    # by identity, not data pointer: a tied head is the same Parameter, and meta tensors have no data
    emb_ptrs = {id(p) for m in emb_modules for p in m.parameters()}
    params = {id(p): p for p in model.parameters()}  # tied weights once
    total = sum(p.numel() for p in params.values())
    emb = sum(p.numel() for ptr, p in params.items() if ptr in emb_ptrs)
    head = model.get_output_embeddings()
    head_untied = head is not None and id(head.weight) not in emb_ptrs
    if head_untied:
        emb += head.weight.numel()
    macs = sum(p.numel() for ptr, p in params.items() if p.dim() >= 2 and ptr not in emb_ptrs)
    if head is not None and not head_untied:
        macs += head.weight.numel()  # a tied head still multiplies every token
    layers, kv_heads, head_dim, d_attn = _attention_shape(model)
    attention = 2 * decode_context * sum(d_attn)
    kv = 2 * 4 * sum(h * head_dim for h in kv_heads)
    return ModelAccounting(
        params_total=int(total),
        params_embedding=int(emb),
        params_non_embedding=int(total - emb),
        flops_per_token_kaplan=float(2 * (total - emb) + 2 * decode_context * sum(d_attn)),
        flops_per_token_exact=float(2 * (macs + attention)),
        decode_context=decode_context,
        weight_bytes_fp32=int(4 * total),
        kv_bytes_per_token_fp32=int(kv),
    )


def widest_activation(model, decode_context: int) -> int:
    """Elements per token of the largest single activation of a prefill over ``decode_context`` tokens:
    logits, attention scores (query heads × decode_context), q/k/v or the FFN hidden layer."""
    _, _, head_dim, d_attn = _attention_shape(model)
    return max(
        int(model.config.vocab_size), max(d_attn) // head_dim * decode_context, 3 * max(d_attn), _ffn_width(model)
    )


def _ffn_width(model) -> int:
    """The widest FFN hidden layer, read from the modules where pruning may have shrunk them."""
    c = model.config
    if c.model_type == "gpt2":
        return max(blk.mlp.c_fc.nf for blk in model.transformer.h)  # Conv1D: nf output features
    layers = getattr(getattr(model, "model", None), "layers", [])
    if layers and all(hasattr(getattr(b, "mlp", None), "up_proj") for b in layers):
        return max(b.mlp.up_proj.out_features for b in layers)
    return int(getattr(c, "intermediate_size", None) or getattr(c, "ffn_dim", None) or 4 * c.hidden_size)


def _attention_shape(model) -> tuple[int, list[int], int, list[int]]:
    """(layers, KV heads per layer, head_dim, query width per layer) of a loaded model."""
    c = model.config
    if c.model_type == "gpt2":
        attns = [blk.attn for blk in model.transformer.h]
        return len(attns), [a.num_heads for a in attns], attns[0].head_dim, [a.num_heads * a.head_dim for a in attns]
    n_layer = int(c.num_hidden_layers)
    n_head = int(c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // n_head)
    kv = int(getattr(c, "num_key_value_heads", None) or n_head)
    return n_layer, [kv] * n_layer, head_dim, [n_head * head_dim] * n_layer
