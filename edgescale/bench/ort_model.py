"""An onnxruntime session over a causal-LM ONNX file with a KV cache.

Detects the signature (optimum's ``text-generation-with-past`` naming, which
``edgescale.export.onnx`` writes) from the graph's inputs and refuses anything else
with a message naming the file. Each KV input is read separately: after head pruning,
layers have different head counts.

onnxruntime-genai's model builder (``export.genai``) writes the same names without
``position_ids`` (GroupQueryAttention derives positions from the attention mask), its
KV head size as a symbolic dimension (``kv_cache_dim``; its ``genai_config.json`` beside
the graph holds the value, and ``export.genai`` writes it into the graph), and the mask's
integer type is read from the graph rather than assumed int64.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.errors import UserError
from edgescale.ortenv import import_onnxruntime
from edgescale.resources import thread_cap

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class LMSignature:
    n_layer: int
    kv_shapes: dict[str, tuple[int, int]]  # past input name -> (heads, head_dim) of that layer
    kv_dtype: type
    has_position_ids: bool
    has_cache: bool = True
    has_attention_mask: bool = True
    mask_dtype: type = np.int64
    ids_dtype: type = np.int64

    def mask(self, batch: int, length: int) -> np.ndarray:
        return np.ones((batch, length), self.mask_dtype)

    @property
    def layer_heads(self) -> tuple[int, ...]:
        return tuple(self.kv_shapes[f"past_key_values.{i}.key"][0] for i in range(self.n_layer))


def genai_head_size(path: Path) -> int | None:
    """The KV head size in the onnxruntime-genai config beside ``path``, if there is one."""
    try:
        return int(json.loads((Path(path).parent / "genai_config.json").read_text())["model"]["decoder"]["head_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _int_dtype(inputs: dict, name: str, path: Path) -> type:
    """The integer type the graph declares for ``name`` (int64 when absent)."""
    if name not in inputs:
        return np.int64
    dtype = _INT_TYPES.get(inputs[name].type)
    if dtype is None:
        raise UserError(f"{name} must be int64 or int32, got {inputs[name].type}", file=path)
    return dtype


def _kv_shape(name: str, shape: list, path: Path) -> tuple[int, int]:
    """(heads, head_dim) of one KV input; a symbolic head_dim from genai_config.json beside the file."""
    head_dim = shape[3] if len(shape) == 4 else None
    if len(shape) == 4 and not isinstance(head_dim, int):
        head_dim = genai_head_size(path)
    if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(head_dim, int):
        why = f"{name} must be (batch, heads, past, head_dim) with fixed heads and head_dim, got {shape}"
        raise UserError(why, file=path)
    return shape[1], head_dim


def _signature(session, path: Path) -> LMSignature:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
    mask_dtype = _int_dtype(inputs, "attention_mask", path)
    if not layers and "input_ids" in inputs and "logits" in outputs:
        # No KV cache (e.g. a user's module): every token recomputes the whole context.
        has_mask = "attention_mask" in inputs
        ids_dtype = _int_dtype(inputs, "input_ids", path)
        return LMSignature(0, {}, np.float32, "position_ids" in inputs, False, has_mask, mask_dtype, ids_dtype)
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    if "logits" not in outputs:
        missing.append("logits (output)")
    if missing or not layers or layers != list(range(len(layers))):
        raise UserError(
            "not a causal LM: needs input_ids and a logits output, and for a KV cache attention_mask, "
            "past_key_values.{i}.key/value and present.{i}.key/value"
            + (f"; missing {', '.join(missing)}" if missing else ""),
            file=path,
        )
    kv_shapes = {}
    for name in (f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value")):
        if name not in inputs:
            raise UserError(f"missing KV-cache input {name}", file=path)
        kv_shapes[name] = _kv_shape(name, inputs[name].shape, path)
    types = {inputs[n].type for n in kv_shapes}
    dtype = _ORT_TYPES.get(next(iter(types))) if len(types) == 1 else None
    if dtype is None:
        raise UserError(f"unsupported KV-cache type(s) {sorted(types)}", file=path)
    ids_dtype = _int_dtype(inputs, "input_ids", path)
    return LMSignature(len(layers), kv_shapes, dtype, "position_ids" in inputs, True, True, mask_dtype, ids_dtype)


class OrtCausalLM:
    """Run a causal-LM ONNX file: batched prefill logits and greedy KV-cache decoding."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads := thread_cap(threads):
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"onnxruntime cannot load this model: {str(e).splitlines()[0]}", file=path) from None
        self.sig = _signature(self.session, self.path)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        s = self.sig
        return {n: np.zeros((batch, h, 0, hd), dtype=s.kv_dtype) for n, (h, hd) in s.kv_shapes.items()}

    def run(self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
        """One call: ``ids`` (B, T) after ``past`` (default empty). Returns logits and presents."""
        ids = np.ascontiguousarray(ids, dtype=self.sig.ids_dtype)
        B, T = ids.shape
        past = past if past is not None else self.empty_past(B)
        P = next(iter(past.values())).shape[2] if past else 0
        feeds = {"input_ids": ids, **past}
        if self.sig.has_attention_mask:
            feeds["attention_mask"] = self.sig.mask(B, P + T)
        if self.sig.has_position_ids:
            feeds["position_ids"] = np.broadcast_to(np.arange(P, P + T, dtype=np.int64), (B, T)).copy()
        outs = self.session.run(None, feeds)
        names = [o.name for o in self.session.get_outputs()]
        result = dict(zip(names, outs, strict=True))
        presents = {
            n.replace("present.", "past_key_values.", 1): v for n, v in result.items() if n.startswith("present.")
        }
        return result["logits"], presents

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self.run(ids)[0].astype(np.float32)

    def generate(self, prompt: np.ndarray, max_new_tokens: int) -> list[int]:
        """Greedy decoding through the KV cache (one token per call after the prefill);
        without a cache, by recomputing the whole context for every token."""
        if not self.sig.has_cache:
            ids = np.asarray(prompt[:1], dtype=np.int64)
            out = []
            for _ in range(max_new_tokens):
                out.append(int(self.run(ids)[0][0, -1].argmax()))
                ids = np.concatenate([ids, [[out[-1]]]], axis=1)
            return out
        logits, past = self.run(prompt[:1])
        out = [int(logits[0, -1].argmax())]
        for _ in range(max_new_tokens - 1):
            logits, past = self.run(np.array([[out[-1]]]), past)
            out.append(int(logits[0, -1].argmax()))
        return out
