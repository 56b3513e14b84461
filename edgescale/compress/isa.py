"""``auto`` quantization settings: each ISA-dependent value chosen for the target CPU, with the reason.

A quantization step's config may say ``auto`` for the settings whose best value depends on
the CPU the artifact runs on. The step resolves them at run time for the *target*: the
recipe's ``target.isa`` (or ``target.device``, a device profile's ``cpu.isa``) when it names
one, else this host (:func:`edgescale.compress.feasibility.host_target`). The choice and the
rule that made it go into the step's metrics (``isa_choice``) and so into the results.

The rules follow onnxruntime's documented guidance (quantization guide, "When to use U8U8
vs U8S8"; MatMulNBits' ``accuracy_level`` attribute), and one constraint of ours: ``auto``
never picks an option slower than today's defaults on any CPU type (``benchmarks/isa_defaults.py``
measures the options on this host; other CPU types follow the kernels' documented paths):

- integer types: u8 activations × s8 weights everywhere: MLAS's u8s8 GEMMs (``VPMADDUBSW``
  on AVX2, ``VPDPBUSD`` with VNNI, ``SDOT``/``USDOT``/``SMMLA`` on Arm) are its fast path;
  u8u8 avoids saturation on x86 without VNNI but runs the slower u8u8 kernel there;
- ``reduce_range``: on x86 *without* VNNI the u8s8 pair sums of ``VPMADDUBSW`` saturate
  int16; 7-bit weights avoid it with the same kernel (no speed cost). VNNI accumulates in
  int32 and Arm's dot products widen, so there it stays off (full 8-bit precision);
- ``per_channel``: off, as today: it changes accuracy, not the ISA's kernels;
- MatMulNBits ``accuracy_level``: 4 (int8 activations) where MLAS has the int8 kernel
  (x86 AVX2 and later, Arm with dot product); elsewhere 4 too, since MLAS falls back to the
  float path when its int8 kernel is missing, so the attribute is never slower than 0.
  fp16/bf16 (2/3) are never chosen: MLAS computes them through float32 on CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edgescale.compress.feasibility import INT8_DOT, host_target
from edgescale.profiles import find_device

AUTO = "auto"
X86 = frozenset({"avx2", "avx512f"})
ARM = frozenset({"neon", "dotprod", "i8mm", "sve", "sve2"})
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx"})
ARM_DOT = frozenset({"dotprod", "i8mm"})


@dataclass(frozen=True)
class TargetIsa:
    """The CPU features ``auto`` resolves for, and where they came from."""

    isa: frozenset[str]
    source: str  # "recipe target.isa", "device pixel8", "host"


@dataclass(frozen=True)
class IsaChoice:
    """Resolved values (only the fields that were ``auto``) and why."""

    values: dict[str, Any]
    why: str
    isa: frozenset[str]
    source: str

    def as_metrics(self) -> dict[str, Any]:
        return {**self.values, "why": self.why, "isa": sorted(self.isa), "isa_source": self.source}


def target_isa(target: Any) -> TargetIsa:
    """The ISA of a recipe target (``config.RecipeTarget`` or None): its ``isa``, its ``device``'s, else the host's."""
    isa = getattr(target, "isa", None)
    if isa:
        return TargetIsa(frozenset(isa), "recipe target.isa")
    device = getattr(target, "device", None)
    if device:
        return TargetIsa(frozenset(find_device(device).cpu.isa), f"device {device}")
    return TargetIsa(host_target().isa, "host")


def resolution_key(config: Any, target: Any) -> str:
    """What a step's cache key adds for its ``auto`` settings: the target's ISA, so a finished step is reused only
    for the CPU features it resolved for; "" for a config without ``auto`` (its key is unchanged)."""
    if not any(v == AUTO for v in config.model_dump().values()):
        return ""
    return "|isa:" + ",".join(sorted(target_isa(target).isa))


def _kind(isa: frozenset[str]) -> str:
    if isa & X86:
        return "x86 with VNNI" if isa & VNNI else "x86 without VNNI"
    if isa & ARM:
        return "Arm with dot product" if isa & ARM_DOT else "Arm without dot product"
    return "unknown CPU"


def _features(isa: frozenset[str], of: frozenset[str]) -> str:
    return "+".join(sorted(isa & of)) or "none"


def resolve_int8(isa: frozenset[str], mode: Literal["dynamic", "static"], source: str = "host") -> IsaChoice:
    """All ISA-dependent int8 settings for ``isa``; the step keeps only those its config left ``auto``."""
    kind = _kind(isa)
    saturates = kind == "x86 without VNNI"
    values: dict[str, Any] = {"weight_type": "qint8", "reduce_range": saturates, "per_channel": False}
    if mode == "static":
        values["activation_type"] = "quint8"
    dot = _features(isa, INT8_DOT)
    if saturates:
        why = (
            f"{kind} (int8 dot: none): u8s8 via VPMADDUBSW can saturate int16 pair sums, so reduce_range "
            "(7-bit weights, same kernel, no speed cost); u8u8 would avoid it too but runs MLAS's slower u8u8 kernel"
        )
    elif kind == "unknown CPU":
        why = "no x86 or Arm features named: onnxruntime's defaults (u8s8, full range)"
    else:
        why = f"{kind} (int8 dot: {dot}): u8s8 accumulates without saturation, so full-range s8 weights"
    return IsaChoice(values, why + "; per_channel off (accuracy, not speed: no ISA rule)", isa, source)


def resolve_int4(isa: frozenset[str], source: str = "host") -> IsaChoice:
    """MatMulNBits accuracy_level for ``isa`` (rtn/gptq; hqq's float zero points keep 0)."""
    kind = _kind(isa)
    if kind in ("x86 with VNNI", "x86 without VNNI", "Arm with dot product"):
        why = (
            f"{kind} ({_features(isa, X86 | INT8_DOT)}): MLAS has an int8-compute MatMulNBits kernel, "
            "so accuracy_level 4 (int8 activations per block)"
        )
    else:
        why = (
            f"{kind}: no MLAS int8 MatMulNBits kernel; accuracy_level 4 anyway, as MLAS falls back to its float "
            "path, so it is never slower than 0 and is fast wherever the artifact meets an int8 kernel"
        )
    return IsaChoice({"accuracy_level": 4}, why, isa, source)


def pick(cfg: Any, fields: tuple[str, ...], choice: IsaChoice) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config's values for ``fields`` with each ``auto`` replaced from ``choice``, and the metrics record
    (None when nothing was ``auto``)."""
    auto = [f for f in fields if getattr(cfg, f) == AUTO]
    values = {f: choice.values[f] if f in auto else getattr(cfg, f) for f in fields}
    if not auto:
        return values, None
    record = choice.as_metrics()
    record = {k: v for k, v in record.items() if k in auto or k in ("why", "isa", "isa_source")}
    return values, record
