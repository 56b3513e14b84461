"""Quantization steps on the exported graph, through ``onnxruntime.quantization``.

Dynamic int8 (Jacob et al. 2018 affine scheme as implemented by onnxruntime): weights
are quantized offline, activations per call from their observed range; MatMul becomes
``MatMulInteger`` (or ``DynamicQuantizeMatMul`` after ORT's fusions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgescale.compress.onnx_graph import check_io_unchanged, op_counts, quiet_onnxruntime
from edgescale.compress.registry import FloatInputs, StepConfig, StepContext, StepFacts, register

# onnxruntime's int8 quantizers write float32-only (Dynamic)QuantizeLinear: a float16 graph
# does not load (quantize.fp16 in either order, see edgescale.compress.rules).
INT8_FLOAT_INPUTS = FloatInputs(frozenset({"float32"}), "onnxruntime's int8 (Dynamic)QuantizeLinear takes float32 only")


class Int8DynamicConfig(StepConfig):
    weight_type: Literal["qint8", "quint8"] = Field(
        "qint8", description="weight integer type (signed is what ORT's x86/Arm kernels prefer)"
    )
    per_channel: bool = Field(False, description="one scale per output channel instead of per tensor")
    reduce_range: bool = Field(False, description="7-bit weights, for x86 CPUs without VNNI")
    op_types: list[Literal["MatMul", "Gemm", "Attention"]] = Field(
        default_factory=lambda: ["MatMul"], description="operator types to quantize"
    )


@register(
    "quantize.int8_dynamic",
    Int8DynamicConfig,
    takes="onnx",
    gives="onnx",
    facts=StepFacts(
        writes=frozenset({"DynamicQuantizeLinear", "MatMulInteger"}),
        weight_bytes=1.0,
        int8_activations=True,
        float_inputs=INT8_FLOAT_INPUTS,
    ),
)
def int8_dynamic(path: Path, cfg: Int8DynamicConfig, ctx: StepContext) -> Path:
    """Dynamic int8 quantization (weights offline, activations at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = ctx.work_dir / "model.int8_dynamic.onnx"
    # onnxruntime logs "consider pre-processing" on the root logger; its symbolic shape
    # inference fails on dynamo graphs, which already carry full shape information.
    with quiet_onnxruntime():
        quantize_dynamic(
            str(path),
            str(out),
            weight_type=QuantType.QInt8 if cfg.weight_type == "qint8" else QuantType.QUInt8,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            op_types_to_quantize=list(cfg.op_types),
        )
    check_io_unchanged(path, out, "quantize.int8_dynamic")
    ctx.metrics["op_counts"] = op_counts(out)
    return out
