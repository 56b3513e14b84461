"""Host latency of ONNX causal LMs: prefill and per-token decode, interleaved, with CIs.

The timing runs in a subprocess (``_ort_worker.py``) that imports only onnxruntime
and numpy. Variants are timed interleaved — each repeat visits every variant once in a
shuffled order — so slow drift of the machine hits all of them alike, and each
speed-up is the ratio of medians with a paired bootstrap 95% interval over repeats.
A ratio whose interval includes 1.0 is flagged "within noise".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

WORKER = Path(__file__).with_name("_ort_worker.py")


class MeasurementError(RuntimeError):
    """The timing subprocess failed or timed out."""


class MeasureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt_len: int = Field(64, ge=1, description="prefill prompt length (tokens)")
    decode_context: int = Field(128, ge=2, description="context length at which one decode step is timed")
    repeats: int = Field(30, ge=3, description="timed repeats per variant, interleaved")
    warmup: int = Field(5, ge=0, description="untimed warm-up runs per variant")
    decode_warm: int = Field(
        2, ge=0, le=16, description="untimed decode steps before each timed one (steady-state generation)"
    )
    threads: int = Field(2, ge=1, description="onnxruntime intra_op_num_threads")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimization level"
    )
    timeout_s: float = Field(600, gt=0, description="limit for the whole measurement")
    seed: int = Field(0, ge=0, description="seed for token ids and visiting order")


@dataclass(frozen=True)
class VariantLatency:
    prefill_ms_p50: float
    prefill_ms_p90: float
    decode_ms_p50: float
    decode_ms_p90: float
    decode_tokens_per_s: float
    n_samples: int
    decode: str  # "kv-cache" (one step through the cache) or "full-recompute" (the whole context)
    prefill_samples_ms: list[float] = field(repr=False)
    decode_samples_ms: list[float] = field(repr=False)


@dataclass(frozen=True)
class RatioCI:
    speedup: float  # baseline p50 / variant p50: > 1 means faster than the baseline
    low: float
    high: float
    within_noise: bool
    slower: bool


@dataclass(frozen=True)
class MeasureReport:
    variants: dict[str, VariantLatency]
    ratios: dict[str, dict[str, RatioCI]]  # variant -> {"prefill": ..., "decode": ...} vs baseline
    baseline: str | None
    spec: dict
    machine: dict
    measured_at: str
    probes: dict[str, list[float]] = field(default_factory=dict)  # calibration graphs: run samples, ms

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ratio_ci(
    base: Sequence[float], other: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Ratio of medians ``median(base) / median(other)`` with a paired bootstrap interval.

    Samples are paired by index (repeat ``i`` of both was taken in the same round), so
    resampling draws the same repeat indices for both.
    """
    b, o = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if b.shape != o.shape or b.size < 2:
        raise ValueError("need two paired series of equal length >= 2")
    point = float(np.median(b) / np.median(o))
    idx = np.random.default_rng(seed).integers(0, b.size, size=(n_boot, b.size))
    ratios = np.median(b[idx], axis=1) / np.median(o[idx], axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return point, float(low), float(high)


def ratio(base: Sequence[float], other: Sequence[float], seed: int = 0) -> RatioCI:
    point, low, high = bootstrap_ratio_ci(base, other, seed=seed)
    return RatioCI(point, low, high, within_noise=bool(low <= 1.0 <= high), slower=bool(high < 1.0))


# the instruction-set extensions that decide which onnxruntime kernels run (int8 dot products, AMX)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimddp", "i8mm")


def machine_info(threads: int) -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "hostname": platform.node(),  # which host measured (Ray runs spread over several)
        "cpu_model": cpu,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_start": list(os.getloadavg()),
    }


def _summarise(samples: dict[str, list[float]], decode: str) -> VariantLatency:
    pre, dec = np.asarray(samples["prefill"]), np.asarray(samples["decode"])
    return VariantLatency(
        prefill_ms_p50=float(np.percentile(pre, 50)),
        prefill_ms_p90=float(np.percentile(pre, 90)),
        decode_ms_p50=float(np.percentile(dec, 50)),
        decode_ms_p90=float(np.percentile(dec, 90)),
        decode_tokens_per_s=float(1000.0 / np.percentile(dec, 50)),
        n_samples=int(pre.size),
        decode=decode,
        prefill_samples_ms=[float(x) for x in pre],
        decode_samples_ms=[float(x) for x in dec],
    )


def run_worker(request: dict, timeout_s: float) -> dict:
    """Run the timing worker in a fresh interpreter; raise MeasurementError on any failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(request["threads"])}
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"latency measurement exceeded {timeout_s:g} s") from None
    try:
        reply = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MeasurementError(f"latency worker died (exit {proc.returncode}): {tail[0]}") from None
    if "error" in reply:
        raise MeasurementError(reply["error"])
    return reply


def measure_variants(
    paths: Mapping[str, Path],
    spec: MeasureSpec,
    baseline: str | None = None,
    probes: Mapping[str, Path] | None = None,
) -> MeasureReport:
    """Time every variant (and calibration probe) interleaved in one subprocess; ratios are
    against ``baseline``."""
    if baseline is not None and baseline not in paths:
        raise ValueError(f"baseline {baseline!r} is not among the variants")
    machine = machine_info(spec.threads)
    request = {
        "variants": {k: str(v) for k, v in paths.items()},
        "probes": {k: str(v) for k, v in (probes or {}).items()},
        **spec.model_dump(exclude={"timeout_s"}),
    }
    reply = run_worker(request, spec.timeout_s)
    machine |= {"load_avg_end": list(os.getloadavg()), "onnxruntime": reply["onnxruntime"]}
    variants = {name: _summarise(s, reply["decode"][name]) for name, s in reply["samples"].items()}
    ratios = {}
    if baseline is not None:
        b = variants[baseline]
        for name, v in variants.items():
            if name != baseline:
                ratios[name] = {
                    "prefill": ratio(b.prefill_samples_ms, v.prefill_samples_ms, spec.seed),
                    "decode": ratio(b.decode_samples_ms, v.decode_samples_ms, spec.seed),
                }
    return MeasureReport(
        variants=variants,
        ratios=ratios,
        baseline=baseline,
        spec=spec.model_dump(),
        machine=machine,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        probes=reply.get("probes", {}),
    )
