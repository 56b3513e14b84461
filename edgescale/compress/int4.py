"""``quantize.int4_weight_only``: 4-bit block-quantized MatMul weights (``com.microsoft.MatMulNBits``).

Weight-only quantization keeps activations in float and stores each MatMul weight as
4-bit integers in blocks of ``block_size`` input rows, one scale (and, asymmetric, one
zero point) per block — the llama.cpp Q4 idea, in onnxruntime's contrib op
``MatMulNBits``, which the CPU provider (MLAS), the CUDA provider and QNN's HTP backend
(2/4/8 bits, see :mod:`edgescale.export.ep_ops`) run; NNAPI, CoreML and XNNPACK have no
kernel for it (:mod:`edgescale.compress.feasibility` warns).

Algorithms, all from ``onnxruntime.quantization.matmul_nbits_quantizer``:

- ``rtn``: round to nearest per block (onnxruntime's native blockwise quantizer);
- ``hqq``: Half-Quadratic Quantization (Badri & Shaji 2023), which optimises scales and
  zero points per block without data (asymmetric only; needs torch, installed here);
- ``gptq``: GPTQ (Frantar et al. 2023, arXiv:2210.17323), which corrects the rounding
  error column by column using each layer's input Hessian from train-split
  calibration windows (onnxruntime's copy of Intel Neural Compressor's implementation,
  numpy only). Refused at validation time while the installed copy is broken
  (:func:`gptq_unavailable` probes it; onnxruntime 1.32's never applies the correction).

The embedding ``Gather`` and the attention MatMuls (no weights) stay float, and so do
the graph's inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgescale.compress.calibration import LMCalibrationReader, calibration_windows, window_tokens
from edgescale.compress.isa import AUTO, IsaChoice, TargetIsa, pick, resolve_int4, target_isa
from edgescale.compress.onnx_graph import (
    check_io_unchanged,
    has_external_data,
    load_graph,
    op_counts,
    quiet_onnxruntime,
)
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register

OP = "quantize.int4_weight_only"
_INT8_COMPUTE = 4  # MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8


def gptq_unavailable() -> str | None:
    """Why GPTQ cannot be offered with the installed onnxruntime, or None when it can.

    A behavioural probe, not a version check: GPTQ's defining step is to spread each
    column's rounding error over the columns not yet quantized, weighted by the inverse
    Hessian, so two different Hessians must give two different results. onnxruntime 1.32's
    copy reads ``Hinv1[i:, i]``, the part *below* the diagonal of an upper-triangular
    Cholesky factor, which is zero: the correction never happens and the output does not
    depend on the calibration data (it is round-to-nearest with GPTQ's per-group ranges).
    When a fixed onnxruntime is installed, the probe passes and GPTQ is offered.
    """
    try:
        from onnxruntime.quantization.neural_compressor.weight_only import gptq
    except ImportError as e:
        return f"onnxruntime's GPTQ (onnxruntime.quantization.neural_compressor) does not import: {e}"
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8)).astype(np.float32)
    x = rng.standard_normal((256, 64))
    hessians = (x.T @ x, (x * np.linspace(0.1, 3.0, 64)).T @ (x * np.linspace(0.1, 3.0, 64)))
    outs = [gptq(w.copy(), h.copy(), num_bits=4, group_size=32, scheme="sym") for h in hessians]
    if np.array_equal(outs[0], outs[1]):
        return (
            "the installed onnxruntime's GPTQ (quantization/neural_compressor/weight_only.py) never applies its "
            "Hessian error correction (it indexes below the diagonal of an upper-triangular factor), so its result "
            "does not depend on the calibration data: it is round-to-nearest under another name"
        )
    return None


class Int4WeightOnlyConfig(StepConfig):
    algorithm: Literal["rtn", "hqq", "gptq"] = Field(
        "rtn",
        description="rtn: round to nearest per block; hqq: half-quadratic scale/zero-point fit (no data, "
        "asymmetric); gptq: Hessian-corrected rounding from train-split calibration (refused while the "
        "installed onnxruntime's GPTQ ignores its calibration data; see edgescale validate)",
    )
    block_size: int = Field(32, ge=16, le=256, description="input rows sharing one scale (power of 2, >= 16)")
    symmetric: bool = Field(
        True, description="no zero points (smaller, int8-compute friendly); false adds one zero point per block"
    )
    accuracy_level: Literal[0, 1, 2, 3, 4, "auto"] | None = Field(
        None,
        description="MatMulNBits compute type for the float input: 1 fp32, 2 fp16, 3 bf16, 4 int8 (MLAS's fast "
        "CPU path); unset = 4 for rtn/gptq, 0 (not written) for hqq, whose float zero points have no int8 path; "
        "auto: chosen for the recipe target's ISA (edgescale.compress.isa), recorded in the step's metrics",
    )
    calibration_windows: int = Field(32, ge=0, le=100_000, description="gptq: train-split calibration windows")
    calibration_window_tokens: int | None = Field(
        None, ge=2, le=8192, description="gptq: tokens per calibration window; unset = the model's context length"
    )
    gptq_damping: float = Field(
        0.01, gt=0, lt=1, description="gptq: share of the mean Hessian diagonal added for stability (percdamp)"
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"block_size must be a power of 2 (MatMulNBits), got {v}")
        return v

    @model_validator(mode="after")
    def _algorithm_fits(self) -> Int4WeightOnlyConfig:
        if self.algorithm == "hqq":
            if self.symmetric:
                raise ValueError(
                    "algorithm hqq is asymmetric only (it fits a zero point per block); set symmetric: false"
                )
            if self.accuracy_level not in (None, 0, AUTO):
                raise ValueError(
                    "algorithm hqq writes float zero points, which have no int8-compute path; "
                    "leave accuracy_level unset"
                )
        if self.algorithm == "gptq":
            if why := gptq_unavailable():
                raise ValueError(f"algorithm gptq is refused: {why}; use rtn (or hqq)")
            if not self.symmetric:
                # onnxruntime packs GPTQ's 4-bit zero points across rows, which fails (and
                # would be misread) when a weight has an odd number of blocks.
                raise ValueError(
                    "algorithm gptq needs symmetric: true (onnxruntime's asymmetric GPTQ packing "
                    "breaks for weights with an odd number of blocks)"
                )
        return self

    @property
    def resolved_accuracy_level(self) -> int:
        """The level written when not ``auto`` (``auto`` resolves per target: :func:`accuracy_level_for`)."""
        if self.accuracy_level not in (None, AUTO):
            return self.accuracy_level
        return 0 if self.algorithm == "hqq" else _INT8_COMPUTE


def accuracy_level_for(cfg: Int4WeightOnlyConfig, target: TargetIsa) -> tuple[int, dict | None]:
    """The MatMulNBits accuracy_level for ``target``, and the ``isa_choice`` record when it was ``auto``."""
    if cfg.accuracy_level != AUTO:
        return cfg.resolved_accuracy_level, None
    if cfg.algorithm == "hqq":
        choice = IsaChoice({"accuracy_level": 0}, "hqq: float zero points have no int8 path", target.isa, target.source)
    else:
        choice = resolve_int4(target.isa, target.source)
    _, record = pick(cfg, ("accuracy_level",), choice)
    return choice.values["accuracy_level"], record


def weight_bytes(cfg: Int4WeightOnlyConfig) -> float:
    """Half a byte per weight, plus per block a float32 scale and (asymmetric) a 4-bit zero point."""
    return 0.5 + (4 + (0 if cfg.symmetric else 0.5)) / cfg.block_size


@register(
    OP,
    Int4WeightOnlyConfig,
    takes="onnx",
    gives="onnx",
    facts=StepFacts(
        writes=frozenset({"com.microsoft:MatMulNBits"}),
        weight_bytes=weight_bytes,
        calibrates=lambda cfg: cfg.algorithm == "gptq",
    ),
)
def int4_weight_only(path: Path, cfg: Int4WeightOnlyConfig, ctx: StepContext) -> Path:
    """4-bit weight-only quantization of every weight MatMul into MatMulNBits."""
    out = ctx.work_dir / "model.int4.onnx"
    reader = None
    if cfg.algorithm == "gptq":
        length = window_tokens(path, OP, cfg.calibration_window_tokens)
        windows = calibration_windows(ctx, OP, cfg.calibration_windows, length)
        reader = LMCalibrationReader(path, windows, batch_size=1)  # GPTQ weighs samples by batch
        ctx.metrics.update({"calibration_split": "train", "calibration_windows": int(windows.shape[0])})
    with quiet_onnxruntime():
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb

        level, record = accuracy_level_for(cfg, target_isa(ctx.target))
        algo = {
            "rtn": lambda: mnb.DefaultWeightOnlyQuantConfig(
                block_size=cfg.block_size, is_symmetric=cfg.symmetric, accuracy_level=level
            ),
            "hqq": lambda: mnb.HQQWeightOnlyQuantConfig(block_size=cfg.block_size, bits=4),
            "gptq": lambda: mnb.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, percdamp=cfg.gptq_damping),
        }[cfg.algorithm]()
        quantizer = mnb.MatMulNBitsQuantizer(
            str(path),
            block_size=cfg.block_size,
            is_symmetric=cfg.symmetric,
            accuracy_level=level or None,
            algo_config=algo,
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=has_external_data(path))
    check_io_unchanged(path, out, OP)
    counts = op_counts(out)
    n = counts.get("com.microsoft:MatMulNBits", 0)
    ctx.metrics.update({"op_counts": counts, "matmul_nbits": n, "accuracy_level": level})
    if record is not None:
        ctx.metrics["isa_choice"] = record
    ctx.log(f"{OP}: {n} MatMulNBits ({cfg.algorithm}, block {cfg.block_size})")
    return out


def matmul_nbits_nodes(path: Path) -> list[dict]:
    """Attributes of every MatMulNBits node (K, N, bits, block_size, accuracy_level), for tests and reports."""
    import onnx

    return [
        {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in load_graph(path).graph.node
        if n.op_type == "MatMulNBits"
    ]
