"""An onnxruntime session over a causal-LM ONNX file with a KV cache.

Detects the signature (optimum's ``text-generation-with-past`` naming, which
``edgescale.export.onnx`` writes) from the graph's inputs and refuses anything else
with a message naming the file. Each KV input is read separately: after head pruning,
layers have different head counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.errors import UserError

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class LMSignature:
    n_layer: int
    kv_shapes: dict[str, tuple[int, int]]  # past input name -> (heads, head_dim) of that layer
    kv_dtype: type
    has_position_ids: bool
    has_cache: bool = True
    has_attention_mask: bool = True

    @property
    def layer_heads(self) -> tuple[int, ...]:
        return tuple(self.kv_shapes[f"past_key_values.{i}.key"][0] for i in range(self.n_layer))


def _signature(session, path: Path) -> LMSignature:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
    if not layers and "input_ids" in inputs and "logits" in outputs:
        # No KV cache (e.g. a user's module): every token recomputes the whole context.
        return LMSignature(0, {}, np.float32, "position_ids" in inputs, False, "attention_mask" in inputs)
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
        shape = inputs[name].shape
        if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
            raise UserError(f"{name} must be (batch, heads, past, head_dim), got {shape}", file=path)
        kv_shapes[name] = (shape[1], shape[3])
    types = {inputs[n].type for n in kv_shapes}
    dtype = _ORT_TYPES.get(next(iter(types))) if len(types) == 1 else None
    if dtype is None:
        raise UserError(f"unsupported KV-cache type(s) {sorted(types)}", file=path)
    return LMSignature(len(layers), kv_shapes, dtype, "position_ids" in inputs)


class OrtCausalLM:
    """Run a causal-LM ONNX file: batched prefill logits and greedy KV-cache decoding."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
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
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        B, T = ids.shape
        past = past if past is not None else self.empty_past(B)
        P = next(iter(past.values())).shape[2] if past else 0
        feeds = {"input_ids": ids, **past}
        if self.sig.has_attention_mask:
            feeds["attention_mask"] = np.ones((B, P + T), np.int64)
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
