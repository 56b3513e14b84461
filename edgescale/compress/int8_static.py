"""``quantize.int8_static``: int8 weights *and* activations, scales fixed offline from train-split calibration.

The affine scheme of Jacob et al. 2018 ("Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference") as implemented by
``onnxruntime.quantization.quantize_static``: each activation tensor gets one scale and
zero point from the ranges observed on calibration windows (MinMax; entropy = the
KL-divergence threshold search of TensorRT's calibrator, Migacz 2017; or a percentile
of the histogram), weights are quantized per tensor or per output channel.

Two formats, one per kind of target:

- ``qoperator``: ``QLinearMatMul`` nodes, which onnxruntime's CPU provider (MLAS) runs as
  integer GEMMs;
- ``qdq``: ``QuantizeLinear``/``DequantizeLinear`` pairs around float ops, the form the
  NNAPI and QNN providers read (they fuse the pairs into their own int8 kernels; the
  CoreML list onnxruntime ships has no Q/DQ ops); the CPU provider fuses them too.

What stays float, and why: the KV-cache inputs and outputs (the loss and latency
harnesses feed float caches; only MatMul inputs are quantized, never the Concat that
builds ``present.*``), and by default the attention MatMuls whose two inputs are both
activations (q·kᵀ and probabilities·v: their per-tensor ranges move with the context
length, and they hold no weights to shrink). The step checks the graph's inputs and
outputs kept their types.

Defaults target onnxruntime's CPU provider on x86/Arm (unsigned activations, signed
weights: what MLAS's u8s8 kernels and the arm64/avx512 presets of optimum use). On
x86 without VNNI, MLAS multiplies u8×s8 with ``VPMADDUBSW``, whose 16-bit pair sums can
saturate; ``reduce_range`` (7-bit weights) avoids that at some accuracy cost, and
:mod:`edgescale.compress.feasibility` warns where it matters.
"""

from __future__ import annotations

import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgescale.compress.calibration import LMCalibrationReader, calibration_windows, window_tokens
from edgescale.compress.isa import pick, resolve_int8, target_isa
from edgescale.compress.onnx_graph import (
    activation_matmuls,
    check_io_unchanged,
    disk_full_as_failure,
    load,
    op_counts,
    quantizer_input,
    quiet_onnxruntime,
)
from edgescale.compress.quantize import INT8_FLOAT_INPUTS
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register

OP = "quantize.int8_static"
CALIBRATION_BATCH = 8  # windows per calibration call; fixed, so histograms merge the same way every run
CALIBRATION_CHUNK = 4  # calls whose intermediate tensors are held at once

# the settings whose best value depends on the target CPU: each may be `auto`
ISA_FIELDS = ("activation_type", "weight_type", "per_channel", "reduce_range")
QuantOpType = Literal["MatMul", "Gemm", "Gather", "Softmax", "Add", "Mul"]


class Int8StaticConfig(StepConfig):
    format: Literal["qoperator", "qdq"] = Field(
        "qoperator",
        description="qoperator: QLinearMatMul (onnxruntime CPU provider); qdq: Quantize/DequantizeLinear pairs "
        "(what the NNAPI and QNN providers read; the CPU provider fuses them into integer kernels too)",
    )
    activation_type: Literal["quint8", "qint8", "auto"] = Field(
        "quint8",
        description="activation integer type; quint8 (asymmetric) is what MLAS's u8s8 kernels take; auto: "
        "chosen for the recipe target's ISA (edgescale.compress.isa), recorded in the step's metrics",
    )
    weight_type: Literal["qint8", "quint8", "auto"] = Field(
        "qint8", description="weight integer type; qint8 (symmetric) for CPU targets; auto: chosen for the target"
    )
    reduce_range: bool | Literal["auto"] = Field(
        False,
        description="7-bit weights: avoids VPMADDUBSW 16-bit saturation of u8×s8 products on x86 CPUs without "
        "VNNI (onnxruntime's advice for such CPUs), costs accuracy elsewhere; the feasibility check warns "
        "when a target needs it; auto: on exactly there",
    )
    per_channel: bool | Literal["auto"] = Field(
        False, description="one weight scale per output channel instead of per tensor; auto: chosen for the target"
    )
    calibrate_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax",
        description="activation range: minmax (observed min/max), entropy (KL-optimal threshold, TensorRT-style), "
        "percentile (the histogram's `percentile`)",
    )
    calibration_windows: int = Field(
        64, ge=0, le=100_000, description="train-split windows used for calibration (0 is refused: no data)"
    )
    calibration_window_tokens: int | None = Field(
        None, ge=2, le=8192, description="tokens per calibration window; unset = the model's context length"
    )
    histogram_bins: int = Field(
        512,
        ge=129,
        le=65536,
        description="histogram bins for entropy/percentile; more bins = finer thresholds and a slower entropy "
        "search (onnxruntime's own entropy default, 128 bins for 128 quantized bins, leaves a single candidate "
        "threshold: the min/max)",
    )
    percentile: float = Field(99.999, gt=50, le=100, description="percentile calibration: share of values kept, %")
    op_types: list[QuantOpType] = Field(
        default_factory=lambda: ["MatMul"], min_length=1, description="operator types to quantize"
    )
    quantize_attention_matmuls: bool = Field(
        False, description="also quantize MatMuls of two activations (q·kᵀ, probabilities·v); off keeps attention float"
    )
    exclude_nodes: list[str] = Field(
        default_factory=list,
        description="node names (fnmatch patterns, e.g. 'node_Softmax_*') left in float, as named in the exported "
        "graph (exporter-generated names: check them with onnx or netron)",
    )

    @model_validator(mode="after")
    def _supported_type_pair(self) -> Int8StaticConfig:
        # onnxruntime refuses s8 activations with s8 weights in QOperator form, and has no
        # kernels for s8 activations with u8 weights (optimum checks the same two pairs).
        if self.activation_type == "qint8" and self.weight_type == "quint8":
            raise ValueError(
                "activation_type qint8 with weight_type quint8 has no onnxruntime kernel; use qint8 weights"
            )
        if self.activation_type == "qint8" and self.format == "qoperator":
            raise ValueError("activation_type qint8 needs format qdq (onnxruntime's QLinear ops take u8 activations)")
        return self


