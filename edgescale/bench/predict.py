"""Latency prediction on a device profile: the analytic (no-graph) roofline.

Decode, batch 1, streams every weight and the KV cache read so far for each token
(shared/reference/devices.md §4; kipply, "Transformer Inference Arithmetic", 2022;
Yuan et al. 2024, arXiv:2402.16363):

    t_decode  = max(bytes / BW_decode, 2·P / F) + overhead,   bytes = P·b_w/8 + KV(s)
    t_prefill = max(2·P·n / F + 4·L·n²·d / F, P·b_w/8 / BW_decode)
    KV(s)     = 2 · L · d · (b_kv/8) · s        (multi-head attention; GQA models need less)

with BW_decode = peak bandwidth × bandwidth efficiency and F = peak ops/s at the
compute precision × compute efficiency (int8 dot-product peak for ≤ 8-bit weights
where the cores have dot-product/VNNI instructions, else the fp32 peak: the weights are
dequantised first). L and d come from the planner's shape for P. Every prediction
lists the assumed numbers it used; energy is power × time, an estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgescale.profiles import DeviceProfile

RUNTIME_OVERHEAD = 0.10  # memory beyond weights + KV (activations, runtime), an assumption
# Dispatch cost per graph node when a profile gives none: onnxruntime's CPU EP spends about
# 1 µs a node on this project's x86 host (s0 fp32 decode: 0.071 ms for 69 nodes, runs/default);
# 2 µs is assumed for the slower phone and board cores. Small models are dominated by it.
DEFAULT_NODE_OVERHEAD_US = 2.0


@dataclass(frozen=True)
class Prediction:
    device: str
    params: float
    bits: float
    kv_bits: float
    context: int
    prompt_tokens: int
    n_layer: int
    d_model: int
    weight_bytes: float
    kv_bytes: float
    memory_bytes: float
    usable_bytes: float
    fits: bool
    decode_ms: float
    decode_tokens_per_s: float
    decode_bound: str  # "memory" | "compute"
    prefill_ms: float
    prefill_tokens_per_s: float
    energy_mj_per_token: float
    latency_source: str = "predicted"
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _compute_ops(device: DeviceProfile, bits: float) -> tuple[float, str]:
    peak = device.peak_gops
    low_bit_dot = {"dotprod", "i8mm", "avx512_vnni", "avx_vnni", "amx"} & set(device.cpu.isa)
    if bits <= 8 and peak.int8 is not None and low_bit_dot:
        return peak.int8.value * 1e9, "peak_gops.int8"
    if 8 < bits <= 16 and peak.fp16 is not None:
        return peak.fp16.value * 1e9, "peak_gops.fp16"
    return peak.fp32.value * 1e9, "peak_gops.fp32"


def predict(
    device: DeviceProfile,
    params: float,
    bits: float,
    context: int = 512,
    kv_bits: float = 16,
    prompt_tokens: int = 128,
) -> Prediction:
    """Decode and prefill time of a ``params``-parameter model at ``bits`` per weight."""
    from edgescale.scaling.plan import shape_for_params

    shape = shape_for_params(params, vocab_size=256, block_size=max(context, 8))
    L, d = shape.n_layer, shape.d_model
    weight = params * bits / 8
    kv = 2 * L * d * (kv_bits / 8) * context
    bw = device.decode_gbps() * 1e9
    peak, peak_field = _compute_ops(device, bits)
    ops = peak * device.efficiency.compute.value
    overhead = device.efficiency.overhead_ms_per_token.value / 1000 if device.efficiency.overhead_ms_per_token else 0
    t_mem, t_compute = (weight + kv) / bw, 2 * params / ops
    decode = max(t_mem, t_compute) + overhead
    n = prompt_tokens
    prefill = max((2 * params * n + 4 * L * n * n * d) / ops, weight / bw)
    memory = (weight + 2 * L * d * (kv_bits / 8) * context) * (1 + RUNTIME_OVERHEAD)
    used = {"memory.peak_gbps", "efficiency.bw", "efficiency.compute", peak_field, "memory.usable_gb", "power_w"}
    assumed = sorted(f for f in device.assumed_fields() if f in used)
    notes = [f"assumed: {f}" for f in assumed] + [
        f"shape {L}x{d} from the planner; KV assumes multi-head attention",
        f"runtime overhead {RUNTIME_OVERHEAD:.0%} of weights + KV assumed for memory",
    ]
    return Prediction(
        device=device.id,
        params=params,
        bits=bits,
        kv_bits=kv_bits,
        context=context,
        prompt_tokens=n,
        n_layer=L,
        d_model=d,
        weight_bytes=weight,
        kv_bytes=kv,
        memory_bytes=memory,
        usable_bytes=device.memory.usable_gb.value * 1e9,
        fits=memory <= device.memory.usable_gb.value * 1e9,
        decode_ms=decode * 1000,
        decode_tokens_per_s=1 / decode,
        decode_bound="memory" if t_mem >= t_compute else "compute",
        prefill_ms=prefill * 1000,
        prefill_tokens_per_s=n / prefill,
        energy_mj_per_token=device.power_w.value * decode * 1000,
        assumptions=notes,
    )


def check_anchors(device: DeviceProfile, which: str = "validation") -> list[dict]:
    """Predicted against published throughput for a profile's anchors (ratio = predicted / measured)."""
    rows = []
    for a in getattr(device, which):
        p = predict(
            device, a.params, a.bits_per_weight, context=a.prompt_tokens or 128, prompt_tokens=a.prompt_tokens or 128
        )
        predicted = p.decode_tokens_per_s if a.workload == "decode" else p.prefill_tokens_per_s
        rows.append(
            {
                "device": device.id,
                "workload": a.workload,
                "model": a.model,
                "measured_tokens_per_s": a.tokens_per_s,
                "predicted_tokens_per_s": predicted,
                "ratio": predicted / a.tokens_per_s,
                "source": a.source,
            }
        )
    return rows


