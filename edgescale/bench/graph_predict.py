"""Decode latency of an exported graph, predicted node by node.

A decode step is priced as the sum of its nodes as onnxruntime runs them
(:mod:`edgescale.bench.nodes`), grouped into components: one per GEMV weight class
(fp32, int8, int4, int4_acc4), the other nodes, and the fixed per-run cost.

- **On the host** each node's time is looked up in the host's measured kernel tables
  (:mod:`edgescale.bench.calibrate`: nn-Meter's kernel-level idea, Zhang et al. 2021,
  with the step's working set as a second key so a kernel is priced in the cache or the
  DRAM regime of the model it sits in).
- **On a device profile** each node is priced by a roofline (Williams et al. 2009;
  Yuan et al. 2024, arXiv:2402.16363): a GEMV costs ``max(2·K·N / F_class,
  bytes / BW(W))`` where ``BW(W)`` blends cache and DRAM bandwidth by the share of the
  working set ``W`` the last-level cache holds (``h = min(1, LLC / W)``), and ``F_class``
  is the compute rate of that kernel on that core (dot-product peak for int8 where the
  ISA has it, a dequantisation cost for low-bit weights where it has not); every node
  adds a dispatch cost and the run a fixed cost.

Both are corrected by **efficiency factors fitted from host measurements**: one scale
per component, non-negative relative least squares of measured decode time on the
components of the fitting models. Intervals come from the leave-one-out residuals of
that fit. Device predictions reuse the roofline's host-fitted factors (the same model,
its own profile numbers) and say so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from edgescale.bench.cost import graph_cost
from edgescale.bench.nodes import DecodeGraph, decode_graph
from edgescale.bench.predict import anchor_interval, calibrated
from edgescale.profiles import DeviceProfile

RUN = "run"
OTHER = "other"
# Roofline priors for devices, each an assumption flagged where used.
NODE_US = 2.0  # dispatch per node on phone/board cores (host measures ~1.2 µs for an Add)
RUN_US = 20.0  # session.run fixed cost (host measures ~16 µs)
CACHE_BW_FACTOR = 3.0  # last-level-cache streaming rate / effective DRAM rate
DEQUANT_OPS_PER_WEIGHT = 2.0  # extra ops to unpack a 4-bit weight on the fp32 path
INT8_NO_DOT_FACTOR = 2.0  # int8 MACs without dot-product/VNNI: widening multiplies ≈ 2 × fp32 rate
_DOT = {"dotprod", "i8mm", "avx512_vnni", "avx_vnni", "amx"}


def host_components(graph: DecodeGraph, cal) -> dict[str, float]:
    """ms per component from the host's kernel tables."""
    comp: dict[str, float] = defaultdict(float)
    w = graph.working_set_bytes
    stream = cal.streaming_gbps("fp32")
    bw = float(np.exp(np.interp(math.log(max(w, 1.0)), np.log([s[0] for s in stream]), np.log([s[1] for s in stream]))))
    for n in graph.nodes:
        if n.kind == "gemv":
            comp[n.weight_class] += cal.gemv_ms(n.weight_class, n.k, n.n, w)
        else:  # constants a node streams every step (dequantising a table) at the weight-streaming rate
            comp[OTHER] += cal.op_ms(n.op, n.elements) + n.weight_bytes / (bw * 1e9) * 1000
    comp[RUN] = cal.run_ms
    return dict(comp)


