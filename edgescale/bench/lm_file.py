"""A user's ONNX causal LM at the door: one check that ``bench``, ``predict`` and ``quantize`` share.

Each of them opens the file in a child process first (:func:`edgescale.onnx_probe.probe_onnx`),
then requires the causal-LM signature (``input_ids`` → ``logits`` of shape (batch, seq,
vocab), float, with a fixed vocabulary), so a graph that merely has those names (an
``Identity`` from ``input_ids`` to ``logits``) is refused alike by all three, naming the file.

It also reads the longest context the graph takes: a learned position table (GPT's
``wpe``) or a rotary cos/sin cache is a ``Gather`` on a constant table indexed by the
position ids, and a position past its rows is an out-of-bounds Gather inside onnxruntime.
The commands' default lengths follow it, and an explicit length past it is refused.
A graph without such a table (rotary angles computed at run time) has no limit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgescale.errors import UserError
from edgescale.onnx_probe import probe_onnx

_INT_IDS = ("INT64", "INT32")  # onnx.TensorProto element types
_FLOAT_LOGITS = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")
# Ops a constant table passes through unchanged in row count before its Gather (fp16, int8 tables).
_TABLE_PASS = {"Cast", "DequantizeLinear", "Identity"}


@dataclass(frozen=True)
class CausalLMFile:
    """What the door check found: the vocabulary and the longest context (None: not bounded by a table)."""

    path: Path
    vocab_size: int
    max_context: int | None


def check_lm_file(path: Path) -> CausalLMFile:
    """Probe ``path`` in a child process, then refuse it unless it has the causal-LM signature."""
    path = Path(path)
    probe = probe_onnx(path)  # a native crash or hang in a child, not here
    ids, logits = probe.inputs.get("input_ids"), probe.outputs.get("logits")
    if ids is None or logits is None:
        raise UserError("not a causal LM: needs an input_ids input and a logits output", file=path)
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # parsed safely in the child first
    types = {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in model.graph.input}
    types.update({v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in model.graph.output})
    problem = None
    if len(ids) != 2 or types.get("input_ids") not in _INT_IDS:
        problem = f"input_ids must be (batch, seq) int64 or int32, got {types.get('input_ids')} {ids}"
    elif len(logits) != 3 or types.get("logits") not in _FLOAT_LOGITS:
        problem = f"logits must be (batch, seq, vocab) floats, got {types.get('logits')} {logits}"
    elif not isinstance(logits[-1], int) or logits[-1] < 2:
        problem = f"the logits output has no fixed vocabulary size (last dimension), got {logits}"
    if problem:
        raise UserError(f"not a causal LM: {problem}", file=path)
    return CausalLMFile(path, logits[-1], max_context(model))


def max_context(model) -> int | None:
    """Rows of the smallest constant table gathered by position ids (``position_ids``, else a ``Range``)."""
    graph = model.graph
    rows = {t.name: t.dims[0] for t in graph.initializer if t.dims}
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.output and value is not None and value.dims:
            rows[node.output[0]] = value.dims[0]
    inputs = {i.name for i in graph.input}
    ranges = {o for n in graph.node if n.op_type == "Range" for o in n.output}
    derived = {"position_ids"} if "position_ids" in inputs else ranges
    tables = []
    for node in graph.node:  # ONNX nodes are in topological order
        if node.op_type in _TABLE_PASS and node.input and node.input[0] in rows and node.input[0] not in derived:
            rows[node.output[0]] = rows[node.input[0]]
            continue
        axis = next((a.i for a in node.attribute if a.name in ("axis", "gather_axis")), 0)
        gather = node.op_type in ("Gather", "GatherBlockQuantized") and len(node.input) > 1 and axis == 0
        if gather and node.input[1] in derived and node.input[0] in rows:
            tables.append(int(rows[node.input[0]]))
            continue  # the table's rows, not positions: stop following here
        if any(i in derived for i in node.input):
            derived.update(node.output)
    return min(tables) if tables else None


def within_context(lm: CausalLMFile, flag: str, value: int | None, default: int) -> int:
    """``value`` if the model takes it; the default capped at the model's maximum when not given."""
    if value is None:
        return default if lm.max_context is None else min(default, lm.max_context)
    if lm.max_context is not None and value > lm.max_context:
        raise UserError(
            f"must be at most {lm.max_context}, the longest context {lm.path} takes (its position table), got {value}",
            field=flag,
        )
    return value
