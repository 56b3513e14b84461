"""Op support of the XNNPACK and QNN execution providers, transcribed from onnxruntime's sources.

onnxruntime ships op lists for NNAPI and CoreML (``onnxruntime/tools/mobile_helpers``)
but none for XNNPACK or QNN, so these are read from the providers' own code, for the
onnxruntime we pin (:data:`ORT_VERSION`). The source index holds many versions of each
file but no release tags, so each list names the commit it was read at; where the
release's exact file was not stored that is said next to the list.

An op is in a set when the provider registers it. Some ops are taken only under
conditions; those we can read from the graph (element type, constant weights, rank, an
attribute, the surrounding pattern of a fusion) are checked by the functions in the
``*_CHECKS`` tables below, which return ``None`` (taken) or the reason it is not.
Conditions we cannot read from the graph are kept as caveats, printed with the coverage.

Contrib ops (``com.microsoft``): XNNPACK takes none (its support checker accepts only
the ``ai.onnx`` domain); QNN takes the few its op-builder factory registers, notably
``MatMulNBits``, and not ``DynamicQuantizeMatMul`` or ``MatMulIntegerToFloat``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

ORT_VERSION = "1.32.0"
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})

# --- XNNPACK ---------------------------------------------------------------------------
# microsoft/onnxruntime@6479e4bc84441b9266a2ba076d69bf4033d25dbe:
#   onnxruntime/core/providers/xnnpack/detail/node_support_checker.cc
#   (NodeSupportChecker::IsNodeSupported: a checker per op, ai.onnx domain only;
#    IsNodeSupportedWithFusion: Clip/Relu fused into a preceding NHWC Conv/MaxPool/AveragePool)
# Cross-checked with the docs page, microsoft/onnxruntime@19d9fff0d0f16f8674a614bc159bb297b6de719b:
#   docs/execution-providers/Xnnpack-ExecutionProvider.md ("Supported ops"). Its three
#   com.microsoft rows (QLinearAveragePool, QLinearSoftmax, QLinearConvTranspose) are the
#   EP's internal kernels for fused QDQ groups; a com.microsoft node in a model is not taken.
XNNPACK_OPS = frozenset(
    f"ai.onnx:{op}"
    for op in ("AveragePool", "Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "QLinearConv", "Resize", "Softmax")
)
XNNPACK_FUSED = frozenset({"ai.onnx:Clip", "ai.onnx:Relu"})  # only fused into a taken Conv/MaxPool/AveragePool
XNNPACK_QDQ = frozenset({"ai.onnx:QuantizeLinear", "ai.onnx:DequantizeLinear"})  # only inside a QDQ group
XNNPACK_CAVEATS = {
    "ai.onnx:Resize": "2D/4D tensors in bilinear mode only (docs)",
    "ai.onnx:QLinearConv": "all quantization scales and zero points must be constant (docs)",
}
# float16 MatMul/Gemm kernels exist only in builds with XNNPACK_FP16_SUPPORTED (xnnpack_init.h:
# Arm, and x86 outside mobile), i.e. every Arm phone build; we accept float16 for both.

# --- QNN (HTP backend) -----------------------------------------------------------------
# From onnxruntime 1.24.1 the QNN EP is a plugin shipped separately (onnxruntime/onnxruntime-qnn
# 2.x, "compatible with any ORT version supporting the EP ABI"), so its op list is that repo's:
# onnxruntime/onnxruntime-qnn@001cffc612b4f32cc0847a9bb53e517a47e4369d:
#   onnxruntime/core/providers/qnn/builder/op_builder_factory.cc (OpBuilderRegistrations)
# with domains and notes from onnxruntime/onnxruntime-qnn@0131740f31800af002800abb7886dfba60d5febe:
#   docs/execution_providers/QNN-ExecutionProvider.md ("Supported ONNX operators", QNN EP
#   v2.3.0, built with ORT 1.24.4). The repo's newer, unreleased op_builder_factory.h also
#   declares Shape, Range, Attention and GroupQueryAttention builders; add them when a
#   release documents them.
_QNN_ONNX = (
    "Abs Add And ArgMax ArgMin Asin Atan AveragePool BatchNormalization Cast Ceil Clip Concat Conv "
    "ConvTranspose Cos CumSum DepthToSpace DequantizeLinear Div Einsum Elu Equal Exp Expand Flatten "
    "Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater "
    "GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If InstanceNormalization "
    "Inverse IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization "
    "MatMul Max MaxPool Mean Min Mod Mul Neg NonZero Not Or PRelu Pad Pow QuantizeLinear "
    "RMSNormalization RandomNormalLike RandomUniformLike Reciprocal ReduceL2 ReduceMax ReduceMean "
    "ReduceMin ReduceProd ReduceSum Relu Reshape Resize RoiAlign RotaryEmbedding Round STFT "
    "ScatterElements ScatterND Selu Sigmoid Sign Sin Slice Softmax Softplus SpaceToDepth Split Sqrt "
    "Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor"
)
_QNN_CONTRIB = (
    "DequantizeLinear FusedMatMul Gelu MatMulNBits QuantizeLinear QuickGelu RotaryEmbedding "
    "SimplifiedLayerNormalization"
)
QNN_OPS = frozenset(f"ai.onnx:{op}" for op in _QNN_ONNX.split()) | frozenset(
    f"com.microsoft:{op}" for op in _QNN_CONTRIB.split()
)
# Taken only as part of a fused pattern (no op builder of their own), per the docs'
# "Supported operator fusions" table and onnxruntime/onnxruntime-qnn@02dc787ca6544477f2cb2613900242f7cd051be5:
#   onnxruntime/core/providers/qnn/builder/qnn_node_group/{dq_matmul_integer_fusion,gelu_fusion}.cc
QNN_FUSION_ONLY = frozenset(
    {"ai.onnx:DynamicQuantizeLinear", "ai.onnx:MatMulInteger", "ai.onnx:ConvInteger", "ai.onnx:Erf"}
)
QNN_CAVEATS = {
    "ai.onnx:MatMul": "on HTP a float MatMul runs in fp16 (enable_htp_fp16_precision=1, the default)",
    "ai.onnx:Gather": "indices must be non-negative at run time (docs)",
    "ai.onnx:RotaryEmbedding": "HTP backend only (docs)",
}


@dataclass
class GraphIndex:
    """What the checks need to know about a graph: constants, types and shapes, edges."""

    consts: dict[str, TensorProto]
    types: dict[str, tuple[int, tuple[int | str | None, ...] | None]]  # elem type, dims (None: unknown rank)
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    opset: int = 0

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphIndex:
        # Types and shapes from inference (strict_mode=False: unknown contrib ops keep the
        # shapes the exporter wrote); edges from ``model`` itself, so its NodeProtos are the keys.
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        g = model.graph
        inputs = {i.name for i in g.input}  # initializers that are also inputs can be overridden
        consts = {t.name: t for t in g.initializer if t.name not in inputs}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                consts[n.output[0]] = n.attribute[0].t
        types = {name: (t.data_type, tuple(t.dims)) for name, t in consts.items()}
        for v in (*inferred.input, *inferred.value_info, *inferred.output):
            tt = v.type.tensor_type
            dims = None
            if tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
            types.setdefault(v.name, (tt.elem_type, dims))
        idx = cls(consts, types, {o: n for n in g.node for o in n.output})
        for n in g.node:
            for i in n.input:
                idx.consumers.setdefault(i, []).append(n)
        idx.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        return idx

    def elem(self, name: str) -> int:
        return self.types.get(name, (0, None))[0]

    def dims(self, name: str) -> tuple[int | str | None, ...] | None:
        return self.types.get(name, (0, None))[1]

    def value(self, name: str) -> np.ndarray | None:
        """A small constant's value; None if not constant or stored outside the file."""
        t = self.consts.get(name)
        if t is None or t.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(t)

    def is_const(self, name: str, *, through_dq: bool = False) -> bool:
        """A constant initializer; with ``through_dq`` also a DequantizeLinear of one (a QDQ weight)."""
        p = self.producer.get(name)
        return name in self.consts or (
            through_dq and p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts
        )

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 else None