@dataclass(frozen=True)
class RooflineParams:
    """What the roofline needs of a device: compute per kernel class, bandwidths, cache,
    per-node and per-run costs, and the assumed inputs behind them."""

    device: str
    gops: dict[str, float]  # weight class -> GOP/s of its GEMV kernel
    bw_dram_gbps: float
    bw_cache_gbps: float
    cache_bytes: float
    node_us: float
    run_us: float
    assumed: list[str] = field(default_factory=list)

    @classmethod
    def from_profile(cls, d: DeviceProfile) -> RooflineParams:
        eff = d.efficiency.compute.value
        fp32 = d.peak_gops.fp32.value * eff
        dot = bool(_DOT & set(d.cpu.isa)) and d.peak_gops.int8 is not None
        int8 = d.peak_gops.int8.value * eff if dot else INT8_NO_DOT_FACTOR * fp32
        gops = {
            "fp32": fp32,
            "int8": int8,
            "int4": fp32 / (1 + DEQUANT_OPS_PER_WEIGHT / 2),
            "int4_acc4": int8 / (1 + DEQUANT_OPS_PER_WEIGHT / 2),
        }
        bw = d.decode_gbps()
        used = {"memory.peak_gbps", "efficiency.bw", "efficiency.compute", "peak_gops.fp32", "cpu.last_level_cache_mb"}
        if dot:
            used.add("peak_gops.int8")
        assumed = sorted(f for f in d.assumed_fields() if f in used) + [
            f"node dispatch {NODE_US:g} us, run {RUN_US:g} us, cache BW {CACHE_BW_FACTOR:g} x DRAM",
            f"4-bit dequantisation {DEQUANT_OPS_PER_WEIGHT:g} ops/weight"
            + ("" if dot else f"; int8 without dot-product at {INT8_NO_DOT_FACTOR:g} x fp32"),
        ]
        return cls(
            d.id, gops, bw, CACHE_BW_FACTOR * bw, d.cpu.last_level_cache_mb.value * 1e6, NODE_US, RUN_US, assumed
        )

    @classmethod
    def from_calibration(cls, cal, llc_bytes: float) -> RooflineParams:
        """The host's own roofline, from what it measured: weight streaming in cache and from
        DRAM, per-node and per-run costs, and per weight class the compute rate a decode
        kernel reaches — the GEMM peak for fp32, the best GEMV rate (widths ≥ 256, where
        overhead no longer dominates) for quantized kernels, whose unpacking bounds them."""
        stream = cal.streaming_gbps("fp32")
        gops = {"fp32": cal.matmul_gops["fp32"]}
        for wc, rows in cal.gemv.items():
            if wc == "fp32":
                continue
            rates = [
                2 * 4 * int(w) ** 2 / (ms / 1000) / 1e9 for w, pts in rows.items() if int(w) >= 256 for _, ms in pts
            ]
            gops[wc] = max(rates or [cal.matmul_gops.get(wc, gops["fp32"])])
        add = min(p[1] for p in cal.ops["Add"])
        return cls(
            "host",
            gops,
            stream[-1][1],
            max(s[1] for s in stream),
            llc_bytes,
            add * 1000,
            cal.run_ms * 1000,
        )


def roofline_components(graph: DecodeGraph, p: RooflineParams) -> dict[str, float]:
    """ms per component from the per-node roofline."""
    comp: dict[str, float] = defaultdict(float)
    h = min(1.0, p.cache_bytes / max(graph.working_set_bytes, 1.0))
    s_per_byte = h / (p.bw_cache_gbps * 1e9) + (1 - h) / (p.bw_dram_gbps * 1e9)
    for n in graph.nodes:
        if n.kind == "gemv":
            gops = p.gops.get(n.weight_class, p.gops["fp32"])
            t = max(2 * n.k * n.n / (gops * 1e9), n.weight_bytes * s_per_byte) + p.node_us / 1e6
            comp[n.weight_class] += t * 1000
        else:  # dispatch, plus reading and writing its largest tensor
            comp[OTHER] += (p.node_us / 1e6 + (8 * n.elements + 2 * n.weight_bytes) * s_per_byte) * 1000
    comp[RUN] = p.run_us / 1000
    return dict(comp)


@dataclass(frozen=True)
class EfficiencyFit:
    """One scale per component, fitted on measured decode times (relative least squares)."""

    scales: dict[str, float]
    defaulted: list[str]  # components with no fitting data: the mean GEMV scale is used
    residual_rel_sd: float
    loo_rel_errors: list[float]
    n_points: int

    def predict(self, comp: dict[str, float], z: float = 2.0) -> dict:
        fallback = float(np.mean([v for k, v in self.scales.items() if k not in (OTHER, RUN)] or [1.0]))
        ms = sum(self.scales.get(k, fallback) * v for k, v in comp.items())
        rel = z * self.interval_sd
        return {"ms": ms, "low_ms": ms * (1 - rel), "high_ms": ms * (1 + rel), "components_ms": comp}

    @property
    def interval_sd(self) -> float:
        """Relative SD for intervals: leave-one-out residuals when there are enough points."""
        errs = self.loo_rel_errors if len(self.loo_rel_errors) >= 4 else []
        return float(np.sqrt(np.mean(np.square(errs)))) if errs else self.residual_rel_sd

    def to_dict(self) -> dict:
        return asdict(self)


