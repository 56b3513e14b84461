"""Latency worker: times prefill and one KV-cache decode step of ONNX causal LMs.

Run as a script in a fresh interpreter (``python _ort_worker.py < request.json``) so
the timed process holds only onnxruntime and numpy — no torch thread pools, no
allocator state left over from training. Imports nothing from edgescale.

Request (JSON on stdin)::

    {"variants": {"name": "path.onnx", ...}, "probes": {"name": "path.onnx", ...},
     "prompt_len": 64, "decode_context": 128, "repeats": 30, "warmup": 5, "decode_warm": 8,
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
variant's visit (or this visit's prefill) left the caches: a 12x768 int4 decode step took
5.1 ms two steps after the prefill and 2.5 ms after eight, as in a token loop, where the
weights of a model that fits the last-level cache stay there between tokens. Probes
(``probes``: any graph with static inputs, used by calibration) are visited in the same
shuffled loop, so machine drift hits them and the models alike.

Graphs from onnxruntime-genai's model builder (``export.genai``) have no ``position_ids``,
may declare int32 ids or mask, and may leave the KV head size symbolic: then it is read
from the ``genai_config.json`` beside the graph, as ``edgescale.bench.ort_model`` does.

With ``"profile": true`` in the request, after the timed loop each variant's file is opened a
second time with onnxruntime's profiler on (same options, same global pool; the timed
sessions never profile), warmed up, and one prefill and one decode step at the same context
are run through the same feeds and binding; the reply's ``profiles`` then holds, per variant
and phase, the kernel time per op type (µs), the nodes per execution provider, the nodes
run and the model_run time of that phase's last run, plus ``graph_nodes``; and
``bandwidth_probe`` a timed matrix-vector product over 512 MB of weights (GB/s). See ``edgescale.bench.profile``.

Reply (JSON on stdout): per variant the raw prefill and decode samples in ms, taken
interleaved (each repeat visits every variant once, in a shuffled order), per probe its
run samples, plus the onnxruntime version and the modules loaded. On failure:
``{"error": "..."}``, exit 1.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
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


def _session(path: str, req: dict, profile_prefix: str | None = None):
    opts = ort.SessionOptions()
    opts.use_per_session_threads = False  # the global pool set up in measure()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _LEVELS[req["graph_optimization"]]
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
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

    def __init__(self, name: str, path: str, req: dict, profile_prefix: str | None = None) -> None:
        self.name, self.path = name, path
        self.sess = _session(path, req, profile_prefix)
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
        self.kv_buffer = "concat"
        self._share_kv_buffer(feeds, context)

    def _share_kv_buffer(self, feeds: dict[str, np.ndarray], context: int) -> None:
        """Bind each layer's past and present to ONE preallocated buffer, as onnxruntime-genai does,
        when the graph computes the same logits that way (bit for bit).

        GroupQueryAttention reads the past length from ``attention_mask`` (seqlens_k), not from the
        past tensor's shape, so it can write the new key/value in place at that position instead of
        copying the whole past into a fresh present every step (the fused graphs of export.onnx and
        onnxruntime-genai's builder graphs). A graph whose attention concatenates (the traced
        export, optimum's) fails on, or computes other logits from, a past as long as the present:
        it keeps the concatenating binding.
        """
        self.sess.run_with_iobinding(self.binding)
        reference = self.binding.get_outputs()[self.outputs.index("logits")].numpy().copy()
        shared = self.sess.io_binding()
        keep = []
        for name, arr in feeds.items():
            if name.startswith("past_key_values."):
                buf = np.zeros((1, arr.shape[1], context, arr.shape[3]), arr.dtype)
                buf[:, :, : arr.shape[2]] = arr
                value = ort.OrtValue.ortvalue_from_numpy(buf)
                shared.bind_ortvalue_output(name.replace("past_key_values.", "present.", 1), value)
            else:
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
            keep.append(value)
            shared.bind_ortvalue_input(name, value)
        logits = ort.OrtValue.ortvalue_from_shape_and_type((1, 1, self.vocab), np.float32)
        keep.append(logits)
        shared.bind_ortvalue_output("logits", logits)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the refusal below is expected for concatenating graphs: not an error to log
        try:
            self.sess.run_with_iobinding(shared, quiet)
        except Exception:  # onnxruntime's own error types: a present shape the graph cannot write in place
            return
        if np.array_equal(logits.numpy(), reference):
            self.binding, self._keep, self.kv_buffer = shared, keep, "shared"

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
    warm = req.get("decode_warm", 8)
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
    kv_buffer = {v.name: v.kv_buffer for v in variants if v.has_cache}
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
    profiled = {}
    if req.get("profile"):  # after the timed loop: never inside it, never on a timed session
        profiled = {v.name: profile(v.name, v.path, req) for v in variants}
    return {
        "samples": samples,
        "probes": runs,
        "decode": decode,
        "kv_buffer": kv_buffer,
        **({"profiles": profiled, "bandwidth_probe": stream_bandwidth()} if req.get("profile") else {}),
        "onnxruntime": ort.__version__,
        "modules": sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")}),
    }


def _phase_profile(events: list[dict], run: dict) -> dict:
    """Kernel time per op type (µs), nodes per execution provider and nodes executed, inside one model_run."""
    t0, t1 = run["ts"], run["ts"] + run["dur"]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and t0 <= e["ts"] <= t1]
    by_op: dict[str, float] = {}
    by_ep: dict[str, int] = {}
    for e in nodes:
        op, ep = e["args"].get("op_name", "?"), e["args"].get("provider", "?")
        by_op[op] = by_op.get(op, 0.0) + float(e["dur"])
        by_ep[ep] = by_ep.get(ep, 0) + 1
    return {"kernel_us_by_op": by_op, "nodes_by_provider": by_ep, "nodes_run": len(nodes), "run_us": float(run["dur"])}


def profile(name: str, path: str, req: dict) -> dict:
    """One prefill and one decode step of a SECOND, profiled session of ``path`` (the timed session
    is left untouched), after the same warm-up; per phase, what its LAST model_run spent per op type.

    The profiler adds a fixed cost per node, so the shares of kernel time are the headline, not ms.
    """
    warm = req.get("decode_warm", 8)
    with tempfile.TemporaryDirectory(prefix="ort-prof-") as tmp:
        v = Variant(name, path, req, profile_prefix=str(Path(tmp) / "prof"))
        for _ in range(max(1, req["warmup"])):
            v.prefill_ms()
            v.decode_ms()
        v.prefill_ms()
        for _ in range(warm + 1):  # the last of these is the profiled decode step
            v.decode_ms()
        trace = v.sess.end_profiling()
        events = json.loads(Path(trace).read_text())
        Path(trace).unlink()
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"), key=lambda e: e["ts"])
    seen = {e["name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")}
    return {
        "prefill": _phase_profile(events, runs[-(warm + 2)]),
        "decode": _phase_profile(events, runs[-1]),
        "graph_nodes": len(seen),  # every node of the optimized graph that ran in any profiled step
    }


def stream_bandwidth(mbytes: int = 512, tries: int = 5) -> dict:
    """Weight-streaming rate, GB/s: a matrix-vector product over a ``mbytes`` float32 matrix far
    above the last-level cache (numpy's BLAS, all cores), best of ``tries``: the operation a decode
    step is made of, so the fastest this host is shown to stream weights, an upper bound for the
    model's. A plain copy streams slower here (about 25 GB/s against 30 on the 2-core Xeon of
    issue 18), and would make the limit too lenient."""
    rows = mbytes * (1 << 20) // 4 // 8192
    weights, x = np.ones((rows, 8192), np.float32), np.ones(rows, np.float32)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter_ns()
        x @ weights
        best = min(best, time.perf_counter_ns() - t)
    source = f"probe: float32 matrix-vector product over {mbytes} MB (numpy BLAS), best of {tries}"
    return {"gbps": weights.nbytes / best, "source": source}


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
