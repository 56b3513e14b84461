"""Decode latency of an exported graph, predicted node by node.

A decode step is priced as the sum of its nodes as onnxruntime runs them
(:mod:`edgescale.bench.nodes`), grouped into components: one per GEMV weight class
(fp32, int8, int4, int4_acc4), the other nodes, and the fixed per-run cost.

- **On the host** (the host predictor) each node is priced by the same roofline, every
  input measured by the host's own probes (:mod:`edgescale.bench.calibrate`): the
  weight-streaming rate as a function of the working set (the GEMV ladder, read at the
  step's working set instead of a two-level cache/DRAM blend), the compute rate per
  weight class, and a fixed cost per node by op type (the GEMV ladder's narrowest probe
  less its work, the op probes' smallest tensors). For comparison, node times can also
  be looked up in the kernel tables (nn-Meter's kernel-level idea, Zhang et al. 2021).
- **On a device profile** each node is priced by a roofline (Williams et al. 2009;
  Yuan et al. 2024, arXiv:2402.16363): a GEMV costs ``max(2·K·N / F_class,
  bytes / BW(W))`` where ``BW(W)`` blends cache and DRAM bandwidth by the share of the
  working set ``W`` the last-level cache holds (``h = min(1, LLC / W)``), and ``F_class``
  is the compute rate of that kernel on that core (dot-product peak for int8 where the
  ISA has it, a dequantisation cost for low-bit weights where it has not); every node
  adds a dispatch cost and the run a fixed cost.

Both are corrected by **efficiency factors fitted from host measurements**: one scale
per component, relative least squares of measured decode time on the components of the
fitting models, each scale held inside a stated plausible range (:data:`PLAUSIBLE_SCALES`:
a scale multiplies a time this host's own probes measured, so one far from 1 would mean
the probe does not represent the kernel). Components: the streaming-or-compute time of
each GEMV weight class, ``dispatch`` (every node's fixed cost), ``attn`` (the attention
ops: KV bytes read at the context plus their fixed cost), ``other`` (the other nodes' data
movement) and ``run``. The interval is the 90% quantile of the fit's leave-one-out
relative errors. Device predictions reuse the roofline's structure with their own profile
numbers and say so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from edgescale.bench.anchor_fit import calibrated
from edgescale.bench.anchor_support import support
from edgescale.bench.calibrate import ATTENTION_OPS, OP_CLASS, VIEW_OPS
from edgescale.bench.cost import graph_cost
from edgescale.bench.nodes import DecodeGraph, decode_graph
from edgescale.bench.probes import BYTES_PER_WEIGHT
from edgescale.profiles import DeviceProfile

RUN = "run"
OTHER = "other"
DISPATCH = "dispatch"  # every node's fixed cost (thread-pool wake, kernel setup, activation quantisation)
ATTN = "attn"  # attention ops: KV cache read at the context, plus their fixed cost
GEMV_CLASSES = ("fp32", "int8", "int4", "int4_acc4")
# Plausible range of each fitted scale. A GEMV scale is 1 / the efficiency a model's kernels
# reach against the probes' measured streaming or compute rate: efficiency in [0.4, 1.25].
# The fixed costs, the attention and the other nodes' data movement may differ from their
# probes by up to 2x either way (a probe chains one op; a model interleaves them).
PLAUSIBLE_SCALES = {
    **dict.fromkeys(GEMV_CLASSES, (0.8, 2.5)),
    **dict.fromkeys((DISPATCH, ATTN, OTHER, RUN), (0.5, 2.0)),
}
DISPATCH_US_RANGE = (0.5, 50.0)  # a fitted mean per-node fixed cost outside it is not a CPU dispatch
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
    # Measured on the host (empty on a device profile, which falls back to the blend and node_us):
    stream: tuple[tuple[float, float], ...] = ()  # (working set bytes, GB/s) of weight streaming
    gemv_us: dict[str, float] = field(default_factory=dict)  # weight class -> fixed cost of one GEMV node
    op_us: dict[str, float] = field(default_factory=dict)  # op class (calibrate.OP_CLASS) -> fixed cost

    def seconds_per_byte(self, working_set_bytes: float) -> float:
        """Streaming time per byte in a step touching ``working_set_bytes``: the measured curve
        (log-log interpolation) where there is one, else the cache/DRAM blend."""
        w = max(working_set_bytes, 1.0)
        if self.stream:
            lw, lr = np.log([s[0] for s in self.stream]), np.log([s[1] for s in self.stream])
            return 1 / (math.exp(float(np.interp(math.log(w), lw, lr))) * 1e9)
        h = min(1.0, self.cache_bytes / w)
        return h / (self.bw_cache_gbps * 1e9) + (1 - h) / (self.bw_dram_gbps * 1e9)

    def fixed_us(self, op: str) -> float:
        """Fixed cost of one non-GEMV node: its op class's probe, an Add's for the rest."""
        if op in VIEW_OPS:
            return 0.5 * self.node_us
        if op in ATTENTION_OPS:  # one kernel: q·kᵀ, softmax, a·v over the cache, per head
            return self.op_us.get("Softmax", self.node_us)
        return self.op_us.get(OP_CLASS.get(op, "Add"), self.node_us)

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
        """The host's own roofline, every input measured by its probes: weight streaming
        against the working set (the GEMV ladder), per weight class the compute rate a
        decode kernel reaches (the GEMM peak for fp32, the best GEMV rate at widths ≥ 256
        for quantized kernels, whose unpacking bounds them), and the fixed costs per node:
        per op class the probe on its smallest tensors, per GEMV class the narrowest probe
        less its own roofline work (what is left is dispatch and activation quantisation)."""
        stream = tuple(tuple(x) for x in cal.streaming_gbps("fp32"))
        gops = {"fp32": cal.matmul_gops["fp32"]}
        for wc, rows in cal.gemv.items():
            if wc == "fp32":
                continue
            rates = [
                2 * 4 * int(w) ** 2 / (ms / 1000) / 1e9 for w, pts in rows.items() if int(w) >= 256 for _, ms in pts
            ]
            gops[wc] = max(rates or [cal.matmul_gops.get(wc, gops["fp32"])])
        op_us = {op: 1000 * min(p[1] for p in pts if p[0] == min(q[0] for q in pts)) for op, pts in cal.ops.items()}
        p = cls("host", gops, stream[-1][1], max(s[1] for s in stream), llc_bytes, op_us["Add"], cal.run_ms * 1000)
        p = replace(p, stream=stream, op_us=op_us)
        return replace(p, gemv_us={wc: _gemv_fixed_us(p, wc, rows) for wc, rows in cal.gemv.items()})


def _gemv_fixed_us(p: RooflineParams, wc: str, rows: dict) -> float:
    """The narrowest GEMV probe's time per node less its roofline work (µs, at least 0.1)."""
    d = min(int(w) for w in rows)
    out = []
    for ws, ms in rows[str(d)]:
        work = max(
            8 * d * d / (p.gops.get(wc, p.gops["fp32"]) * 1e9),
            4 * d * d * BYTES_PER_WEIGHT[wc] * p.seconds_per_byte(ws),
        )
        out.append(ms * 1000 - work * 1e6)
    return max(0.1, min(out))


