"""onnxruntime-genai's ``genai_config.json`` for an edgescale-exported causal LM.

onnxruntime-genai runs an ONNX decoder it did not build when a ``genai_config.json``
beside it describes the graph. The keys follow genai's parser (microsoft/onnxruntime-genai
``src/config.cpp``: ``Model_Element``, ``Decoder_Element``, ``SessionOptions_Element``,
``Search_Element``; model type ``decoder`` is the generic LLM in ``src/models/model_type.h``);
checked against onnxruntime-genai 0.18.0, which loads an edgescale export unmodified with it.

Everything but the context length is read from the graph's inputs, which
:mod:`edgescale.export.onnx` names the way optimum's ``text-generation-with-past`` does:
``past_key_values.{i}.key`` (batch, heads, past, head_dim) gives layers, heads and head
size; ``logits`` gives the vocabulary. Choices genai needs and a byte-level model lacks:

- ``eos_token_id: []``: bytes have no end-of-sequence token, and genai rejects an id
  outside ``[0, vocab_size)``; an empty list means generation stops only at ``max_length``,
  as ``OrtCausalLM.generate`` does.
- ``bos_token_id`` / ``pad_token_id`` 0: genai requires them; with token ids fed through
  ``Generator.append_tokens`` (no tokenizer) and batch 1 neither is ever inserted.
- ``past_present_share_buffer: false``: sharing one max-length KV buffer between past and
  present needs an attention op that writes in place (GroupQueryAttention); our graph
  concatenates, so genai 0.18.0 fails with "output 'present.0.key' ... has shape
  {1,6,200,64} but the computed output shape ... is {1,6,264,64}".
- no tokenizer files: genai only reads them for ``og.Tokenizer``, which is never built.

Kept in ``benchmarks/``: genai is not an edgescale dependency; move it next to
``edgescale export`` if edgescale ever ships genai-ready folders.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgescale.atomic import write_json
from edgescale.errors import UserError

_PAST = re.compile(r"^past_key_values\.(\d+)\.key$")


def genai_config(onnx_path: Path, context_length: int, threads: int) -> dict:
    """The config dict for ``onnx_path`` (greedy search, ``threads`` intra-op threads, CPU)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output}
    layers = sorted(int(m.group(1)) for n in inputs if (m := _PAST.match(n)))
    if not layers or "logits" not in outputs or "input_ids" not in inputs:
        raise UserError("not an edgescale causal LM with a KV cache (past_key_values.{i}.key, logits)", file=onnx_path)
    kv = {tuple(inputs[f"past_key_values.{i}.{t}"][1::2]) for i in layers for t in ("key", "value")}
    if len(kv) != 1:
        # genai describes every layer with one num_key_value_heads; head pruning leaves per-layer counts.
        raise UserError(
            f"genai needs the same (heads, head_dim) in every layer, found {sorted(kv)}",
            file=onnx_path,
            field="past_key_values.*",
        )
    heads, head_dim = next(iter(kv))
    vocab = outputs["logits"][-1]
    names = {n: n for n in ("input_ids", "attention_mask", "position_ids") if n in inputs}
    return {
        "model": {
            "type": "decoder",
            "context_length": context_length,
            "vocab_size": vocab,
            "bos_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": [],
            "decoder": {
                "filename": Path(onnx_path).name,
                "session_options": {
                    "log_id": "edgescale",
                    "intra_op_num_threads": threads,
                    "inter_op_num_threads": 1,
                    "graph_optimization_level": "ORT_ENABLE_ALL",
                    # onnxruntime's default, written out: edgescale's timing worker spins too.
                    "session.intra_op.allow_spinning": "1",
                    "provider_options": [],
                },
                "head_size": head_dim,
                "hidden_size": heads * head_dim,  # n_embd of an unpruned family member
                "num_attention_heads": heads,
                "num_key_value_heads": heads,
                "num_hidden_layers": len(layers),
                "inputs": {
                    **names,
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "min_length": 0,
            "max_length": context_length,
            "past_present_share_buffer": False,
            "early_stopping": True,
        },
    }


def write_genai_config(onnx_path: Path, context_length: int, threads: int) -> Path:
    """Write ``genai_config.json`` beside ``onnx_path``; genai then loads that folder."""
    return write_json(Path(onnx_path).with_name("genai_config.json"), genai_config(onnx_path, context_length, threads))
