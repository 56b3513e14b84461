"""Byte and memory accounting of ONNX graphs: the one element-size table and what is counted with it.

The graph cost (:mod:`edgescale.bench.cost`), the decode-node model (:mod:`edgescale.bench.nodes`)
and the results' cost section (weight bytes per decoded token, peak memory) all size tensors
through :func:`tensor_bytes`, so a new ONNX element type is added in one place.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgescale.models.shape import GPTConfig

# Bytes per element, by ONNX TensorProto data type: FLOAT 1, UINT8 2, INT8 3, INT32 6, INT64 7,
# BOOL 9, FLOAT16 10, DOUBLE 11, BFLOAT16 16, UINT4 21, INT4 22 (4-bit types pack two per byte).
# A type missing here is counted as 4 bytes.
ELEM_BYTES: dict[int, float] = {
    1: 4.0, 2: 1.0, 3: 1.0, 6: 4.0, 7: 8.0, 9: 1.0, 10: 2.0, 11: 8.0, 16: 2.0, 21: 0.5, 22: 0.5
}  # fmt: skip


def elem_bytes(data_type: int) -> float:
    """Bytes per element of ONNX data type ``data_type`` (4 for a type not in :data:`ELEM_BYTES`)."""
    return ELEM_BYTES.get(data_type, 4.0)


def tensor_bytes(t) -> float:
    """Bytes of an ONNX ``TensorProto`` from its dims and element type (no data needs loading)."""
    return math.prod(t.dims) * elem_bytes(t.data_type)


def onnx_weight_bytes(path: Path) -> int:
    """Weight bytes one decode step streams from memory.

    Every initializer counts in full, except tables only ever read by ``Gather``
    (token and position embeddings), of which a decoded token reads one row.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)  # an external tensor's length is in the graph
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    total = 0
    for t in model.graph.initializer:
        external = {e.key: e.value for e in t.external_data}
        # the stored array: exact for every type numpy has; external data: its recorded length
        if "location" in external:
            nbytes = int(external["length"]) if "length" in external else int(tensor_bytes(t))
        else:
            nbytes = numpy_helper.to_array(t).nbytes
        if consumers.get(t.name) == {"Gather"} and len(t.dims) == 2:
            nbytes //= t.dims[0]
        total += nbytes
    return int(total)


def peak_memory_bytes(path: Path, kv_bytes_per_token: int, activation_width: int | None, context: int) -> int | None:
    """An estimate of the memory a batch-1 session needs: every initializer resident (embedding
    tables in full), the fp32 KV cache at ``context`` and the largest single activation of a
    prefill over ``context`` tokens (``activation_width`` elements per token: logits, attention
    scores, q/k/v or the FFN hidden layer). Runtime arenas, the onnxruntime library and the
    graph itself are not counted. None without an activation width (a user's module)."""
    if activation_width is None:
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    resident = sum(tensor_bytes(t) for t in model.graph.initializer)
    return int(resident + kv_bytes_per_token * context + 4 * context * activation_width)


def widest_activation(spec: GPTConfig, context: int) -> int:
    """:func:`peak_memory_bytes`'s activation width for an edgescale GPT (per-layer shapes after pruning)."""
    attn = [h * spec.head_dim for h in spec.heads_per_layer]
    return max(spec.vocab_size, max(spec.heads_per_layer) * context, 3 * max(attn), max(spec.ffn_per_layer))
