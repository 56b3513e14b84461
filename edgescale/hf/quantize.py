"""``quantize.optimum_preset``: dynamic int8 through optimum's ``ORTQuantizer`` hardware presets.

The same onnxruntime quantizer as ``quantize.int8_dynamic`` underneath, configured the
way optimum's ``AutoQuantizationConfig`` presets configure it, so a recipe can reproduce
what an optimum user would ship and compare it with edgescale's own settings:

- ``arm64``: symmetric int8 weights, per channel, uint8 activations — MLAS's Arm
  kernels use the ``SDOT``/``UDOT`` dot-product instructions, which need no range
  reduction;
- ``avx2``: the same, with optional ``reduce_range`` (7-bit weights): without VNNI,
  ``VPMADDUBSW`` sums u8×s8 pairs into int16, which can saturate at full range;
- ``avx512``: as avx2, on AVX-512 registers;
- ``avx512_vnni``: ``VPDPBUSD`` accumulates straight into int32 without saturation, so
  full range is safe.

Dynamic only (activation scales per call); optimum's static presets need its
calibration datasets, which ``quantize.int8_static`` covers with edgescale's own corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgescale.compress.onnx_graph import check_io_unchanged, op_counts, quiet_onnxruntime
from edgescale.compress.quantize import INT8_FLOAT_INPUTS
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register
from edgescale.errors import UserError

OP = "quantize.optimum_preset"
# onnxruntime's dynamic-quantization operator registry (IntegerOpsRegistry), which optimum
# quantizes by default.
IntegerOp = Literal["MatMul", "Attention", "Gather", "Conv", "LSTM", "Transpose", "EmbedLayerNormalization"]


class OptimumPresetConfig(StepConfig):
    preset: Literal["arm64", "avx2", "avx512", "avx512_vnni"] = Field(
        "avx512_vnni", description="optimum AutoQuantizationConfig preset (the target CPU's int8 instructions)"
    )
    per_channel: bool = Field(True, description="one weight scale per output channel (optimum's default)")
    reduce_range: bool = Field(False, description="7-bit weights; avx2 and avx512 presets only")
    operators: list[IntegerOp] | None = Field(
        None, description="operator types to quantize; default: optimum's (every dynamic-int8 operator)"
    )


@register(
    OP,
    OptimumPresetConfig,
    takes="onnx",
    gives="onnx",
    facts=StepFacts(  # as quantize.int8_dynamic: the same onnxruntime quantizer underneath
        writes=lambda cfg: frozenset(
            {"DynamicQuantizeLinear", "MatMulInteger"}
            # a quantized Gather (the embedding) keeps int8 rows and dequantizes what it gathers
            | ({"DequantizeLinear"} if cfg.operators is None or "Gather" in cfg.operators else set())
        ),
        weight_bytes=1.0,
        int8_activations=True,
        float_inputs=INT8_FLOAT_INPUTS,
    ),
)
def optimum_preset(path: Path, cfg: OptimumPresetConfig, ctx: StepContext) -> Path:
    """Dynamic int8 with one of optimum's ORTQuantizer hardware presets (arm64, avx2, avx512, avx512_vnni)."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import PretrainedConfig

    kwargs = {"is_static": False, "per_channel": cfg.per_channel, "operators_to_quantize": cfg.operators}
    if cfg.preset in ("avx2", "avx512"):
        kwargs["reduce_range"] = cfg.reduce_range
    elif cfg.reduce_range:
        raise UserError(f"reduce_range applies to the avx2 and avx512 presets, not {cfg.preset}", field="reduce_range")
    qconfig = getattr(AutoQuantizationConfig, cfg.preset)(**kwargs)
    # A config object stops ORTQuantizer from looking for config.json beside the file.
    quantizer = ORTQuantizer(Path(path), config=PretrainedConfig())
    with quiet_onnxruntime():
        quantizer.quantize(qconfig, save_dir=ctx.work_dir / "optimum", file_suffix="q")
    (out,) = (ctx.work_dir / "optimum").glob("*.onnx")
    final = ctx.work_dir / "model.optimum_preset.onnx"
    out.replace(final)
    check_io_unchanged(path, final, OP)
    ctx.metrics["op_counts"] = op_counts(final)
    ctx.metrics["preset"] = cfg.preset
    return final
