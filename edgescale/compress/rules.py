"""Recipe rules beyond kinds: step orders and settings that cannot produce a valid artifact.

:func:`edgescale.compress.recipe.compile_chain` checks that kinds line up (torch-stage
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

Each rule was found by running the pair on an exported model (see the tests). The rules
read each step's :class:`~edgescale.compress.registry.StepFacts` (``calibrates``,
``weight_bytes``, ``float_type``, ``float_inputs``), never its op name, so a new
technique that declares its facts is covered. Rules that depend on the target device
(kernels, memory) live in :mod:`edgescale.compress.feasibility`.
"""

from __future__ import annotations

from pathlib import Path

from edgescale.compress.registry import Chain, Step, registry
from edgescale.errors import UserError


def needs_calibration(step: Step) -> bool:
    """True for a step that calibrates on train-split windows with this config."""
    return bool(step.facts.calibrates)


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
            if earlier.facts.weight_bytes is not None and later.facts.weight_bytes is not None:
                raise UserError(
                    f"{later.op} (steps.{j}) comes after {earlier.op} (steps.{i}), which already quantized the "
                    "weight MatMuls: the second would find nothing to quantize; keep one weight quantization",
                    file=file,
                    field=f"steps.{j}.op",
                )
            clash = _float_clash(earlier, later) or _float_clash(later, earlier)
            if clash:
                raise UserError(
                    f"{later.op} (steps.{j}) cannot follow {earlier.op} (steps.{i}): {clash}",
                    file=file,
                    field=f"steps.{j}.op",
                )


def _float_clash(converter: Step, other: Step) -> str:
    """Why ``other``'s ops cannot take the float type ``converter`` turns the graph to; "" when they can."""
    float_type, takes = converter.facts.float_type, other.facts.float_inputs
    if float_type is None or takes is None or float_type in takes.types:
        return ""
    combine = [op for op, sd in sorted(registry().items()) if _combines(sd.facts.of(sd.config()), float_type)]
    alternative = f" ({', '.join(combine)} {'does' if len(combine) == 1 else 'do'} combine with {converter.op})"
    return f"{takes.why}, and the combined graph does not load; use one of them{alternative if combine else ''}"


def _combines(facts, float_type: str) -> bool:
    """A weight quantizer whose ops take ``float_type``: what a user may pair with that float conversion."""
    takes = facts.float_inputs
    return facts.weight_bytes is not None and (takes is None or float_type in takes.types)