def _written(cfg: Int8StaticConfig) -> frozenset[str]:
    """QDQ keeps float MatMuls between Quantize/Dequantize pairs; QOperator fuses them into QLinearMatMul."""
    qlinear = {"QLinearMatMul"} if cfg.format == "qoperator" else set()
    return frozenset({"QuantizeLinear", "DequantizeLinear", *qlinear})


@register(
    OP,
    Int8StaticConfig,
    takes="onnx",
    gives="onnx",
    facts=StepFacts(
        writes=_written,
        weight_bytes=1.0,
        calibrates=True,
        int8_activations=True,
        float_inputs=INT8_FLOAT_INPUTS,
    ),
)
def int8_static(path: Path, cfg: Int8StaticConfig, ctx: StepContext) -> Path:
    """Static int8 quantization, activation scales calibrated on train-split windows."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    target = target_isa(ctx.target)
    chosen, record = pick(cfg, ISA_FIELDS, resolve_int8(target.isa, "static", target.source))
    length = window_tokens(path, OP, cfg.calibration_window_tokens)
    windows = calibration_windows(ctx, OP, cfg.calibration_windows, length)
    model = load(path)
    exclude = _excluded_nodes(model, cfg)
    types = {"quint8": QuantType.QUInt8, "qint8": QuantType.QInt8}
    extra = {
        "MatMulConstBOnly": not cfg.quantize_attention_matmuls,
        # QDQ would otherwise quantize every MatMul *output* too, the logits among them.
        "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"] if cfg.format == "qdq" else [],
    }
    out = ctx.work_dir / "model.int8_static.onnx"
    # the quantizer's temp files go beside its input: into work/, or removed when it ends; never left in artifacts/
    with (
        quantizer_input(path, ctx.work_dir) as src,
        disk_full_as_failure(src, ctx.work_dir),
        tempfile.TemporaryDirectory(prefix="edgescale-calib-") as tmp,
        quiet_onnxruntime(),
    ):
        reader = LMCalibrationReader(src, windows, CALIBRATION_BATCH)
        cache, method = _calibrate(src, reader, cfg, Path(tmp), symmetric=chosen["activation_type"] == "qint8")
        quantize_static(
            str(src),
            str(out),
            None,
            quant_format=QuantFormat.QOperator if cfg.format == "qoperator" else QuantFormat.QDQ,
            op_types_to_quantize=list(cfg.op_types),
            per_channel=chosen["per_channel"],
            reduce_range=chosen["reduce_range"],
            activation_type=types[chosen["activation_type"]],
            weight_type=types[chosen["weight_type"]],
            nodes_to_exclude=exclude,
            calibrate_method=method,
            extra_options=extra,
            calibration_cache_path=cache,
        )
    check_io_unchanged(path, out, OP)
    counts = op_counts(out)
    ctx.metrics.update(
        {
            "calibration_split": "train",
            "calibration_windows": int(windows.shape[0]),
            "calibration_tokens": int(windows.size),
            "nodes_excluded": len(exclude),
            "op_counts": counts,
        }
    )
    if record is not None:
        ctx.metrics["isa_choice"] = record
    ctx.log(f"{OP}: {counts.get('QLinearMatMul', 0)} QLinearMatMul, {counts.get('QuantizeLinear', 0)} QuantizeLinear")
    return out


def _calibrate(path: Path, reader: LMCalibrationReader, cfg: Int8StaticConfig, tmp: Path, symmetric: bool):
    """Activation ranges with onnxruntime's own calibrators, written as its calibration cache.

    Called directly rather than through ``quantize_static`` because ``quantize_static``
    does not pass the histogram size on: its entropy calibrator then has 128 bins for
    128 quantized bins, and the threshold search degenerates to min/max.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = getattr(
        CalibrationMethod, {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[cfg.calibrate_method]
    )
    calibrator = create_calibrator(
        path,
        list(cfg.op_types),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=method,
        extra_options={
            "symmetric": symmetric,  # signed activations: zero point 0
            "num_bins": cfg.histogram_bins,
            "num_quantized_bins": 128,  # 2**8 / 2: TensorRT's choice for int8
            "percentile": cfg.percentile,
        },
    )
    # Chunks bound memory: the calibrator keeps every intermediate tensor of a chunk, and
    # its own cap (max_intermediate_outputs) discards batches instead of merging them.
    # Min/max ranges merge exactly; histograms are re-binned at each merge, so the chunk
    # size is a constant (same windows, same chunks, same artifact).
    for part in reader.chunks(CALIBRATION_CHUNK):
        calibrator.collect_data(part)
    cache = tmp / "calibration.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache, method


def _excluded_nodes(model, cfg: Int8StaticConfig) -> list[str]:
    names = [n.name for n in model.graph.node]
    out = {n for n in names if any(fnmatch(n, pat) for pat in cfg.exclude_nodes)}
    if not cfg.quantize_attention_matmuls:
        out |= set(activation_matmuls(model))  # QDQ ignores MatMulConstBOnly
    return sorted(out)
