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

The repeats are split over ``processes`` worker processes run one after another, each with
its own sessions (so where weights and arenas land in memory differs between them, a source
of variation one process never samples). Every interval is then a two-level bootstrap:
resample the processes with replacement, then the repeats within each chosen one (paired:
a repeat index carries every variant's sample of that round). With one process it is the
paired bootstrap over repeats.
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

from edgescale.bench.load import RunnableSampler, machine_load
from edgescale.ortenv import child_env
from edgescale.resources import thread_cap

__all__ = ["machine_load"]  # re-exported: callers and old tests import it from here

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
    processes: int = Field(
        3,
        ge=1,
        description="worker processes the repeats are split over, one after another, each with its own "
        "sessions (at least 3 repeats each: fewer processes when repeats < 3 x processes)",
    )
    warmup: int = Field(5, ge=0, description="untimed warm-up runs per variant")
    decode_warm: int = Field(
        8,
        ge=0,
        le=32,
        description="untimed decode steps before each timed one (steady-state generation; after a prefill a "
        "12x768 int4 step took 8 steps to settle: 5.1 ms after 2, 2.5 ms after 8 and 16)",
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
    profile: bool = Field(
        True,
        description="after the timed loop, profile one prefill and one decode step of each variant on a second "
        "session (edgescale.bench.profile), and probe the memory bandwidth",
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
    sample_process: list[int] = field(default_factory=list, repr=False)  # worker process of each sample
    processes: int = 1  # how many worker processes the samples came from
    # "shared": past and present bound to one preallocated buffer, written in place (graphs whose attention
    # reads the past length from the mask); "concat": a fresh present each step; "": no KV cache
    kv_buffer: str = ""


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
    processes: int = 1  # worker processes the repeats were split over (spec.processes, or fewer)
    # spec.profile: where the time goes (edgescale.bench.profile.VariantProfile.from_dict reads each) and
    # the worker's weight-streaming probe ({"gbps", "source"}); plain data, as the worker replies
    profiles: dict[str, dict] = field(default_factory=dict)
    bandwidth_probe: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _two_level_indices(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, G * max_size)`` sample indices, -1 where padded: per draw, ``G`` processes with
    replacement, then as many repeats as each chosen one has, with replacement within it."""
    _, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]
    sizes = np.array([m.size for m in members])
    table = np.full((len(members), sizes.max()), -1)
    for g, m in enumerate(members):
        table[g, : m.size] = m
    pick = rng.integers(0, len(members), size=(n_boot, len(members)))
    size = sizes[pick][..., None]  # (n_boot, G, 1)
    within = (rng.random((*pick.shape, sizes.max())) * size).astype(np.int64)
    idx = table[pick[..., None], within]
    return np.where(np.arange(sizes.max()) < size, idx, -1).reshape(n_boot, -1)


def bootstrap_ratio_ci(
    base: Sequence[float],
    other: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    groups: Sequence[int] | None = None,
) -> tuple[float, float, float]:
    """Ratio of medians ``median(base) / median(other)`` with a paired bootstrap interval.

    Samples are paired by index (repeat ``i`` of both was taken in the same round), so
    resampling draws the same repeat indices for both. ``groups`` (the worker process of each
    sample) makes it two-level: processes with replacement, then repeats within each chosen
    process, so the interval holds the spread between processes too. One group (or None) is
    the one-level bootstrap over repeats.
    """
    b, o = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if b.shape != o.shape or b.size < 2:
        raise ValueError("need two paired series of equal length >= 2")
    g = np.zeros(b.size, dtype=np.int64) if groups is None or len(groups) == 0 else np.asarray(groups)
    if g.shape != b.shape:
        raise ValueError(f"groups: one process index per sample ({b.size}), got {g.size}")
    point = float(np.median(b) / np.median(o))
    rng = np.random.default_rng(seed)
    if np.unique(g).size == 1:
        idx = rng.integers(0, b.size, size=(n_boot, b.size))
        ratios = np.median(b[idx], axis=1) / np.median(o[idx], axis=1)
    else:
        idx = _two_level_indices(g, n_boot, rng)
        pad = idx < 0
        bb, oo = np.where(pad, np.nan, b[idx]), np.where(pad, np.nan, o[idx])
        ratios = np.nanmedian(bb, axis=1) / np.nanmedian(oo, axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return point, float(low), float(high)


def ratio(
    base: Sequence[float],
    other: Sequence[float],
    seed: int = 0,
    noise_floor: float = 0.0,
    groups: Sequence[int] | None = None,
) -> RatioCI:
    """The speed-up ``base / other`` with its interval, judged against the noise floor.

    A tie (``within_noise``) when the interval reaches into [1 / (1 + floor), 1 + floor], the
    ratios an identical graph shows (the A/A control); ``slower`` only when all of it lies below
    that band. Reaching into the band, not lying inside it, is the test: an interval that
    straddles its edge is compatible with an identical graph too. The band is symmetric in log
    space (a ratio is as far from 1 as its reciprocal), so a wide floor cannot rule out "slower"
    while still allowing "faster". With floor 0 this is "the CI holds 1". ``groups``: the worker
    process of each sample, for the two-level bootstrap (:func:`bootstrap_ratio_ci`).
    """
    if not noise_floor >= 0.0:
        raise ValueError(f"noise floor must be >= 0, got {noise_floor}")
    point, low, high = bootstrap_ratio_ci(base, other, seed=seed, groups=groups)
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


def phase_ratio(base: VariantLatency, other: VariantLatency, phase: str, seed: int, floor: float = 0.0) -> RatioCI:
    """``ratio`` of one phase's samples, two-level over the worker processes they came from."""
    b, o = getattr(base, f"{phase}_samples_ms"), getattr(other, f"{phase}_samples_ms")
    return ratio(b, o, seed, floor, groups=base.sample_process or None)


def aa_control(base: VariantLatency, copy: VariantLatency, variant: str, copy_id: str, seed: int) -> AAControl:
    """The A/A ratios (baseline / its second session) per phase, and the noise floor from each."""
    floors = {p: noise_floor(phase_ratio(base, copy, p, seed)) for p in PHASES}
    # re-judged against its own floor, so the record reads as what it is: a tie
    judged = {p: phase_ratio(base, copy, p, seed, floors[p]) for p in PHASES}
    return AAControl(variant, copy_id, judged["prefill"], judged["decode"], floors, copy)


def per_process_p50(samples: Sequence[float], sample_process: Sequence[int]) -> list[float]:
    """The median of each worker process's samples, in process order."""
    x, g = np.asarray(samples, dtype=np.float64), np.asarray(sample_process)
    return [float(np.median(x[g == i])) for i in np.unique(g)]


def split_repeats(repeats: int, processes: int) -> list[int]:
    """Repeats per worker process: ``repeats`` in all, at least 3 each (fewer processes when short)."""
    n = max(1, min(processes, repeats // 3))
    return [repeats // n + (i < repeats % n) for i in range(n)]


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


def _summarise(
    samples: dict[str, list[float]], decode: str, sample_process: Sequence[int] = (), kv_buffer: str = ""
) -> VariantLatency:
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
        sample_process=[int(x) for x in sample_process],
        processes=len(set(sample_process)) or 1,
        kv_buffer=kv_buffer,
    )


def run_worker(request: dict, timeout_s: float) -> dict:
    """Run the timing worker in a fresh interpreter; raise MeasurementError on any failure."""
    env = child_env({**os.environ, "OMP_NUM_THREADS": str(request["threads"])})  # its onnxruntime: no telemetry
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
    """Time every variant (and calibration probe) interleaved in ``spec.processes`` worker
    subprocesses, one after another; ratios are against ``baseline``.

    With ``spec.aa_control`` the A/A copy of ``baseline`` (else of the first variant) is timed
    too, as one more interleaved session; it is reported in ``aa``, never among ``variants``.
    """
    if baseline is not None and baseline not in paths:
        raise ValueError(f"baseline {baseline!r} is not among the variants")
    if reserved := [k for k in paths if k.endswith(AA_SUFFIX)]:
        raise ValueError(f"variant ids ending in {AA_SUFFIX!r} are reserved for the A/A control: {reserved}")
    aa_of = (baseline or next(iter(paths), None)) if spec.aa_control else None
    timed = {k: str(v) for k, v in paths.items()} | ({aa_of + AA_SUFFIX: str(paths[aa_of])} if aa_of else {})
    threads = thread_cap(spec.threads)  # what the worker's pool gets, and the record says
    machine = machine_info(threads)
    request = {
        "variants": timed,
        "probes": {k: str(v) for k, v in (probes or {}).items()},
        **spec.model_dump(exclude={"timeout_s", "aa_control", "processes", "profile"}),
        "threads": threads,
    }
    t0 = time.perf_counter()
    with RunnableSampler() as sampler:
        replies = _run_processes(request, spec, t0)
    wall_s = time.perf_counter() - t0
    machine |= {"load_avg_end": list(os.getloadavg()), "onnxruntime": replies[0]["onnxruntime"]}
    variants = _merge(replies)
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
                ratios[name] = {p: phase_ratio(b, v, p, spec.seed, floor[p]) for p in PHASES}
    return MeasureReport(
        variants=variants,
        ratios=ratios,
        baseline=baseline,
        spec=spec.model_dump(),
        machine=machine,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        probes={k: [x for r in replies for x in r.get("probes", {}).get(k, [])] for k in replies[0].get("probes", {})},
        aa=aa,
        load=machine_load(machine, wall_s, sampler.samples),
        processes=len(replies),
        profiles={k: p for k, p in replies[-1].get("profiles", {}).items() if k in variants},  # not the A/A copy
        bandwidth_probe=replies[-1].get("bandwidth_probe"),
    )


def _merge(replies: Sequence[dict]) -> dict[str, VariantLatency]:
    """Every variant's samples of all worker processes in one series, each tagged with its process."""
    return {
        name: _summarise(
            {p: [x for r in replies for x in r["samples"][name][p]] for p in PHASES},
            replies[0]["decode"][name],
            [i for i, r in enumerate(replies) for _ in r["samples"][name]["decode"]],
            replies[0].get("kv_buffer", {}).get(name, ""),
        )
        for name in replies[0]["samples"]
    }


def _run_processes(request: dict, spec: MeasureSpec, t0: float) -> list[dict]:
    """The interleaved measurement in one worker process per share of the repeats, one after
    another: each creates its own sessions and visits in its own order (``order_seed``)."""
    replies, shares = [], split_repeats(spec.repeats, spec.processes)
    for i, repeats in enumerate(shares):
        left = spec.timeout_s - (time.perf_counter() - t0)
        if left <= 0:
            raise MeasurementError(f"latency measurement exceeded {spec.timeout_s:g} s")
        last = spec.profile and i == len(shares) - 1  # profiled once, in the last process, after its timed loop
        replies.append(run_worker({**request, "repeats": repeats, "order_seed": spec.seed + i, "profile": last}, left))
    return replies