Check = Callable[[onnx.NodeProto, GraphIndex], str | None]


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else onnx.helper.get_attribute_value(a)


def _static(dims: tuple | None) -> bool:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims)


# XNNPACK conditions: each mirrors the op's IsOnnxNodeSupported in
# microsoft/onnxruntime:onnxruntime/core/providers/xnnpack/{math,nn}/*.cc.
def _xnn_matmul(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # math/matmul.cc@06dd1219274bb9bb8a9c5cfb2a92c19c518339e4 (B constant, rank <= 2, static);
    # microsoft/onnxruntime#24908 (3426f646) lets the activation A broadcast over any leading dims.
    if g.elem(n.input[0]) not in FLOAT_TYPES:
        return "A is not float"
    if n.input[1] not in g.consts:
        return "B is not a constant initializer"
    b = g.dims(n.input[1])
    return None if b is not None and len(b) <= 2 and _static(b) else "B is not a static 1-D/2-D tensor"


def _xnn_gemm(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # math/gemm.cc (the float16 version): alpha = beta = 1, B and C constant, all ranks <= 2.
    if _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0:
        return "alpha or beta is not 1"
    if g.elem(n.input[0]) not in FLOAT_TYPES:
        return "A is not float"
    if any(i and i not in g.consts for i in n.input[1:]):
        return "B or C is not a constant initializer"
    if any(g.dims(i) is None or len(g.dims(i)) > 2 for i in n.input if i):
        return "an input has rank > 2"
    return None


def _xnn_softmax(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # math/softmax.cc@d018c9785f8f0488dbac7c6c5d5effadc19b1a48: float or uint8; opset >= 13 needs the
    # last axis; the reduced dimension must be static.
    if g.elem(n.input[0]) not in {TensorProto.FLOAT, TensorProto.UINT8}:
        return "input is not float32 or uint8"
    dims = g.dims(n.input[0])
    if not dims:
        return "input rank unknown"
    axis = _attr(n, "axis", -1 if g.opset >= 13 else 1)
    if g.opset >= 13 and axis not in (-1, len(dims) - 1):
        return "axis is not the last dimension"
    return None if isinstance(dims[-1], int) and dims[-1] > 0 else "last dimension is not static"


def _xnn_conv(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # nn/conv.cc, nn/conv_transpose.cc: constant weights and bias; 2-D, or 1-D since #20349.
    weights = [n.input[3], *n.input[8:9]] if n.op_type == "QLinearConv" else n.input[1:3]
    if any(i and not g.is_const(i, through_dq=True) for i in weights):
        return "weight or bias is not a constant initializer"
    dims = g.dims(n.input[0])
    return None if dims is not None and len(dims) in (3, 4) else "input is not 1-D or 2-D (rank 3/4)"


def _xnn_pool(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    dims = g.dims(n.input[0])  # nn/max_pool.cc, nn/average_pool.cc: 2-D pooling only
    return None if dims is not None and len(dims) == 4 else "not a 2-D pool (rank-4 input)"


def _xnn_resize(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    return None if _attr(n, "mode", b"nearest") in (b"linear", "linear") else "mode is not linear"


XNNPACK_CHECKS: dict[str, Check] = {
    "ai.onnx:MatMul": _xnn_matmul,
    "ai.onnx:Gemm": _xnn_gemm,
    "ai.onnx:Softmax": _xnn_softmax,
    "ai.onnx:Conv": _xnn_conv,
    "ai.onnx:ConvTranspose": _xnn_conv,
    "ai.onnx:QLinearConv": _xnn_conv,
    "ai.onnx:MaxPool": _xnn_pool,
    "ai.onnx:AveragePool": _xnn_pool,
    "ai.onnx:Resize": _xnn_resize,
}


# QNN conditions, from onnxruntime/onnxruntime-qnn (commits in each comment).
def _qnn_requant_chain(out: str, g: GraphIndex) -> str | None:
    """``X → Cast(to=float) → Mul``: the tail both integer fusions need."""
    cast = g.only_consumer(out)
    if cast is None or cast.op_type != "Cast" or _attr(cast, "to", 0) != TensorProto.FLOAT:
        return "output is not consumed by a single Cast to float"
    mul = g.only_consumer(cast.output[0])
    return None if mul is not None and mul.op_type == "Mul" else "Cast is not followed by a single Mul"


def _qnn_integer_op(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # qnn_node_group/dq_matmul_integer_fusion.cc@02dc787c (DynamicQuantizeLinear → MatMulInteger →
    # Cast → Mul → [Add]); ConvInteger per the docs' fusion table (constant int8/uint8 weights).
    dql = g.producer.get(n.input[0])
    if dql is None or dql.op_type != "DynamicQuantizeLinear":
        return "A is not produced by DynamicQuantizeLinear"
    if len(n.input) < 3 or n.input[2] != dql.output[2]:
        return "A's zero point is not DynamicQuantizeLinear's"
    if n.input[1] not in g.consts or g.elem(n.input[1]) not in {TensorProto.INT8, TensorProto.UINT8}:
        return "weight is not a constant int8/uint8 initializer"
    if n.op_type == "MatMulInteger" and len(g.dims(n.input[1]) or ()) != 2:
        return "weight is not rank 2"
    if len(n.input) > 3 and n.input[3] and n.input[3] not in g.consts:
        return "weight zero point is not constant"
    return _qnn_requant_chain(n.output[0], g)


def _qnn_dql(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    users = g.consumers.get(n.output[0], [])
    ok = users and all(u.op_type in ("MatMulInteger", "ConvInteger") and _qnn_integer_op(u, g) is None for u in users)
    return None if ok else "not every consumer is a fusable MatMulInteger/ConvInteger"


def _qnn_erf(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # qnn_node_group/gelu_fusion.cc@02dc787c: root → Div/Mul(const √2 or 1/√2) → Erf → Add/Mul ...
    # → a Mul that takes root (directly, or through Mul(root, 0.5)). The constants' values are
    # checked by the EP; here the topology.
    head = g.producer.get(n.input[0])
    if head is None or head.op_type not in ("Div", "Mul") or not any(i in g.consts for i in head.input):
        return "not fed by Div/Mul with a constant (the Gelu pattern)"
    root = next(i for i in head.input if i not in g.consts)
    node = n
    for _ in range(3):
        node = g.only_consumer(node.output[0])
        if node is None or node.op_type not in ("Add", "Mul"):
            break
        scaled = [g.producer.get(i) for i in node.input]
        if node.op_type == "Mul" and (
            root in node.input or any(p is not None and p.op_type == "Mul" and root in p.input for p in scaled)
        ):
            return None
    return "not part of an Erf-based Gelu pattern QNN fuses"


_NBITS_BLOCK_MULTIPLE = {2: 16, 4: 8, 8: 4}  # bits -> block_size multiple on HTP


def _qnn_matmul_nbits(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    # opbuilder/matmulnbits_op_builder.cc@094fb909eaa915dbc9caeaff11c4532499151010 (HTP branch).
    bits, block, k = _attr(n, "bits", 0), _attr(n, "block_size", 0), _attr(n, "K", 0)
    if bits not in _NBITS_BLOCK_MULTIPLE or not block or block % _NBITS_BLOCK_MULTIPLE[bits]:
        return f"bits={bits}, block_size={block} (HTP: 2/4/8 bits, block a multiple of 16/8/4)"
    if k % block:
        return "K is not divisible by block_size"
    if g.elem(n.input[0]) not in FLOAT_TYPES | {TensorProto.UINT16, TensorProto.INT16}:
        return "A is not float32/float16/(u)int16"
    if len(g.dims(n.input[0]) or ()) != 3:
        return "A is not rank 3"
    return "g_idx or bias input is set" if any(n.input[4:6]) else None


def _qnn_gather(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    idx = g.value(n.input[1])  # docs: "Only supports positive indices"
    return "constant indices include negative values" if idx is not None and (idx < 0).any() else None


def _qnn_lp_norm(n: onnx.NodeProto, g: GraphIndex) -> str | None:
    return None if _attr(n, "p", 2) == 2 else "p is not 2 (docs)"


QNN_CHECKS: dict[str, Check] = {
    "ai.onnx:MatMulInteger": _qnn_integer_op,
    "ai.onnx:ConvInteger": _qnn_integer_op,
    "ai.onnx:DynamicQuantizeLinear": _qnn_dql,
    "ai.onnx:Erf": _qnn_erf,
    "com.microsoft:MatMulNBits": _qnn_matmul_nbits,
    "ai.onnx:Gather": _qnn_gather,
    "ai.onnx:LpNormalization": _qnn_lp_norm,
}


def qnn_dynamic_io(model: onnx.ModelProto) -> list[str]:
    """Graph inputs/outputs with a non-static dimension, which the QNN EP refuses.

    onnxruntime/onnxruntime-qnn@0266aa031145f7763ef3aa55fcb43385df7bee1a:
    onnxruntime/core/providers/qnn/builder/qnn_model.cc, SetGraphInputOutputInfo:
    "Dynamic shape is not supported yet"; the docs: "QNN EP does not support models with
    dynamic shapes ... must be fixed to a specific value".
    """
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in (*model.graph.input, *model.graph.output):
        if v.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            out.append(f"{v.name}({'×'.join(map(str, dims))})")
    return out


def check_xnnpack_follower(n: onnx.NodeProto, g: GraphIndex, taken: set[int]) -> str | None:
    """Clip/Relu and Q/DQ, which XNNPACK takes only together with a node it already took.

    Clip/Relu: ``ClipReluChecker`` in node_support_checker.cc fuses them into a taken
    Conv/MaxPool/AveragePool (Clip's min/max constant). QuantizeLinear/DequantizeLinear:
    xnnpack_execution_provider.cc claims the nodes of a QDQ group whose target it takes;
    a DQ counts when all its consumers were taken, a Q when its producer was.
    """
    if n.op_type in ("Clip", "Relu"):
        src = g.producer.get(n.input[0])
        if src is None or id(src) not in taken or src.op_type not in ("Conv", "MaxPool", "AveragePool"):
            return "not fused into a preceding Conv/MaxPool/AveragePool"
        return None if all(i in g.consts for i in n.input[1:] if i) else "Clip min/max is not constant"
    if n.op_type == "DequantizeLinear":
        users = g.consumers.get(n.output[0], [])
        return None if users and all(id(u) in taken for u in users) else "not in a QDQ group around a taken op"
    src = g.producer.get(n.input[0])
    return None if src is not None and id(src) in taken else "not in a QDQ group around a taken op"
