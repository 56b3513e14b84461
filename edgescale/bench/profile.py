"""Where a variant's time goes: onnxruntime's profile of one prefill and one decode step, and
the decode step against the memory-bandwidth limit.

The profile is taken by the measurement worker (``_ort_worker.py``, request key ``profile``)
after its timed loop, on a second session of the same file, so the timed samples never carry
the profiler. The profiler adds a fixed cost per node (a decode step of a 6×384 fp32 GPT runs
about 2.5× slower with it on), so what it says in absolute µs overstates small nodes: the
headline is each op type's SHARE of the kernel time, and its node counts, not its ms.

A decode step streams every weight once plus the KV cache at its context, so it cannot take
less than ``(weight bytes + KV bytes) / bandwidth`` (the limit). Decode efficiency is that
limit over the measured (interleaved) decode p50; ``(p50 - limit) / n_layer`` is the time per
layer that is not weight streaming: dispatch, attention, activation quantization, KV copies.
The bandwidth is the weight-streaming rate of an ``edgescale calibrate`` run at the working
set nearest the step's bytes when one is given, else the worker's streaming probe (a 512 MB
matrix-vector product: DRAM).

Example::

    prof = profile_variant("model.onnx")
    prof.decode.top(3)  # [("MatMulNBits", 0.46), ("Concat", 0.13), ("Transpose", 0.13)]
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgescale.bench.measure import MeasureSpec, run_worker

PROFILE_PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class PhaseProfile:
    """One profiled ``session.run``: kernel µs per op type, nodes per execution provider."""

    kernel_us_by_op: dict[str, float]
    nodes_by_provider: dict[str, int]
    nodes_run: int  # kernels executed in this run
    run_us: float  # the whole model_run, profiler overhead included

    @property
    def kernel_us(self) -> float:
        return float(sum(self.kernel_us_by_op.values()))

    def shares(self) -> dict[str, float]:
        """Op type -> its share of the run's kernel time, largest first (sums to 1)."""
        total = self.kernel_us or 1.0
        return {op: us / total for op, us in sorted(self.kernel_us_by_op.items(), key=lambda kv: -kv[1])}

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        return list(self.shares().items())[:n]


@dataclass(frozen=True)
class VariantProfile:
    prefill: PhaseProfile
    decode: PhaseProfile
    graph_nodes: int  # nodes of the optimized graph (every one that ran in a profiled step)

    @classmethod
    def from_dict(cls, d: dict) -> VariantProfile:
        phases = {p: PhaseProfile(**d[p]) for p in PROFILE_PHASES}
        return cls(**phases, graph_nodes=int(d["graph_nodes"]))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Bandwidth:
    gbps: float  # GB/s, 1e9 bytes
    source: str  # where the number comes from, in words


@dataclass(frozen=True)
class DecodeLimit:
    """One decode step's bytes against the bandwidth, and the measured p50 against that limit."""

    weight_bytes: float
    kv_bytes: float
    bandwidth_gbps: float
    bandwidth_source: str
    limit_ms: float  # (weight + KV bytes) / bandwidth
    decode_ms_p50: float
    efficiency: float  # limit_ms / decode_ms_p50: 1 is at the bandwidth limit
    non_weight_us_per_layer: float | None  # (p50 - limit) / n_layer; None without a layer count


def decode_limit(
    weight_bytes: float, kv_bytes: float, bandwidth: Bandwidth, decode_ms_p50: float, n_layer: int | None
) -> DecodeLimit:
    """Decode efficiency = ``(bytes / bandwidth) / decode_ms_p50``, and the non-weight time per layer."""
    if not (bandwidth.gbps > 0 and decode_ms_p50 > 0):
        raise ValueError(f"need a positive bandwidth and decode time, got {bandwidth.gbps} GB/s, {decode_ms_p50} ms")
    limit_ms = (weight_bytes + kv_bytes) / (bandwidth.gbps * 1e9) * 1e3
    per_layer = (decode_ms_p50 - limit_ms) * 1e3 / n_layer if n_layer else None
    return DecodeLimit(
        weight_bytes=float(weight_bytes),
        kv_bytes=float(kv_bytes),
        bandwidth_gbps=float(bandwidth.gbps),
        bandwidth_source=bandwidth.source,
        limit_ms=limit_ms,
        decode_ms_p50=float(decode_ms_p50),
        efficiency=limit_ms / decode_ms_p50,
        non_weight_us_per_layer=per_layer,
    )


