"""A decode step as onnxruntime runs it: the nodes after its graph optimisations, each
with the work it does at a stated context.

The exported graph is not what executes: onnxruntime fuses nodes (e.g. dynamic int8's
``DynamicQuantizeLinear → MatMulInteger → Mul`` becomes one ``DynamicQuantizeMatMul``;
272 exported nodes of a 4-layer int8 model run as 182), folds constant transposes into
weights and pre-packs them. So the graph is optimised by onnxruntime first (CPU EP,
level "all", as the measurement harness runs it) and then executed once at the decode
state — a past of ``context - 1`` tokens and one new token — with every intermediate
exposed, which gives each node's exact tensor sizes.

Each node becomes one of:

- a **GEMV** on constant weights (``MatMul``/``Gemm`` on an initializer or a constant
  chain such as ``DequantizeLinear(initializer)``, ``DynamicQuantizeMatMul``,
  ``MatMulNBits``): its weight class (``fp32``, ``int8``, ``int4``, ``int4_acc4``), K, N
  and the weight bytes it streams;
- any **other op**, with its type and the largest tensor it reads or writes (elements),
  and the bytes of constants it streams (e.g. dequantising a table every step).

The working set is what one step touches: every weight plus the KV cache at the context.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgescale.bench.bytes import tensor_bytes
from edgescale.ortenv import import_onnxruntime

GEMV_OPS = {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_CONST_PASS = {"Transpose", "DequantizeLinear", "Cast", "Reshape", "Identity"}


@dataclass(frozen=True)
class DecodeNode:
    op: str
    kind: str  # "gemv" | "other"
    weight_class: str = ""  # gemv: fp32 | int8 | int4 | int4_acc4
    k: int = 0
    n: int = 0
    weight_bytes: float = 0.0  # gemv: weights streamed; other: constants streamed
    elements: int = 0  # other: largest tensor read or written


@dataclass(frozen=True)
class DecodeGraph:
    nodes: list[DecodeNode]
    context: int
    kv_bytes: float  # KV cache read at the context
    has_cache: bool
    working_set_bytes: float = field(default=0.0)

    @property
    def gemvs(self) -> list[DecodeNode]:
        return [n for n in self.nodes if n.kind == "gemv"]

    @property
    def others(self) -> list[DecodeNode]:
        return [n for n in self.nodes if n.kind == "other"]

    def weight_bytes_by_class(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for n in self.gemvs:
            out[n.weight_class] = out.get(n.weight_class, 0.0) + n.weight_bytes
        return out


def _optimized(path: Path, out: Path) -> None:
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _decode_feeds(session, context: int) -> tuple[dict[str, np.ndarray], bool]:
    feeds, has_cache = {}, False
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            has_cache = True
            dtype = np.float16 if i.type == "tensor(float16)" else np.float32
            feeds[i.name] = np.zeros((1, i.shape[1], context - 1, i.shape[3]), dtype)
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.zeros((1, 1 if has_cache else context), np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, context), np.int64)
        elif i.name == "position_ids":
            n = 1 if has_cache else context
            feeds[i.name] = np.arange(context - n, context, dtype=np.int64)[None]
    return feeds, has_cache


def _tensor_sizes(model, context: int) -> tuple[dict[str, int], bool, float]:
    """Elements of every value at the decode state, whether the graph has a KV cache, KV bytes."""
    import onnx

    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    g = model.graph
    have = {o.name for o in g.output}
    for node in g.node:
        for o in node.output:
            if o and o not in have:
                g.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds, has_cache = _decode_feeds(sess, context)
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    values.update(feeds)
    sizes = {k: int(np.prod(v.shape)) for k, v in values.items() if hasattr(v, "shape")}
    kv = sum(v.nbytes * context / max(1, context - 1) for k, v in feeds.items() if k.startswith("past_key_values."))
    return sizes, has_cache, float(kv)


def _classify(node, inits: dict, producer: dict, sizes: dict[str, int]) -> DecodeNode:
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "MatMulNBits":
        k, n = attrs.get("K", 0), attrs.get("N", 0)
        wb = sum(tensor_bytes(inits[i]) for i in node.input[1:4] if i in inits)
        cls = "int4_acc4" if attrs.get("accuracy_level", 0) == 4 else "int4"
        return DecodeNode(node.op_type, "gemv", cls, k, n, wb)
    if node.op_type in GEMV_OPS and len(node.input) > 1:
        root, direct = _const_root(node.input[1], inits, producer)
        if root is not None and len(root.dims) == 2:
            k, n = (int(x) for x in root.dims)
            if node.op_type == "Gemm" and attrs.get("transB", 0):
                k, n = n, k
            int8 = direct and root.data_type in (2, 3)
            cls = "int8" if int8 else "fp32"
            return DecodeNode(node.op_type, "gemv", cls, k, n, k * n * (1.0 if int8 else 4.0))
    consts = [inits[i] for i in node.input if i in inits and node.op_type != "Gather"]
    streamed = sum(b for b in map(tensor_bytes, consts) if b > 4096)
    largest = max((sizes.get(x, 1) for x in (*node.input, *node.output) if x), default=1)
    return DecodeNode(node.op_type, "other", weight_bytes=float(streamed), elements=int(largest))


def _const_root(name: str, inits: dict, producer: dict):
    """The initializer behind ``name`` through constant-only nodes, and whether it is direct."""
    direct = name in inits
    for _ in range(4):
        if name in inits:
            return inits[name], direct
        node = producer.get(name)
        if node is None or node.op_type not in _CONST_PASS:
            return None, False
        name = node.input[0]
    return None, False


def decode_graph(path: Path, context: int) -> DecodeGraph:
    """The decode step of ONNX causal LM ``path`` at ``context`` tokens, node by node.

    A graph without a KV cache is read as one full forward pass over the context.
    """
    import onnx

    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        _optimized(Path(path), opt)
        model = onnx.load(str(opt))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes_proto = list(model.graph.node)
    sizes, has_cache, kv = _tensor_sizes(model, context)
    nodes = [_classify(n, inits, producer, sizes) for n in nodes_proto]
    weights = sum(n.weight_bytes for n in nodes)
    return DecodeGraph(nodes, context, kv, has_cache, weights + kv)
