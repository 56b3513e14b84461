"""A fused decode graph for edgescale's GPT, written from its weights: ~9 nodes per layer.

The traced export (:mod:`edgescale.export.onnx`, torch's dynamo exporter) spells attention
out as ~40 standard ops per layer (Reshape, Transpose, Concat of the KV cache, Slice,
Where, Softmax, ...). onnxruntime fuses LayerNorm and GELU at load time but not that
attention, and on a CPU each of those nodes costs a dispatch (a few µs, more when the
intra-op pool wakes per node): in a quantized decode step that is most of the time
(``benchmarks/decode_limit.py``). onnxruntime's transformer optimiser does not match the
dynamo exporter's attention, and onnxruntime-genai's model builder, which writes graphs of
this kind, takes Hugging Face architectures with rotary positions and RMSNorm, not this
GPT-2 shape (learned positions, LayerNorm with bias, GELU MLP). So the graph is written
here, from the state dict, the way the builder writes its own:

    x   = Gather(wte, input_ids);  p = Gather(wpe, position_ids)
    ln, h = SkipLayerNormalization(x, p)                        # layer 0's ln_1, h = x + p
    per layer i:
      qkv    = MatMul(ln, W_qkv) + b_qkv                         # packed Q|K|V, as c_attn lays it out
      a, k, v = GroupQueryAttention(qkv, past.i.key, past.i.value, seqlens_k, total_len)
      ln2, h = SkipLayerNormalization(MatMul(a, W_o), h, bias=b_o)       # ln_2, h += attn
      m      = MatMul(BiasGelu(MatMul(ln2, W_fc), b_fc), W_proj)
      ln, h  = SkipLayerNormalization(m, h, bias=b_proj)          # next ln_1 (ln_f after the last), h += mlp
    logits = MatMul(ln, W_head)

All weight MatMuls keep a constant weight as input 1, so the quantizers find every one
(``quantize.int8_dynamic``, ``quantize.int4_weight_only``, ``quantize.int8_static``).
The inputs and outputs are the traced export's (optimum's ``text-generation-with-past``
names and shapes; present = past + new tokens), so every reader of an edgescale graph
reads this one. GroupQueryAttention derives each row's length from ``attention_mask``
(``seqlens_k`` = its sum − 1, as onnxruntime-genai's builder does): the mask must be ones
then zeros on the right (what edgescale feeds); a mask with holes is not this graph's
input. The ops are ``com.microsoft`` contrib ops, which the CPU and CUDA providers run and
NNAPI, CoreML and XNNPACK do not, so :mod:`edgescale.export.steps` uses this graph for
targets whose provider runs them and the traced one elsewhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgescale.atomic import atomic_path
from edgescale.export.onnx import kv_names

MS = "com.microsoft"
CONTRIB_OPS = frozenset(f"{MS}:{op}" for op in ("GroupQueryAttention", "SkipLayerNormalization", "BiasGelu"))
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which models.gpt uses


class _Graph:
    """Nodes and initializers of the graph being written, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []

    def typed(self, name: str, shape: list) -> str:
        """Declare a contrib op's float output: onnx's shape inference skips com.microsoft ops, and the
        quantizers need every MatMul input's type."""
        self.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=array.dtype), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> list[str]:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy()


def _lengths(g: _Graph) -> tuple[str, str]:
    """seqlens_k (batch,) int32 = mask sum − 1, and total_sequence_length () int32 = mask width."""
    one = g.weight("const.one", np.array(1, np.int64))
    axis = g.weight("const.axis1", np.array([1], np.int64))
    g.node("ReduceSum", ["attention_mask", axis], ["mask.sum"], "mask.sum", keepdims=0)
    g.node("Sub", ["mask.sum", one], ["mask.last"], "mask.last")
    g.node("Cast", ["mask.last"], ["seqlens_k"], "seqlens_k", to=TensorProto.INT32)
    g.node("Shape", ["attention_mask"], ["mask.shape"], "mask.shape", start=1, end=2)
    g.node("Squeeze", ["mask.shape"], ["mask.width"], "mask.width")
    g.node("Cast", ["mask.width"], ["total_len"], "total_len", to=TensorProto.INT32)
    return "seqlens_k", "total_len"


def _skip_ln(g: _Graph, x: str, skip: str, prefix: str, gamma, beta, bias=None) -> tuple[str, str]:
    """SkipLayerNormalization: LayerNorm(x + skip (+ bias)) and the sum itself (the residual)."""
    inputs = [x, skip, g.weight(f"{prefix}.weight", _np(gamma)), g.weight(f"{prefix}.bias", _np(beta))]
    if bias is not None:
        inputs.append(g.weight(f"{prefix}.skip_bias", _np(bias)))
    out, total = (g.typed(f"{prefix}.{n}", ["batch", "seq", len(gamma)]) for n in ("out", "residual"))
    g.node("SkipLayerNormalization", inputs, [out, "", "", total], prefix, MS, epsilon=LN_EPS)
    return out, total