# Weight of the prior "every scale is 1" (the roofline as measured) against one point's
# squared relative error: enough to keep a scale the points cannot pin down (a quick
# calibration has 8 points for 6 scales) from collapsing to 0 while another inflates.
PRIOR_WEIGHT = 0.01


def _nnls_rel(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    w = 1 / y  # every point counts by its relative error
    k = X.shape[1]
    A = np.vstack([X * w[:, None], np.sqrt(PRIOR_WEIGHT) * np.eye(k)])
    b = np.concatenate([y * w, np.sqrt(PRIOR_WEIGHT) * np.ones(k)])
    return nnls(A, b)[0]


def fit_efficiency(components: list[dict[str, float]], measured_ms: list[float]) -> EfficiencyFit:
    """Fit a scale per component so Σ scale·component matches the measured decode times."""
    names = sorted({k for c in components for k, v in c.items() if v > 0})
    X = np.array([[c.get(k, 0.0) for k in names] for c in components])
    y = np.asarray(measured_ms, dtype=float)
    coef = _nnls_rel(X, y)
    rel = X @ coef / y - 1
    loo = []
    if len(y) > len(names) + 1:
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            c = _nnls_rel(X[keep], y[keep])
            loo.append(float(X[i] @ c / y[i] - 1))
    all_classes = ("fp32", "int8", "int4", "int4_acc4", OTHER, RUN)
    return EfficiencyFit(
        scales=dict(zip(names, coef.tolist(), strict=True)),
        defaulted=[k for k in all_classes if k not in names],
        residual_rel_sd=float(np.std(rel)),
        loo_rel_errors=loo,
        n_points=len(y),
    )


def predict_on_device(path, device: DeviceProfile, context: int, prompt_len: int, graph=None) -> dict:
    """Decode (per-node roofline) and prefill of an exported variant on a device profile.

    The profile's efficiencies are its priors, or fitted to its calibration anchors; the
    interval comes from its validation anchors (an assumed ±50% without any).
    """
    device = calibrated(device)
    graph = graph or decode_graph(path, context)
    params = RooflineParams.from_profile(device)
    comp = roofline_components(graph, params)
    decode_s = sum(comp.values()) / 1000
    rel, why = anchor_interval(device)
    cost = graph_cost(path)
    bw = params.bw_dram_gbps * 1e9
    share8 = sum(v for k, v in graph.weight_bytes_by_class().items() if k != "fp32") / max(1.0, graph.working_set_bytes)
    compute = params.gops["int8" if share8 > 0.5 else "fp32"] * 1e9
    n = prompt_len
    prefill_s = (
        max(
            (cost.flops_per_token * n + cost.attention_flops_per_context_token * n * n / 2) / compute,
            cost.weight_bytes / bw,
        )
        + len(graph.nodes) * params.node_us / 1e6
    )
    return {
        "kind": "predicted",
        "latency_source": "predicted",
        "model": "per-node roofline (edgescale.bench.graph_predict)",
        "decode_ms": decode_s * 1000,
        "decode_ms_low": decode_s * 1000 * (1 - rel),
        "decode_ms_high": decode_s * 1000 * (1 + rel),
        "interval": why,
        "prefill_ms": prefill_s * 1000,
        "decode_tokens_per_s": 1 / decode_s,
        "energy_mj_per_token": device.power_w.value * decode_s * 1000,
        "energy_note": "estimate: power_w x decode time",
        "components_ms": comp,
        "decode_context": context,
        "prompt_len": n,
        "assumed": params.assumed,
    }
