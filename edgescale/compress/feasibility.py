"""Hardware feasibility of a compression chain on a device, checked before anything runs.

For each (model size, recipe, device) the check answers: will the recipe's artifact run
on that device's runtime, will its kernels be fast there, and will it fit? Findings are
``warn`` (it runs, but not as the recipe promises — the reason says why) or ``refuse``
(it cannot run; :func:`check_study` raises a UserError before training starts).

The check reads each step's declared :class:`~edgescale.compress.registry.StepFacts`
(the ops it writes, int8 activations, sparsity, float type, weight bytes), never its op
name. Sources for the rules:

- which execution providers (EPs) have kernels for the ops a step writes: the lists
  ``edgescale validate --target`` uses (:func:`edgescale.export.mobile.ep_takes`: the
  NNAPI/CoreML lists onnxruntime ships, and the XNNPACK and QNN lists read from their
  sources in :mod:`edgescale.export.ep_ops`, each with its commit);
- int8 speed: MLAS's int8 GEMMs use VNNI (``VPDPBUSD``) or Arm ``SDOT``/``UDOT``/
  ``SMMLA``; without them it multiplies u8×s8 with ``VPMADDUBSW`` (x86, 16-bit pair sums
  that can saturate) or widening multiplies (Arm), and int8 buys size, not speed;
- sparsity: no onnxruntime EP in the profiles has sparse GEMM kernels; TensorRT can use
  2:4 sparse tensor cores (Ampere and later) when built with its sparsity flag;
- memory: the artifact's weights at the chain's storage precision plus the float32 KV
  cache at the full context, batch 1, against the profile's usable RAM. Pruning only
  shrinks a model, so the parent's shape is an upper bound.

The host is described from this machine: ``/proc/cpuinfo`` flags, ``MemAvailable`` and
the EPs the installed onnxruntime offers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgescale.errors import UserError
from edgescale.export.mobile import ep_takes  # the lists edgescale validate --target uses
from edgescale.ortenv import import_onnxruntime
from edgescale.profiles import find_device

CPU_EP = "CPUExecutionProvider"
# x86 VNNI and Arm dot-product / matrix-multiply instructions: MLAS's fast int8 paths.
INT8_DOT = frozenset({"avx512_vnni", "avx_vnni", "amx", "dotprod", "i8mm"})
# Zero patterns an EP has sparse GEMM kernels for: TensorRT's 2:4 sparse tensor cores
# (Ampere and later); no other provider in the profiles has any.
SPARSE_KERNELS = {"TensorrtExecutionProvider": frozenset({"2:4"})}
# A float type a step converts to -> the CPU feature (device-profile ISA name) with its arithmetic.
FLOAT_ISA = {"float16": "fp16"}
_LINUX_FLAGS = {  # /proc/cpuinfo flag -> the ISA names device profiles use
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_int8": "amx",
    "asimd": "neon",
    "asimdhp": "fp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
}


@dataclass(frozen=True)
class Finding:
    level: Literal["warn", "refuse"]
    device: str
    check: str  # execution_provider | int8_kernels | sparse_kernels | op_support | fp16_kernels | memory
    step: str  # the op the finding is about ("" for the whole chain)
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return f"{self.device}: {self.step + ': ' if self.step else ''}{self.reason}"


@dataclass(frozen=True)
class Target:
    """A device as the check sees it."""

    name: str
    isa: frozenset[str]
    execution_providers: tuple[str, ...]  # onnxruntime EPs the device offers
    usable_bytes: float
    source: str

    @property
    def x86(self) -> bool:
        return bool(self.isa & {"avx2", "avx512f"})


@dataclass(frozen=True)
class ModelSize:
    params_total: int
    params_non_embedding: int  # ≈ the weight-MatMul parameters (LayerNorm and biases are few)
    kv_bytes_per_token_fp32: int
    context: int  # tokens of KV cache held at the longest context

    @classmethod
    def of(cls, acct: Any, context: int) -> ModelSize:
        """From a :class:`edgescale.models.shape.ModelAccounting`."""
        return cls(acct.params_total, acct.params_non_embedding, acct.kv_bytes_per_token_fp32, context)


def device_target(profile: Any) -> Target:
    """A :class:`edgescale.profiles.DeviceProfile` as a check target."""
    eps = [ep for r in profile.runtimes if r.runtime == "onnxruntime" for ep in r.execution_providers]
    return Target(
        profile.id,
        frozenset(profile.cpu.isa),
        tuple(eps),
        profile.memory.usable_gb.value * 1e9,
        f"devices/{profile.id}",
    )


def host_target(cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo")) -> Target:
    """This machine: its CPU flags, available memory and the installed onnxruntime's EPs."""
    ort = import_onnxruntime()  # telemetry off (edgescale.ortenv)

    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    isa = frozenset(_LINUX_FLAGS[f] for f in flags if f in _LINUX_FLAGS)
    avail = 0.0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            avail = float(line.split()[1]) * 1024
    return Target(
        "host", isa, tuple(ort.get_available_providers()), avail, "this machine (/proc/cpuinfo, /proc/meminfo)"
    )


