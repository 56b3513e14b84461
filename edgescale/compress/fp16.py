"""``quantize.fp16``: float16 weights and compute, float32 graph inputs and outputs.

Conversion by onnxruntime's own ``onnxruntime.transformers.float16.convert_float_to_float16``
(the converter of onnxconverter-common, maintained inside onnxruntime): every float
initializer and float op goes to float16, except the ops in onnxruntime's default block
list (``Range``, ``CumSum``, ``TopK``, ...) and any listed in ``float32_op_types``;
constants beyond float16's range are clamped to ±65504.

The graph keeps **float32 inputs and outputs** (``keep_io_types``): a Cast sits behind
each input and before each output, so ``logits`` and the ``present.*`` KV cache stay
float32, which is what the loss harness (:func:`edgescale.bench.loss.onnx_loss`), the
causality guard and the latency worker feed and bind. The KV cache therefore does not
shrink in memory between calls; inside the graph it is float16.

Which EP computes in float16 matters: CUDA, CoreML, NNAPI and XNNPACK have float16
kernels; onnxruntime's x86 CPU provider has few, so it wraps the rest in Casts back to
float32 (its InsertCastTransformer). On such a host the file halves, the loss reflects
float16 *storage* and rounding at the casts, and latency is no better than fp32.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgescale.atomic import atomic_path
from edgescale.compress.onnx_graph import check_io_unchanged, initializer_bytes, load, op_counts, quiet_onnxruntime
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register

OP = "quantize.fp16"


class Fp16Config(StepConfig):
    float32_op_types: list[str] = Field(
        default_factory=list,
        description="op types kept in float32 besides onnxruntime's default block list "
        "(e.g. LayerNormalization, Softmax for accuracy on targets whose fp16 accumulation is poor)",
    )


@register(OP, Fp16Config, takes="onnx", gives="onnx", facts=StepFacts(float_type="float16"))
def fp16(path: Path, cfg: Fp16Config, ctx: StepContext) -> Path:
    """float16 weights and compute; graph inputs and outputs stay float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    out = ctx.work_dir / "model.fp16.onnx"
    block = sorted({*DEFAULT_OP_BLOCK_LIST, *cfg.float32_op_types})
    with quiet_onnxruntime():
        model = convert_float_to_float16(load(path), keep_io_types=True, op_block_list=block)
    import onnx

    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    check_io_unchanged(path, out, OP)
    by_type = initializer_bytes(model)
    ctx.metrics.update({"op_counts": op_counts(model), "initializer_bytes": by_type})
    ctx.log(f"{OP}: {by_type.get('FLOAT16', 0):,} bytes of float16 initializers, I/O float32")
    return out