def _linear(g: _Graph, x: str, layer, name: str, bias: bool = True) -> str:
    """MatMul with the transposed torch weight (in, out), then the bias Add (fused by onnxruntime at load)."""
    y = g.node("MatMul", [x, g.weight(f"{name}.weight", _np(layer.weight).T)], [f"{name}.matmul"], f"{name}.matmul")[0]
    if bias and layer.bias is not None:
        y = g.node("Add", [y, g.weight(f"{name}.bias", _np(layer.bias))], [f"{name}.out"], f"{name}.add")[0]
    return y


def build_fused_graph(model, opset: int = 18) -> onnx.ModelProto:
    """The fused decode graph of ``model`` (an :class:`edgescale.models.gpt.GPT`), in memory."""
    cfg = model.cfg
    g = _Graph()
    past_names, present_names = kv_names(cfg.n_layer)
    seqlens, total = _lengths(g)
    tok = g.node("Gather", [g.weight("wte.weight", _np(model.wte.weight)), "input_ids"], ["tok"], "wte")[0]
    pos = g.node("Gather", [g.weight("wpe.weight", _np(model.wpe.weight)), "position_ids"], ["pos"], "wpe")[0]
    first = model.blocks[0]
    ln, h = _skip_ln(g, tok, pos, "blocks.0.ln_1", first.ln_1.weight, first.ln_1.bias)
    for i, block in enumerate(model.blocks):
        p, heads = f"blocks.{i}", block.attn.n_head
        g.typed(f"{p}.attn.out", ["batch", "seq", heads * cfg.head_dim])
        for n in present_names[2 * i : 2 * i + 2]:
            g.typed(n, ["batch", heads, "total", cfg.head_dim])
        qkv = _linear(g, ln, block.attn.c_attn, f"{p}.attn.c_attn")
        a = g.node(
            "GroupQueryAttention",
            [qkv, "", "", past_names[2 * i], past_names[2 * i + 1], seqlens, total],
            [f"{p}.attn.out", present_names[2 * i], present_names[2 * i + 1]],
            f"{p}.attn.gqa",
            MS,
            num_heads=heads,
            kv_num_heads=heads,
            scale=1.0 / math.sqrt(cfg.head_dim),
        )[0]
        proj = _linear(g, a, block.attn.c_proj, f"{p}.attn.c_proj", bias=False)
        ln2, h = _skip_ln(g, proj, h, f"{p}.ln_2", block.ln_2.weight, block.ln_2.bias, block.attn.c_proj.bias)
        fc = _linear(g, ln2, block.mlp_fc, f"{p}.mlp_fc", bias=False)
        gelu = g.typed(f"{p}.gelu", ["batch", "seq", block.mlp_fc.out_features])
        act = g.node("BiasGelu", [fc, g.weight(f"{p}.mlp_fc.bias", _np(block.mlp_fc.bias))], [gelu], f"{p}.gelu", MS)
        out = _linear(g, act[0], block.mlp_proj, f"{p}.mlp_proj", bias=False)
        nxt = model.blocks[i + 1].ln_1 if i + 1 < cfg.n_layer else model.ln_f
        name = f"blocks.{i + 1}.ln_1" if i + 1 < cfg.n_layer else "ln_f"
        ln, h = _skip_ln(g, out, h, name, nxt.weight, nxt.bias, block.mlp_proj.bias)
    head = g.weight("lm_head.weight", _np(model.lm_head.weight).T)
    g.node("MatMul", [ln, head], ["logits"], "lm_head")
    return _model(g, cfg, past_names, present_names, opset)


def _model(g: _Graph, cfg, past_names, present_names, opset: int) -> onnx.ModelProto:
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch", "seq"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", cfg.vocab_size])]
    for i, heads in enumerate(cfg.heads_per_layer):
        for kv in range(2):
            inputs.append(
                helper.make_tensor_value_info(past_names[2 * i + kv], f32, ["batch", heads, "past", cfg.head_dim])
            )
            outputs.append(
                helper.make_tensor_value_info(present_names[2 * i + kv], f32, ["batch", heads, "total", cfg.head_dim])
            )
    declared = {o.name for o in outputs}
    value_info = [v for v in g.value_info if v.name not in declared]
    graph = helper.make_graph(g.nodes, "edgescale_gpt_fused", inputs, outputs, g.inits, value_info=value_info)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
        producer_name="edgescale.export.fused",
    )
    model.ir_version = 8 if opset <= 18 else 9
    return model


def export_fused(model, path: Path, opset: int = 18) -> Path:
    """Write ``model``'s fused decode graph to one file at ``path`` (atomically)."""
    proto = build_fused_graph(model.eval(), opset)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)