def check(chain: Any, size: ModelSize, target: Target) -> list[Finding]:
    """Every finding for one chain (a compiled recipe) on one device."""
    ep = chain.target.execution_provider if chain.target is not None else CPU_EP
    out = _ep_findings(chain, ep, target)
    for step in chain.steps:
        out += _step_findings(step, ep, target)
    return out + _memory_findings(chain, size, target)


def _ep_findings(chain: Any, ep: str, target: Target) -> list[Finding]:
    if not target.execution_providers:
        return [
            Finding(
                "warn",
                target.name,
                "execution_provider",
                "",
                "the profile lists no onnxruntime runtime; "
                "the ONNX artifact's numbers there are predictions for a runtime the device may not have",
            )
        ]
    if ep in target.execution_providers:
        return []
    where = "host latency is measured" if target.name == "host" else "the artifact would run"
    return [
        Finding(
            "warn",
            target.name,
            "execution_provider",
            "",
            f"recipe {chain.name} targets {ep}, which {target.name} does not offer; {where} on {CPU_EP} instead",
        )
    ]


def _step_findings(step: Any, ep: str, target: Target) -> list[Finding]:
    op, cfg, facts = step.op, step.config, step.facts
    out: list[Finding] = []
    if facts.int8_activations and not target.isa & INT8_DOT:
        out.append(Finding("warn", target.name, "int8_kernels", op, _no_int8_dot(target, cfg)))
    if facts.sparsity is not None and not _sparse_kernels(facts.sparsity, ep, target):
        out.append(
            Finding(
                "warn",
                target.name,
                "sparse_kernels",
                op,
                "no sparse kernels on this runtime: the "
                "zeros are stored and multiplied like any weight, so no speed-up and no smaller file",
            )
        )
    isa = FLOAT_ISA.get(facts.float_type or "")
    if isa and ep == CPU_EP and isa not in target.isa:
        out.append(
            Finding(
                "warn",
                target.name,
                "fp16_kernels",
                op,
                f"no {facts.float_type} arithmetic on this CPU: onnxruntime "
                f"wraps {facts.float_type} nodes in Casts to float32, so the file halves but latency does not improve",
            )
        )
    missing = sorted(op_name for op_name in facts.writes if not _ep_runs(ep, op_name))
    if missing:
        level = "warn" if CPU_EP in target.execution_providers else "refuse"
        then = (
            f"those nodes fall back to {CPU_EP} (the graph is split between providers)"
            if level == "warn"
            else f"the device offers no {CPU_EP} to fall back to"
        )
        out.append(
            Finding(level, target.name, "op_support", op, f"{ep} has no kernel for {', '.join(missing)}; {then}")
        )
    return out


