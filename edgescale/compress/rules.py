"""Recipe rules beyond kinds: step orders and settings that cannot produce a valid artifact.

:func:`edgescale.compress.registry.compile_chain` checks that kinds line up (torch-stage
steps before ONNX-stage ones) and then calls :func:`check_chain`, so ``edgescale
validate`` and every study load refuse these before any work starts, with a message
naming the steps (``steps.N``, counted as in the recipe file):

- a calibrating step without calibration data (``calibration_windows: 0``);
- a second weight quantization after a first (int8 after int4, int4 after int8, ...):
  the first turned the weight MatMuls into ``MatMulNBits``/``QLinearMatMul``/
  ``MatMulInteger``, so the second finds nothing and silently does nothing;
- ``quantize.fp16`` together with int8 in either order: onnxruntime's int8 quantizers
  write float32-only ``QuantizeLinear``/``DynamicQuantizeLinear``, and the float16
  converter feeds them float16 (or they meet float16 tensors): the graph does not load.

Each rule was found by running the pair on an exported model (see the tests). Rules that
depend on the target device (kernels, memory) live in
:mod:`edgescale.compress.feasibility`.
"""

from __future__ import annotations

from pathlib import Path

from edgescale.compress.registry import Chain, Step
from edgescale.errors import UserError

WEIGHT_QUANTIZERS = (
    "quantize.int8_dynamic",
    "quantize.int8_static",
    "quantize.int4_weight_only",
    "quantize.optimum_preset",
)
INT8 = ("quantize.int8_dynamic", "quantize.int8_static", "quantize.optimum_preset")
FP16 = "quantize.fp16"


def needs_calibration(step: Step) -> bool:
    """True for a step that calibrates on train-split windows with this config."""
    if step.op == "quantize.int8_static":
        return True
    return step.op == "quantize.int4_weight_only" and getattr(step.config, "algorithm", "") == "gptq"


def check_chain(chain: Chain, file: Path | str) -> None:
    """Raise a UserError naming the steps when the chain cannot produce a valid artifact."""
    placed = [(i, s) for i, s in enumerate(s for s in chain.steps if not s.inserted)]
    for i, step in placed:
        if needs_calibration(step) and getattr(step.config, "calibration_windows", 1) == 0:
            raise UserError(
                f"{step.op} has no calibration data (calibration_windows: 0): it fixes scales from train-split "
                "windows; give calibration_windows >= 1, or use quantize.int8_dynamic, which needs none",
                file=file,
                field=f"steps.{i}.calibration_windows",
            )
    _check_pairs(placed, file)


def _check_pairs(placed: list[tuple[int, Step]], file: Path | str) -> None:
    for j, later in placed:
        for i, earlier in placed[:j]:
            if earlier.op in WEIGHT_QUANTIZERS and later.op in WEIGHT_QUANTIZERS:
                raise UserError(
                    f"{later.op} (steps.{j}) comes after {earlier.op} (steps.{i}), which already quantized the "
                    "weight MatMuls: the second would find nothing to quantize; keep one weight quantization",
                    file=file,
                    field=f"steps.{j}.op",
                )
            if {earlier.op, later.op} in ({FP16, q} for q in INT8):
                raise UserError(
                    f"{later.op} (steps.{j}) cannot follow {earlier.op} (steps.{i}): onnxruntime's int8 "
                    "(Dynamic)QuantizeLinear takes float32 only, and the combined graph does not load; "
                    "use one of them (quantize.int4_weight_only does combine with quantize.fp16)",
                    file=file,
                    field=f"steps.{j}.op",
                )