def roofline_components(graph: DecodeGraph, p: RooflineParams) -> dict[str, float]:
    """ms per component from the per-node roofline: per GEMV class its streaming-or-compute
    time, ``dispatch`` every node's fixed cost, ``attn`` the KV cache read by the attention
    ops, ``other`` the other nodes' data movement, ``run`` the per-run cost."""
    comp: dict[str, float] = defaultdict(float)
    s_per_byte = p.seconds_per_byte(graph.working_set_bytes)
    for n in graph.nodes:
        if n.kind == "gemv":
            gops = p.gops.get(n.weight_class, p.gops["fp32"])
            comp[n.weight_class] += max(2 * n.k * n.n / (gops * 1e9), n.weight_bytes * s_per_byte) * 1000
            comp[DISPATCH] += p.gemv_us.get(n.weight_class, p.node_us) / 1000
        elif n.op in ATTENTION_OPS:  # reads K and V of the context: 2 x its largest tensor, fp32
            comp[ATTN] += (p.fixed_us(n.op) / 1e6 + 8 * n.elements * s_per_byte) * 1000
        else:  # reading and writing its largest tensor (a view copies nothing), and the constants it streams
            comp[DISPATCH] += p.fixed_us(n.op) / 1000 if p.op_us else p.node_us / 1000
            moved = 0 if n.op in VIEW_OPS else 8 * n.elements
            comp[OTHER] += (moved + 2 * n.weight_bytes) * s_per_byte * 1000
    comp[RUN] = p.run_us / 1000
    return dict(comp)


INTERVAL_QUANTILE = 0.9  # the interval covers this share of the leave-one-out errors


@dataclass(frozen=True)
class EfficiencyFit:
    """One scale per component, fitted on measured decode times (relative least squares)."""

    scales: dict[str, float]
    defaulted: list[str]  # components with no fitting data: the mean GEMV scale is used
    residual_rel_sd: float
    loo_rel_errors: list[float]
    n_points: int
    bounds: dict[str, list[float]] = field(default_factory=dict)  # component -> [low, high] the fit was held in

    def predict(self, comp: dict[str, float], z: float = 2.0) -> dict:
        """Σ scale·component, with ±``interval_rel`` (``z`` residual SDs when too few points to leave out)."""
        fallback = float(np.mean([v for k, v in self.scales.items() if k in GEMV_CLASSES] or [1.0]))
        ms = sum(self.scales.get(k, fallback) * v for k, v in comp.items())
        rel = self.interval_rel if self.loo_rel_errors else z * self.residual_rel_sd
        return {"ms": ms, "low_ms": ms * (1 - rel), "high_ms": ms * (1 + rel), "components_ms": comp}

    @property
    def interval_sd(self) -> float:
        """Relative SD for intervals: leave-one-out residuals when there are enough points."""
        errs = self.loo_rel_errors if len(self.loo_rel_errors) >= 4 else []
        return float(np.sqrt(np.mean(np.square(errs)))) if errs else self.residual_rel_sd

    @property
    def interval_rel(self) -> float:
        """Half-width of the interval, relative: the 90% quantile of |leave-one-out error|
        (2 residual SDs without enough points to leave out)."""
        if len(self.loo_rel_errors) < 4:
            return 2 * self.residual_rel_sd
        return float(np.quantile(np.abs(self.loo_rel_errors), INTERVAL_QUANTILE))

    def to_dict(self) -> dict:
        return asdict(self)