# --------------------------------------------------------------------------- from the graph, on the host

FEATURES = ("weight_streaming_s", "kv_and_attention_s", "float_nodes", "quant_nodes", "per_token")


def decode_features(cost, cal, context: int) -> list[float]:
    """Terms of the per-node roofline for one decode step (seconds, except the node count).

    Each weight node streams its bytes at the calibrated GEMV rate of its precision for
    the step's working set (cache or DRAM regime) — for int8/int4 that rate includes the
    kernels' dequantisation; the KV cache streams at the fp32 rate, and attention FLOPs
    run at the measured fp32 matmul throughput.
    """
    ws = cost.decode_bytes(context)
    t_w = sum(n.weight_bytes / cal.bandwidth(ws, n.precision) for n in cost.nodes)
    t_kv = cost.kv_bytes_per_token * context / cal.bandwidth(ws)
    t_kv += cost.attention_flops_per_context_token * context / (cal.matmul_gops["fp32"] * 1e9)
    return [t_w, t_kv, float(cost.n_nodes - cost.n_quant_nodes), float(cost.n_quant_nodes), 1.0]


@dataclass(frozen=True)
class HostFit:
    """Efficiency factors fitted from host measurements (non-negative, relative least squares)."""

    coef: dict[str, float]
    residual_rel_sd: float  # standard deviation of relative residuals on the fitting points
    n_points: int

    def predict_ms(self, features: list[float]) -> float:
        return 1000 * sum(c * x for c, x in zip(self.coef.values(), features, strict=True))

    def to_dict(self) -> dict:
        return asdict(self)


def fit_host(features: list[list[float]], measured_ms: list[float], names: tuple[str, ...] = FEATURES) -> HostFit:
    """Fit t = a·weights/BW_prec + b·(KV + attention) + c·float nodes + e·quant nodes + d (relative errors)."""
    import numpy as np
    from scipy.optimize import nnls

    X = np.asarray(features, dtype=float)
    y = np.asarray(measured_ms, dtype=float) / 1000
    w = 1 / y  # relative least squares: every point counts by its percentage error
    coef, _ = nnls(X * w[:, None], y * w)
    rel = (X @ coef - y) / y
    return HostFit(dict(zip(names, coef.tolist(), strict=True)), float(np.std(rel)), len(y))


def predict_variant(cost, device: DeviceProfile, context: int, prompt_tokens: int) -> dict:
    """Roofline latency of an exported variant on a profile, from its graph cost (device priors)."""
    bw = device.decode_gbps() * 1e9
    int8_share = cost.weight_bytes_by_precision.get("int8", 0) / max(cost.weight_bytes, 1)
    peak, peak_field = _compute_ops(device, 8 if int8_share > 0.5 else 32)
    ops = peak * device.efficiency.compute.value
    node_s = cost.n_nodes * DEFAULT_NODE_OVERHEAD_US / 1e6
    decode = max(cost.decode_bytes(context) / bw, cost.decode_flops(context) / ops) + node_s
    if device.efficiency.overhead_ms_per_token:
        decode += device.efficiency.overhead_ms_per_token.value / 1000
    n = prompt_tokens
    prefill = max(
        (cost.flops_per_token * n + cost.attention_flops_per_context_token * n * n / 2) / ops, cost.weight_bytes / bw
    )
    used = {"memory.peak_gbps", "efficiency.bw", "efficiency.compute", peak_field, "power_w"}
    return {
        "kind": "predicted",
        "latency_source": "predicted",
        "decode_ms": decode * 1000,
        "prefill_ms": prefill * 1000,
        "decode_tokens_per_s": 1 / decode,
        "energy_mj_per_token": device.power_w.value * decode * 1000,
        "decode_context": context,
        "prompt_len": n,
        "assumed": sorted(f for f in device.assumed_fields() if f in used)
        + [f"node overhead {DEFAULT_NODE_OVERHEAD_US:g} us x {cost.n_nodes} nodes"],
    }


KERNEL_FEATURES = ("gemv_kernels_s", "kv_and_attention_s", "other_nodes", "per_token")


def kernel_features(cost, cal, table, context: int) -> list[float]:
    """Decode step as a sum of measured GEMV kernels (interpolated on the calibration grid)
    plus the KV stream and attention, the count of the other nodes, and a constant."""
    kernels = [n for n in cost.nodes if n.k and n.n]
    t_k = sum(table.kernel_ms(n.k, n.n, n.precision) for n in kernels) / 1000
    ws = cost.decode_bytes(context)
    t_kv = cost.kv_bytes_per_token * context / cal.bandwidth(ws)
    t_kv += cost.attention_flops_per_context_token * context / (cal.matmul_gops["fp32"] * 1e9)
    return [t_k, t_kv, float(cost.n_nodes - len(kernels)), 1.0]
