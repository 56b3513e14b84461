"""Latency worker: times prefill and one KV-cache decode step of ONNX causal LMs.

Run as a script in a fresh interpreter (``python _ort_worker.py < request.json``) so
the timed process holds only onnxruntime and numpy — no torch thread pools, no
allocator state left over from training. Imports nothing from edgescale.

Request (JSON on stdin)::

    {"variants": {"name": "path.onnx", ...}, "probes": {"name": "path.onnx", ...},
     "prompt_len": 64, "decode_context": 128, "repeats": 30, "warmup": 5, "decode_warm": 2,
     "threads": 2, "graph_optimization": "all", "seed": 0, "order_seed": 0}

``seed`` picks the token ids (the same in every worker process of one measurement);
``order_seed`` (default: ``seed``) the shuffled visiting order, so each process visits in
its own order.

Every session shares one global intra-op thread pool with spinning on, as a single
session in a token loop would have: per-session pools would either spin against each
other or, with spinning off, pay a thread wake-up per parallel node (measured here:
d64 fp32 decode 550 µs interleaved without spinning vs 253 µs alone). Each visit runs
``decode_warm`` untimed decode steps before the timed one, so a step finds its weights
where the previous token left them (steady-state generation), not where another
variant's visit left the caches. Probes (``probes``: any graph with static inputs, used
by calibration) are visited in the same shuffled loop, so machine drift hits them and
the models alike.

Graphs from onnxruntime-genai's model builder (``export.genai``) have no ``position_ids``,
may declare int32 ids or mask, and may leave the KV head size symbolic: then it is read
from the ``genai_config.json`` beside the graph, as ``edgescale.bench.ort_model`` does.

Reply (JSON on stdout): per variant the raw prefill and decode samples in ms, taken
interleaved (each repeat visits every variant once, in a shuffled order), per probe its
run samples, plus the onnxruntime version and the modules loaded. On failure:
``{"error": "..."}``, exit 1.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_INT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _head_dim(path: str, dim) -> int:
    """A KV input's head size: the graph's, else the genai_config.json beside it (genai's builder)."""
    if isinstance(dim, int):
        return dim
    try:
        return int(json.loads((Path(path).parent / "genai_config.json").read_text())["model"]["decoder"]["head_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: symbolic KV head size {dim!r} and no genai_config.json beside it") from None


def _session(path: str, req: dict):
    opts = ort.SessionOptions()
    opts.use_per_session_threads = False  # the global pool set up in measure()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _LEVELS[req["graph_optimization"]]
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


class Probe:
    """A calibration graph with static inputs: one timed run per visit."""

    def __init__(self, name: str, path: str, req: dict) -> None:
        self.name = name
        self.sess = _session(path, req)
        rng = np.random.default_rng(req["seed"])
        self.feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in self.sess.get_inputs()}

    def run_ms(self) -> float:
        t = time.perf_counter_ns()
        self.sess.run(None, self.feeds)
        return (time.perf_counter_ns() - t) / 1e6


class Variant:
    """One model: a session, its prefill feeds, and a bound decode step at a fixed context."""

    def __init__(self, name: str, path: str, req: dict) -> None:
        self.name, self.path = name, path
        self.sess = _session(path, req)
        self._signature()
        rng = np.random.default_rng(req["seed"])
        self.prompt = rng.integers(0, self.vocab, size=(1, req["prompt_len"])).astype(self.ids_dtype)
        self.context = rng.integers(0, self.vocab, size=(1, req["decode_context"])).astype(self.ids_dtype)
        self._bind_decode(req["decode_context"])

    def _signature(self) -> None:
        inputs = {i.name: i for i in self.sess.get_inputs()}
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        outputs = [o.name for o in self.sess.get_outputs()]
        self.outputs = outputs
        vocab = self.sess.get_outputs()[0].shape[-1]
        self.vocab = vocab if isinstance(vocab, int) else 256
        self.has_pos, self.has_mask = "position_ids" in inputs, "attention_mask" in inputs
        self.ids_dtype = _INT_DTYPES[inputs["input_ids"].type] if "input_ids" in inputs else np.int64
        self.mask_dtype = _INT_DTYPES[inputs["attention_mask"].type] if self.has_mask else np.int64
        if not layers and "input_ids" in inputs and "logits" in outputs:
            self.has_cache, self.kv_shapes, self.kv_dtype = False, {}, np.float32
            return  # no KV cache: decoding recomputes the whole context
        self.has_cache = True
        if "input_ids" not in inputs or "attention_mask" not in inputs or not layers or "logits" not in outputs:
            raise ValueError(
                f"{self.path}: not a causal LM with a KV cache (needs input_ids, attention_mask, "
                "past_key_values.{i}.key/value inputs and logits, present.{i}.* outputs)"
            )
        # Per input: after head pruning each layer has its own head count.
        names = [f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value")]
        self.kv_shapes = {n: (inputs[n].shape[1], _head_dim(self.path, inputs[n].shape[3])) for n in names}
        self.kv_dtype = _DTYPES[inputs[names[0]].type]

    def _feeds(self, ids: np.ndarray, past: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        B, T = ids.shape
        if past is None:
            past = {n: np.zeros((B, h, 0, hd), self.kv_dtype) for n, (h, hd) in self.kv_shapes.items()}
        P = next(iter(past.values())).shape[2] if past else 0
        feeds = {"input_ids": ids, **past}
        if self.has_mask:
            feeds["attention_mask"] = np.ones((B, P + T), self.mask_dtype)
        if self.has_pos:
            feeds["position_ids"] = np.arange(P, P + T, dtype=np.int64)[None].repeat(B, 0)
        return feeds

    def _bind_decode(self, context: int) -> None:
        """A real past of ``context - 1`` tokens, then one token, with every buffer preallocated.

        Without a KV cache the decode step is a forward pass over the whole context.
        """
        self.prefill_feeds = self._feeds(self.prompt, None)
        if not self.has_cache:
            self.binding = self.sess.io_binding()
            ids = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(self.context))
            out = ort.OrtValue.ortvalue_from_shape_and_type((1, context, self.vocab), np.float32)
            self._keep = [ids, out]
            self.binding.bind_ortvalue_input("input_ids", ids)
            self.binding.bind_ortvalue_output("logits", out)
            return
        outs = self.sess.run(None, self._feeds(self.context[:, :-1], None))
        past = {
            n.replace("present.", "past_key_values.", 1): v
            for n, v in zip(self.outputs, outs, strict=True)
            if n.startswith("present.")
        }
        feeds = self._feeds(self.context[:, -1:], past)
        self.binding = self.sess.io_binding()
        self._keep = []  # OrtValues must outlive the binding
        for name, arr in feeds.items():
            v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
            self._keep.append(v)
            self.binding.bind_ortvalue_input(name, v)
        for name in self.outputs:
            if name == "logits":
                shape = (1, 1, self.vocab)
            else:
                heads, head_dim = self.kv_shapes[name.replace("present.", "past_key_values.", 1)]
                shape = (1, heads, context, head_dim)
            dtype = np.float32 if name == "logits" else self.kv_dtype
            v = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype)
            self._keep.append(v)
            self.binding.bind_ortvalue_output(name, v)

    def prefill_ms(self) -> float:
        t = time.perf_counter_ns()
        self.sess.run(None, self.prefill_feeds)
        return (time.perf_counter_ns() - t) / 1e6

    def decode_ms(self) -> float:
        t = time.perf_counter_ns()
        self.sess.run_with_iobinding(self.binding)
        return (time.perf_counter_ns() - t) / 1e6


def measure(req: dict) -> dict:
    ort.set_default_logger_severity(3)
    ort.set_global_thread_pool_sizes(req["threads"], 1)
    variants = [Variant(n, p, req) for n, p in req["variants"].items()]
    probes = [Probe(n, p, req) for n, p in req.get("probes", {}).items()]
    warm = req.get("decode_warm", 2)
    for v in variants:
        for _ in range(req["warmup"]):
            v.prefill_ms()
            v.decode_ms()
    for pr in probes:
        for _ in range(req["warmup"]):
            pr.run_ms()
    samples = {v.name: {"prefill": [], "decode": []} for v in variants}
    runs = {pr.name: [] for pr in probes}
    decode = {v.name: "kv-cache" if v.has_cache else "full-recompute" for v in variants}
    rng = np.random.default_rng(req.get("order_seed", req["seed"]))
    items = [*variants, *probes]
    for _ in range(req["repeats"]):
        for i in rng.permutation(len(items)):
            it = items[i]
            if isinstance(it, Probe):
                for _ in range(warm):
                    it.run_ms()
                runs[it.name].append(it.run_ms())
                continue
            samples[it.name]["prefill"].append(it.prefill_ms())
            for _ in range(warm):
                it.decode_ms()
            samples[it.name]["decode"].append(it.decode_ms())
    return {
        "samples": samples,
        "probes": runs,
        "decode": decode,
        "onnxruntime": ort.__version__,
        "modules": sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")}),
    }


def main() -> int:
    try:
        reply = measure(json.load(sys.stdin))
    except Exception as e:  # reported to the parent as data, not a traceback dump
        json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)
        return 1
    json.dump(reply, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