# Weight of the prior "every scale is 1" (the roofline as measured) against one point's
# squared relative error: enough to keep a scale the points cannot pin down (a quick
# calibration has 8 points for 6 scales) from drifting to a bound while another inflates.
PRIOR_WEIGHT = 0.01


def _fit_rel(X: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    from scipy.optimize import lsq_linear

    w = 1 / y  # every point counts by its relative error
    k = X.shape[1]
    A = np.vstack([X * w[:, None], np.sqrt(PRIOR_WEIGHT) * np.eye(k)])
    b = np.concatenate([y * w, np.sqrt(PRIOR_WEIGHT) * np.ones(k)])
    return lsq_linear(A, b, bounds=(lo, hi), method="bvls").x


def fit_efficiency(
    components: list[dict[str, float]], measured_ms: list[float], bounds: dict | None = None
) -> EfficiencyFit:
    """Fit a scale per component so Σ scale·component matches the measured decode times, each
    scale inside its range (``bounds``, default :data:`PLAUSIBLE_SCALES`; [0, ∞) for a component
    not listed there). Leave-one-out refits give the interval."""
    bounds = PLAUSIBLE_SCALES if bounds is None else bounds
    names = sorted({k for c in components for k, v in c.items() if v > 0})
    X = np.array([[c.get(k, 0.0) for k in names] for c in components])
    y = np.asarray(measured_ms, dtype=float)
    lo = np.array([bounds.get(k, (0.0, np.inf))[0] for k in names], dtype=float)
    hi = np.array([bounds.get(k, (0.0, np.inf))[1] for k in names], dtype=float)
    coef = _fit_rel(X, y, lo, hi)
    rel = X @ coef / y - 1
    loo = []
    if len(y) > len(names) + 1:
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            loo.append(float(X[i] @ _fit_rel(X[keep], y[keep], lo, hi) / y[i] - 1))
    return EfficiencyFit(
        scales=dict(zip(names, coef.tolist(), strict=True)),
        defaulted=[k for k in (*GEMV_CLASSES, DISPATCH, ATTN, OTHER, RUN) if k not in names],
        residual_rel_sd=float(np.std(rel)),
        loo_rel_errors=loo,
        n_points=len(y),
        bounds={k: [float(a), float(b)] for k, a, b in zip(names, lo, hi, strict=True)},
    )


def predict_on_device(path, device: DeviceProfile, context: int, prompt_len: int, graph=None) -> dict:
    """Decode (per-node roofline) and prefill of an exported variant on a device profile.

    The profile's efficiencies are its priors, or fitted to its calibration anchors; the
    interval comes from its validation anchors (an assumed ±50% without any), widened where
    the variant's size or bits per weight lie outside its anchors' range
    (:mod:`edgescale.bench.anchor_support`; size and bits are those of the GEMV weights).
    """
    device = calibrated(device)
    graph = graph or decode_graph(path, context)
    params = RooflineParams.from_profile(device)
    comp = roofline_components(graph, params)
    decode_s = sum(comp.values()) / 1000
    n_weights = sum(g.k * g.n for g in graph.gemvs)
    bits = 8 * sum(g.weight_bytes for g in graph.gemvs) / max(1, n_weights)
    sup = support(device, max(1, n_weights), bits or 32.0)
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
        "decode_ms_low": decode_s * 1000 / sup.factor,
        "decode_ms_high": decode_s * 1000 * sup.factor,
        "interval": sup.why(),
        "anchors": sup.count,
        "nearest_anchor": sup.nearest_text(),
        "extrapolated": sup.extrapolated,
        "prefill_ms": prefill_s * 1000,
        "prefill_ms_low": prefill_s * 1000 / sup.factor,
        "prefill_ms_high": prefill_s * 1000 * sup.factor,
        "decode_tokens_per_s": 1 / decode_s,
        "energy_mj_per_token": device.power_w.value * decode_s * 1000,
        "energy_note": "estimate: power_w x decode time",
        "components_ms": comp,
        "decode_context": context,
        "prompt_len": n,
        "assumed": params.assumed,
    }
