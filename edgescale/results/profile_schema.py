"""Where a variant's host time goes (``latency.host.profile``) and its decode step against the
bandwidth limit (``latency.host.decode_limit``): :mod:`edgescale.bench.profile` measures both.

Optional in :class:`~edgescale.results.schema.HostLatency`: results written before them read as before.
"""

from __future__ import annotations

from pydantic import Field

from edgescale.results.base import Number, Strict


class ProfilePhase(Strict):
    share_by_op: dict[str, float] = Field(
        description="op type -> share of the step's kernel time, largest first (the headline: the profiler "
        "adds a cost per node, so absolute times overstate small nodes)"
    )
    kernel_us_by_op: dict[str, Number] = Field(description="op type -> kernel µs in the profiled step")
    nodes_by_provider: dict[str, int] = Field(description="execution provider -> nodes it ran in the step")
    nodes_run: int = Field(description="kernels executed in the step")
    run_us: Number = Field(description="the whole profiled session.run, µs, profiler overhead included")


class HostProfile(Strict):
    prefill: ProfilePhase
    decode: ProfilePhase
    graph_nodes: int = Field(description="nodes of the optimized graph onnxruntime ran")


class DecodeLimit(Strict):
    weight_bytes: Number = Field(description="weight bytes one decode step streams (cost.weight_bytes)")
    kv_bytes: Number = Field(description="KV-cache bytes at the decode context")
    bandwidth_gbps: float = Field(description="memory bandwidth the limit assumes, GB/s")
    bandwidth_source: str = Field(
        description="where bandwidth_gbps comes from: a calibration or the worker's streaming probe"
    )
    limit_ms: float = Field(description="(weight + KV bytes) / bandwidth")
    decode_ms_p50: float = Field(description="the measured (interleaved) decode p50")
    efficiency: float = Field(description="limit_ms / decode_ms_p50: 1 is at the bandwidth limit")
    non_weight_us_per_layer: float | None = Field(
        None, description="(decode_ms_p50 - limit_ms) / n_layer, µs: time per layer that is not streaming bytes"
    )
