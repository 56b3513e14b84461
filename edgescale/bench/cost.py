"""Cost accounting read from the ONNX graph: weight bytes by precision, FLOPs per token, nodes.

Per node, the weights it streams (its initializer inputs, by element type; ``Gather``
tables count one row per token) and the multiply-accumulates those weights cost per
token (2 FLOPs per weight element of a MatMul/Gemm/MatMulInteger/MatMulNBits). Attention
FLOPs depend on the context, not on weights: 2 · 2 · n_layer · d · context per token
for q·kᵀ and attn·v, from the KV-cache inputs' shapes. KV bytes per token of context
are read from those inputs too, at their element type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgescale.bench.bytes import elem_bytes, tensor_bytes

WEIGHT_OPS = {"MatMul", "Gemm", "MatMulInteger", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
QUANT_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "MatMulNBits",
    "DequantizeLinear",
    "QuantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QLinearMatMul",
}
_PRECISION = {1: "fp32", 10: "fp16", 16: "bf16", 2: "int8", 3: "int8", 21: "int4", 22: "int4"}


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    weight_bytes: float  # streamed per decoded token
    precision: str
    flops_per_token: float  # weight-side FLOPs per token
    k: int = 0  # GEMV shape (1 x K)·(K x N) for weight matmuls, else 0
    n: int = 0


@dataclass(frozen=True)
class GraphCost:
    nodes: list[NodeCost]
    n_nodes: int
    weight_bytes: float
    weight_bytes_by_precision: dict[str, float]
    flops_per_token: float  # weights only; add attention_flops_per_context_token × context
    attention_flops_per_context_token: float
    kv_bytes_per_token: float
    has_kv_cache: bool
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_quant_nodes(self) -> int:
        """Nodes that (de)quantise or run integer kernels: each costs more than a float op."""
        return sum(n for op, n in self.op_counts.items() if op in QUANT_OPS)

    def decode_bytes(self, context: int) -> float:
        return self.weight_bytes + self.kv_bytes_per_token * context

    def decode_flops(self, context: int) -> float:
        return self.flops_per_token + self.attention_flops_per_context_token * context

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("nodes")
        return d


def graph_cost(path: Path) -> GraphCost:
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, set[str]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    nodes, by_precision = [], Counter()
    for node in g.node:
        weights = [inits[i] for i in node.input if i in inits]
        if not weights:
            continue
        wb = sum(tensor_bytes(t) for t in weights)
        if node.op_type == "Gather" and len(weights[0].dims) == 2:
            wb = tensor_bytes(weights[0]) / weights[0].dims[0]  # one embedding row per token
        big = max(weights, key=tensor_bytes)
        precision = _PRECISION.get(big.data_type, "other")
        flops, k, n = 0.0, 0, 0
        if node.op_type in WEIGHT_OPS:
            if node.op_type == "MatMulNBits":  # packed (N, blocks, blob) uint8: K and N are attributes
                attrs = {a.name: a.i for a in node.attribute}
                k, n = attrs.get("K", 0), attrs.get("N", 0)
            elif len(big.dims) == 2:
                k, n = big.dims
            flops = 2.0 * k * n
        nodes.append(NodeCost(node.name, node.op_type, wb, precision, flops, int(k), int(n)))
        by_precision[precision] += wb
    kv_inputs = [i for i in g.input if i.name.startswith("past_key_values.")]
    kv_per_token, attn = 0.0, 0.0
    for i in kv_inputs:
        dims = i.type.tensor_type.shape.dim
        heads, head_dim = dims[1].dim_value, dims[3].dim_value
        elem = elem_bytes(i.type.tensor_type.elem_type)
        kv_per_token += heads * head_dim * elem
        attn += 2.0 * heads * head_dim  # q·k for keys, attn·v for values: 2 FLOPs per MAC
    return GraphCost(
        nodes=nodes,
        n_nodes=len(g.node),
        weight_bytes=sum(n.weight_bytes for n in nodes),
        weight_bytes_by_precision=dict(by_precision),
        flops_per_token=sum(n.flops_per_token for n in nodes),
        attention_flops_per_context_token=attn,
        kv_bytes_per_token=kv_per_token,
        has_kv_cache=bool(kv_inputs),
        op_counts=dict(Counter(n.op_type for n in g.node)),
    )
