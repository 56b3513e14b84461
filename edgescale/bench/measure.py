"""Host latency of ONNX causal LMs: prefill and per-token decode, interleaved, with CIs.

The timing runs in a subprocess (``_ort_worker.py``) that imports only onnxruntime
and numpy. Variants are timed interleaved — each repeat visits every variant once in a
shuffled order — so slow drift of the machine hits all of them alike, and each
speed-up is the ratio of medians with a paired bootstrap 95% interval over repeats.

An A/A control rides along in every measurement: the baseline's file is loaded a second
time, as its own session under the reserved id ``"<baseline>~aa"``, and timed in the same
shuffled loop. Its ratio to the baseline is what "no difference" measures as on this
machine (two sessions of one file are not timed alike: where weights and arenas land in
memory, visiting order); the noise floor taken from it widens "within noise" for every
other ratio, so two identical graphs are a tie even when their interval excludes 1.0.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

WORKER = Path(__file__).with_name("_ort_worker.py")
AA_SUFFIX = "~aa"  # the A/A copy's id: the baseline's id with this suffix (reserved)
PHASES = ("prefill", "decode")


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
    aa_control: bool = Field(
        True,
        description="also time the baseline's file as a second session (an A/A control) and take "
        "the noise floor of every speed-up from it",
    )


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
class AAControl:
    """The baseline against a second session of its own file, timed interleaved with the variants."""

    variant: str  # the variant timed twice
    copy: str  # the reserved id its second session was timed under
    prefill: RatioCI
    decode: RatioCI
    noise_floor: dict[str, float]  # phase -> a speed-up reaching into [1/(1 + floor), 1 + floor] is a tie
    copy_latency: VariantLatency = field(repr=False)


@dataclass(frozen=True)
class MeasureReport:
    variants: dict[str, VariantLatency]
    ratios: dict[str, dict[str, RatioCI]]  # variant -> {"prefill": ..., "decode": ...} vs baseline
    baseline: str | None
    spec: dict
    machine: dict
    measured_at: str
    probes: dict[str, list[float]] = field(default_factory=dict)  # calibration graphs: run samples, ms
    aa: AAControl | None = None  # None: no variants, or spec.aa_control off
    load: dict | None = None  # whether the machine was loaded: see machine_load()

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


def ratio(base: Sequence[float], other: Sequence[float], seed: int = 0, noise_floor: float = 0.0) -> RatioCI:
    """The speed-up ``base / other`` with its interval, judged against the noise floor.

    A tie (``within_noise``) when the interval reaches into [1 / (1 + floor), 1 + floor], the
    ratios an identical graph shows (the A/A control); ``slower`` only when all of it lies below
    that band. Reaching into the band, not lying inside it, is the test: an interval that
    straddles its edge is compatible with an identical graph too. The band is symmetric in log
    space (a ratio is as far from 1 as its reciprocal), so a wide floor cannot rule out "slower"
    while still allowing "faster". With floor 0 this is "the CI holds 1".
    """
    if not noise_floor >= 0.0:
        raise ValueError(f"noise floor must be >= 0, got {noise_floor}")
    point, low, high = bootstrap_ratio_ci(base, other, seed=seed)
    top, bottom = 1.0 + noise_floor, 1.0 / (1.0 + noise_floor)
    return RatioCI(point, low, high, within_noise=bool(low <= top and high >= bottom), slower=bool(high < bottom))


def noise_floor(aa: RatioCI) -> float:
    """How far from 1 the ratio of two identical graphs reaches: the A/A interval's bound
    farthest from 1, as a relative departure (``high - 1``, or ``1 / low - 1`` below 1).

    Not the half-width alone: the A/A point itself sits off 1 (1.010 between two graphs of one
    shape on the default run), and that offset is as much noise as the resampling spread. The
    bound farthest from 1 holds both, so the A/A is a tie against its own floor by construction.
    """
    return float(max(0.0, aa.high - 1.0, 1.0 / aa.low - 1.0 if aa.low > 0 else math.inf))


def aa_control(base: VariantLatency, copy: VariantLatency, variant: str, copy_id: str, seed: int) -> AAControl:
    """The A/A ratios (baseline / its second session) per phase, and the noise floor from each."""
    raw = {p: ratio(getattr(base, f"{p}_samples_ms"), getattr(copy, f"{p}_samples_ms"), seed) for p in PHASES}
    floors = {p: noise_floor(r) for p, r in raw.items()}
    # re-judged against its own floor, so the record reads as what it is: a tie
    judged = {
        p: ratio(getattr(base, f"{p}_samples_ms"), getattr(copy, f"{p}_samples_ms"), seed, floors[p]) for p in PHASES
    }
    return AAControl(variant, copy_id, judged["prefill"], judged["decode"], floors, copy)


def machine_load(machine: dict, wall_s: float) -> dict:
    """Whether other work competed for the cores while timing, from the 1-minute load averages.

    The worker keeps ``threads`` cores busy, so other work fits in ``logical_cpus - threads``
    cores (+0.5: the parent and short-lived daemons). The end reading includes the worker
    itself: up to ``threads * (1 - exp(-wall_s / 60))`` of it (the kernel's 1-minute average
    decays with a 60 s time constant), taken off as an upper bound so the flag errs toward
    staying quiet only by the worker's own share. The start reading lags: it still holds
    the minute before the measurement (for a pipeline, its own loss scoring), which is work
    that could have competed and is reported as such.
    """
    cpus, threads = machine.get("logical_cpus") or 1, machine.get("threads") or 1
    start, end = machine["load_avg_start"][0], machine["load_avg_end"][0]
    own = threads * (1.0 - math.exp(-wall_s / 60.0))
    limit = cpus - threads + 0.5
    others = max(start, end - own)
    return {
        "loaded": bool(others > limit),
        "load_avg_1min_start": start,
        "load_avg_1min_end": end,
        "own_share_end": round(own, 3),
        "limit": limit,
        "logical_cpus": cpus,
        "threads": threads,
        "wall_s": round(wall_s, 2),
    }


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
    against ``baseline``.

    With ``spec.aa_control`` the A/A copy of ``baseline`` (else of the first variant) is timed
    too, as one more interleaved session; it is reported in ``aa``, never among ``variants``.
    """
    if baseline is not None and baseline not in paths:
        raise ValueError(f"baseline {baseline!r} is not among the variants")
    if reserved := [k for k in paths if k.endswith(AA_SUFFIX)]:
        raise ValueError(f"variant ids ending in {AA_SUFFIX!r} are reserved for the A/A control: {reserved}")
    aa_of = (baseline or next(iter(paths), None)) if spec.aa_control else None
    timed = {k: str(v) for k, v in paths.items()} | ({aa_of + AA_SUFFIX: str(paths[aa_of])} if aa_of else {})
    machine = machine_info(spec.threads)
    request = {
        "variants": timed,
        "probes": {k: str(v) for k, v in (probes or {}).items()},
        **spec.model_dump(exclude={"timeout_s", "aa_control"}),
    }
    t0 = time.perf_counter()
    reply = run_worker(request, spec.timeout_s)
    wall_s = time.perf_counter() - t0
    machine |= {"load_avg_end": list(os.getloadavg()), "onnxruntime": reply["onnxruntime"]}
    variants = {name: _summarise(s, reply["decode"][name]) for name, s in reply["samples"].items()}
    aa = None
    if aa_of:
        copy = variants.pop(aa_of + AA_SUFFIX)
        aa = aa_control(variants[aa_of], copy, aa_of, aa_of + AA_SUFFIX, spec.seed)
    ratios = {}
    if baseline is not None:
        b = variants[baseline]
        floor = aa.noise_floor if aa else dict.fromkeys(PHASES, 0.0)
        for name, v in variants.items():
            if name != baseline:
                ratios[name] = {
                    p: ratio(getattr(b, f"{p}_samples_ms"), getattr(v, f"{p}_samples_ms"), spec.seed, floor[p])
                    for p in PHASES
                }
    return MeasureReport(
        variants=variants,
        ratios=ratios,
        baseline=baseline,
        spec=spec.model_dump(),
        machine=machine,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        probes=reply.get("probes", {}),
        aa=aa,
        load=machine_load(machine, wall_s),
    )