def calibrated_bandwidth(cal, working_set_bytes: float) -> Bandwidth:
    """The weight-streaming rate of a :class:`~edgescale.bench.calibrate.HostCalibration` (fp32
    GEMV chains) at the probed working set nearest ``working_set_bytes``, in log scale: a
    cache-resident model is held to the cache's rate, a DRAM-bound one to DRAM's."""
    points = cal.streaming_gbps("fp32")
    if not points:
        raise ValueError("the calibration has no fp32 GEMV probes")
    ws, rate = min(points, key=lambda p: abs(math.log(p[0]) - math.log(max(working_set_bytes, 1.0))))
    return Bandwidth(rate, f"calibration ({cal.measured_at}): fp32 weight streaming at a {ws / 1e6:.0f} MB working set")


def probe_bandwidth(mbytes: int = 512, tries: int = 5) -> Bandwidth:
    """In this process, the probe the worker runs (``_ort_worker.stream_bandwidth``, which imports
    nothing from edgescale, hence the second copy of these lines): a float32 matrix-vector product
    over ``mbytes`` of weights (numpy's BLAS, all cores), best of ``tries``."""
    rows = mbytes * (1 << 20) // 4 // 8192
    weights, x = np.ones((rows, 8192), np.float32), np.ones(rows, np.float32)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter_ns()
        x @ weights
        best = min(best, time.perf_counter_ns() - t)
    source = f"probe: float32 matrix-vector product over {mbytes} MB (numpy BLAS), best of {tries}"
    return Bandwidth(weights.nbytes / best, source)


def profile_variant(path: Path | str, spec: MeasureSpec | None = None) -> VariantProfile:
    """Profile one prefill and one decode step of the ONNX causal LM at ``path`` in a fresh
    worker process (``spec``: a :class:`~edgescale.bench.measure.MeasureSpec`, for the prompt
    length, decode context, threads and optimization level; its repeats are not used)."""
    spec = spec or MeasureSpec()
    request = {
        "variants": {"model": str(path)},
        **spec.model_dump(exclude={"timeout_s", "aa_control", "processes", "profile"}),
        "repeats": 0,
        "profile": True,
    }
    return VariantProfile.from_dict(run_worker(request, spec.timeout_s)["profiles"]["model"])


def host_profile_fields(latency: dict, vid: str, weight_bytes: float, kv_bytes: float, n_layer: int | None) -> dict:
    """``profile`` and ``decode_limit`` of a variant's ``latency.host`` from a measurement record
    (:meth:`MeasureReport.to_dict`, as the pipeline stores it); empty where it was not profiled."""
    raw = (latency.get("profiles") or {}).get(vid)
    if raw is None:
        return {}
    prof = VariantProfile.from_dict(raw)
    phases = {p: {"share_by_op": getattr(prof, p).shares(), **raw[p]} for p in PROFILE_PHASES}
    for p in PROFILE_PHASES:  # largest first, as the shares
        phases[p]["kernel_us_by_op"] = {op: raw[p]["kernel_us_by_op"][op] for op in phases[p]["share_by_op"]}
    out = {"profile": {**phases, "graph_nodes": prof.graph_nodes}}
    probe, p50 = latency.get("bandwidth_probe"), latency["variants"][vid].get("decode_ms_p50")
    if probe and p50:
        out["decode_limit"] = asdict(decode_limit(weight_bytes, kv_bytes, Bandwidth(**probe), p50, n_layer))
    return out
