"""Quantization steps on the exported graph, through ``onnxruntime.quantization``.

Dynamic int8 (Jacob et al. 2018 affine scheme as implemented by onnxruntime): weights
are quantized offline, activations per call from their observed range; MatMul becomes
``MatMulInteger`` (or ``DynamicQuantizeMatMul`` after ORT's fusions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgescale.compress.isa import pick, resolve_int8, target_isa
from edgescale.compress.onnx_graph import (
    check_io_unchanged,
    disk_full_as_failure,
    has_external_data,
    op_counts,
    quantizer_input,
    quiet_onnxruntime,
)
from edgescale.compress.registry import FloatInputs, StepConfig, StepContext, StepFacts, register

# onnxruntime's int8 quantizers write float32-only (Dynamic)QuantizeLinear: a float16 graph
# does not load (quantize.fp16 in either order, see edgescale.compress.rules).
# the settings whose best value depends on the target CPU: each may be `auto`
INT8_ISA_FIELDS = ("weight_type", "per_channel", "reduce_range")
INT8_FLOAT_INPUTS = FloatInputs(frozenset({"float32"}), "onnxruntime's int8 (Dynamic)QuantizeLinear takes float32 only")


class Int8DynamicConfig(StepConfig):
    weight_type: Literal["qint8", "quint8", "auto"] = Field(
        "qint8",
        description="weight integer type (signed is what ORT's x86/Arm kernels prefer); auto: chosen for the "
        "recipe target's ISA (edgescale.compress.isa), recorded in the step's metrics",
    )
    per_channel: bool | Literal["auto"] = Field(
        False, description="one scale per output channel instead of per tensor; auto: chosen for the target's ISA"
    )
    reduce_range: bool | Literal["auto"] = Field(
        False, description="7-bit weights, for x86 CPUs without VNNI; auto: on exactly there"
    )
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
    target = target_isa(ctx.target)
    chosen, record = pick(cfg, INT8_ISA_FIELDS, resolve_int8(target.isa, "dynamic", target.source))
    # onnxruntime logs "consider pre-processing" on the root logger; its symbolic shape
    # inference fails on dynamo graphs, which already carry full shape information.
    external = has_external_data(path)
    lean = _lean_shape_inference() if external else contextlib.nullcontext()
    # the quantizer's temp files go beside its input: into work/, or removed when it ends; never left in artifacts/
    with quantizer_input(path, ctx.work_dir) as src, quiet_onnxruntime(), lean, disk_full_as_failure(src, ctx.work_dir):
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8 if chosen["weight_type"] == "qint8" else QuantType.QUInt8,
            per_channel=chosen["per_channel"],
            reduce_range=chosen["reduce_range"],
            op_types_to_quantize=list(cfg.op_types),
            # a graph over 2 GB in, external data out (``out.name + ".data"``): the output may pass 2 GB too
            use_external_data_format=external,
        )
    check_io_unchanged(path, out, "quantize.int8_dynamic")
    ctx.metrics["op_counts"] = op_counts(out)
    if record is not None:
        ctx.metrics["isa_choice"] = record
    return out


def _infer_in_place(model: Any) -> Any:
    """Shape inference on a copy of ``model``'s graph without its large initializers' bytes (shapes do
    not depend on weight values); returns ``model`` itself with the inferred value_info."""
    import onnx
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    g = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    for name in ("node", "input", "output", "value_info"):
        getattr(light.graph, name).extend(getattr(g, name))
    for t in g.initializer:
        if t.ByteSize() > 1024:  # a weight: its type and shape are all inference reads
            light.graph.initializer.add(name=t.name, dims=t.dims, data_type=t.data_type)
        else:  # shape constants, which inference may read
            light.graph.initializer.append(t)
    inferred = onnx.shape_inference.infer_shapes(light)
    del g.value_info[:]
    g.value_info.extend(inferred.graph.value_info)
    add_infer_metadata(model)
    return model


@contextlib.contextmanager
def _lean_shape_inference() -> Iterator[None]:
    """onnxruntime's dynamic quantizer refreshes shapes by deep-copying the model, saving it to a
    temp folder and loading it back (``save_and_reload_model_with_shape_infer``), while the caller
    still holds the original: three copies of the weights at once, 13.8 GB peak for a 4.4 GB
    graph of 1.1B parameters. For graphs with external data, :func:`_infer_in_place` stands in."""
    from onnxruntime.quantization import onnx_quantizer

    original = onnx_quantizer.save_and_reload_model_with_shape_infer
    onnx_quantizer.save_and_reload_model_with_shape_infer = _infer_in_place
    try:
        yield
    finally:
        onnx_quantizer.save_and_reload_model_with_shape_infer = original