def _no_int8_dot(target: Target, cfg: Any) -> str:
    if target.x86:
        why = (
            "no VNNI: MLAS multiplies u8×s8 with VPMADDUBSW, whose 16-bit pair sums can saturate, and without "
            "the 4-way int8 dot product the speed-up over fp32 is smaller"
        )
        if getattr(cfg, "reduce_range", False) == "auto":  # resolved for the recipe's target, maybe not this device
            why += "; reduce_range: auto is on for this device only if the recipe's target.isa/target.device names it"
        elif getattr(cfg, "weight_type", "qint8") == "qint8" and not getattr(cfg, "reduce_range", False):
            why += "; if accuracy drops on this device, set reduce_range: true (7-bit weights)"
        return why
    return "no Arm dot-product (dotprod/i8mm): int8 GEMMs use widening multiplies, so int8 buys size, not speed"


def _sparse_kernels(pattern: str, ep: str, target: Target) -> bool:
    """True only for a zero pattern the targeted EP has sparse kernels for, on a device that offers it."""
    return pattern in SPARSE_KERNELS.get(ep, frozenset()) and ep in target.execution_providers


def _ep_runs(ep: str, op: str) -> bool:
    return ep_takes(ep, op)


def artifact_bytes(chain: Any, size: ModelSize) -> float:
    """Weight bytes of the chain's artifact, from each step's declared storage.

    A weight quantizer sets the weight MatMuls' bytes per parameter (its ``weight_bytes``:
    int8 1 B, int4 ½ B + a float32 scale per block); a float conversion (``float_type``)
    stores every float, MatMul weights included unless already smaller, at its width.
    """
    matmul_bytes, other_bytes = 4.0, 4.0
    for step in chain.steps:
        facts = step.facts
        if facts.weight_bytes is not None:
            matmul_bytes = facts.weight_bytes
        if facts.float_type is not None:
            width = float(np.dtype(facts.float_type).itemsize)
            matmul_bytes, other_bytes = min(matmul_bytes, width), width
    other = size.params_total - size.params_non_embedding
    return size.params_non_embedding * matmul_bytes + other * other_bytes


def _memory_findings(chain: Any, size: ModelSize, target: Target) -> list[Finding]:
    weights = artifact_bytes(chain, size)
    kv = size.kv_bytes_per_token_fp32 * size.context
    need = weights + kv
    if need <= target.usable_bytes:
        return []
    return [
        Finding(
            "refuse",
            target.name,
            "memory",
            "",
            f"model {weights / 1e9:.2f} GB + KV cache {kv / 1e9:.2f} GB "
            f"at {size.context} tokens = {need / 1e9:.2f} GB exceeds the {target.usable_bytes / 1e9:.2f} GB "
            f"usable RAM ({target.source})",
        )
    ]


def targets_for(devices: list[str]) -> list[Target]:
    """The host (always: latency is measured there) and every named device profile."""
    # the profiles as written: a check reads runtimes, ISA and memory, never the fitted efficiencies
    return [host_target(), *(device_target(find_device(d)) for d in devices if d != "host")]


def check_study(
    chains: list[Any], sizes: dict[str, ModelSize], devices: list[str], file: Path | str | None = None
) -> dict[tuple[str, str], list[Finding]]:
    """Findings per (size, recipe) over every device; a UserError naming the first refusals."""
    targets = targets_for(devices)
    out: dict[tuple[str, str], list[Finding]] = {}
    for name, size in sizes.items():
        for chain in chains:
            findings = [f for t in targets for f in check(chain, size, t)]
            refused = [f for f in findings if f.level == "refuse"]
            if refused:
                raise UserError(
                    f"recipe {chain.name} on size {name} is infeasible: " + "; ".join(f.message() for f in refused),
                    file=file,
                    field="recipes",
                )
            out[(name, chain.name)] = findings
    return out
