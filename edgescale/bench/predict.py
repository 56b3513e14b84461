"""Latency prediction on a device profile: the analytic (no-graph) roofline.

Decode, batch 1, streams every weight and the KV cache read so far for each token
(shared/reference/devices.md §4; kipply, "Transformer Inference Arithmetic", 2022;
Yuan et al. 2024, arXiv:2402.16363). A pass over n tokens also does work per weight:

    t_decode     = max(bytes / BW, P·(q + 2) / F) + floor
    t_prefill(n) = max(P·b_w/8 / BW, P·(q + 2n) / F + 4·L·n²·d / F) + floor
    KV(s)        = 2 · L · d · (b_kv/8) · s        (multi-head attention; GQA models need less)

with bytes = P·b_w/8 + KV(s), BW = peak bandwidth × bandwidth efficiency and F = peak ops/s at
the compute precision × compute efficiency (int8 dot-product peak for ≤ 8-bit weights where the
cores have dot-product/VNNI instructions, else the fp32 peak: the weights are dequantised first).
``q`` is the dequantization term: ops per weight to load, unpack and scale it once per pass
(``efficiency.dequant_ops`` for sub-8-bit formats, 1 for 8- and 16-bit, 0 for fp32), priced at the
same per-cycle rate as the multiply-adds. It makes two regimes out of one formula: on big cores
decode is bandwidth-bound and q is hidden, on in-order little cores (A55/A53) decode can be
compute-bound on it; and a short prompt (n below about q/2) costs a GEMV-like pass, not n
GEMM columns, so prefill efficiency falls toward decode's. ``floor`` is a per-pass launch cost
(``efficiency.overhead_ms_per_token``): zero on CPUs, the kernel-launch floor of GPU profiles,
which keeps small models on a GPU far below bandwidth.

With ``--params`` L and d come from the planner's shape for P (a guess, multi-head KV). With a real
layout (:mod:`edgescale.bench.architectures`, ``--config`` / ``--arch``) the bytes a token streams
are the layer matrices, one embedding row and the whole LM head (tied: the embedding table), each
class at its own bits, and KV(s) = 2 · L · kv_heads · head_dim · (b_kv/8) · s; P counts the matrices
and the head. Every prediction lists the assumed numbers it used; energy is power × time, an
estimate. The efficiencies are fitted to a profile's calibration anchors in
:mod:`edgescale.bench.anchor_fit`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgescale.bench.architectures import Architecture, weight_load
from edgescale.models.shape import shape_for_params
from edgescale.profiles import DeviceProfile

RUNTIME_OVERHEAD = 0.10  # memory beyond weights + KV (activations, runtime), an assumption
# Dispatch cost per graph node when a profile gives none: onnxruntime's CPU EP spends about
# 1 µs a node on this project's x86 host (s0 fp32 decode: 0.071 ms for 69 nodes, runs/default);
# 2 µs is assumed for the slower phone and board cores. Small models are dominated by it.
DEFAULT_NODE_OVERHEAD_US = 2.0
# The largest parameter count predicted: the planner's shapes (shape_for_params) stop near 8e11
# (160 layers at 128 x depth wide), and no edge device holds a model within orders of magnitude of it.
MAX_PARAMS = 5e11


@dataclass(frozen=True)
class Prediction:
    device: str
    params: float
    bits: float
    kv_bits: float
    context: int
    prompt_len: int
    n_layer: int
    n_embd: int
    weight_bytes: float
    kv_bytes: float
    memory_bytes: float
    usable_bytes: float
    fits: bool
    decode_ms: float
    decode_tokens_per_s: float
    decode_bound: str  # "memory" | "compute" | "launch floor" (a GPU's per-pass floor exceeds both)
    prefill_ms: float
    prefill_tokens_per_s: float
    energy_mj_per_token: float
    latency_source: str = "predicted"
    assumptions: list[str] = field(default_factory=list)
    # the layout: "planner (a guess ...)" for --params, else the config's source (--config, --arch)
    shape_source: str = "planner"
    n_head: int | None = None
    n_kv_head: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool | None = None
    weight_bytes_by_class: dict[str, float] = field(default_factory=dict)  # stored
    bits_by_class: dict[str, float] = field(default_factory=dict)
    streamed_bytes_per_token: float = 0.0  # weights a decode step reads
    kv_bytes_per_token: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _compute_ops(device: DeviceProfile, bits: float, precision: str | None = None) -> tuple[float, str]:
    """Peak ops/s the kernels run at: ``precision`` where an anchor states it, else ≤ 8-bit weights at the
    int8 peak (dot product where the cores have it, widening multiply-add otherwise: the profile's int8 figure
    says which), 16-bit at the fp16 peak, the rest (and any missing peak) at fp32: the weights are widened."""
    peak = device.peak_gops
    if precision is None:
        precision = "int8" if bits < 9 else "fp16" if bits < 17 else "fp32"  # 8.5: Q8_0 with its scales
    chosen = getattr(peak, precision)
    if chosen is None:
        return peak.fp32.value * 1e9, "peak_gops.fp32"
    return chosen.value * 1e9, f"peak_gops.{precision}"


DEQUANT_OPS_PRIOR = 1.0  # see dequant_ops


def dequant_ops(device: DeviceProfile, bits: float) -> float:
    """Ops per weight to load and unpack it once per pass: the profile's (fitted) value for sub-8-bit formats,
    one widening op for 8- and 16-bit weights, none for fp32."""
    if bits >= 32:
        return 0.0
    if bits >= 8:
        return 1.0
    return _sub8_dequant_ops(device)


def _sub8_dequant_ops(device: DeviceProfile) -> float:
    q = device.efficiency.dequant_ops
    return DEQUANT_OPS_PRIOR if q is None else q.value


@dataclass(frozen=True)
class _Load:
    """What the roofline needs of a model: its shape, bytes stored and streamed, KV and FLOPs."""

    n_layer: int
    n_embd: int
    attn_width: int  # query heads x head_dim: the width of q·k and attention·v in prefill
    weight_bytes: float
    streamed_bytes: float
    kv_bytes_per_token: float
    compute_params: float
    note: str
    layout: dict  # Prediction fields that name the layout (shape_source, heads, bytes by class)


def _planner_load(params: float, bits: float, context: int, kv_bits: float) -> _Load:
    shape = shape_for_params(params, vocab_size=256, block_size=max(context, 8))
    L, d = shape.n_layer, shape.n_embd
    weight = params * bits / 8
    note = f"shape {L}x{d} from the planner, a guess (give --config or --arch for the real layout); KV assumes MHA"
    layout = {
        "shape_source": "planner (a guess: --config or --arch give a real layout)",
        "weight_bytes_by_class": {"all": weight},
        "bits_by_class": {"all": bits},
    }
    return _Load(L, d, d, weight, weight, 2 * L * d * (kv_bits / 8), params, note, layout)


def _arch_load(
    arch: Architecture, bits: float, kv_bits: float, embed_bits: float | None, head_bits: float | None
) -> _Load:
    w = weight_load(arch, bits, embed_bits, head_bits)
    note = (
        f"shape {arch.n_layer}x{arch.n_embd}, {arch.n_head} heads / {arch.n_kv_head} KV heads of {arch.head_dim} "
        f"from {arch.source}; 1-D tensors stored at 32 bits"
    )
    stored, kv = sum(w.bytes_by_class.values()), arch.kv_bytes_per_token(kv_bits)
    width = arch.n_head * arch.head_dim
    layout = {
        "shape_source": arch.source,
        **{"n_head": arch.n_head, "n_kv_head": arch.n_kv_head, "head_dim": arch.head_dim},
        **{"vocab_size": arch.vocab_size, "tied_embeddings": arch.tied},
        **{"weight_bytes_by_class": w.bytes_by_class, "bits_by_class": w.bits_by_class},
    }
    load = (stored, w.streamed_bytes_per_token, kv, w.compute_params)
    return _Load(arch.n_layer, arch.n_embd, width, *load, note, layout)


@dataclass(frozen=True)
class _PassCost:
    """One model on one device, before efficiencies: what a decode step and a prefill pass read and compute.
    The fit evaluates :meth:`times` for every trial efficiency, so nothing here is recomputed per trial."""

    decode_bytes: float  # weights a step streams + the KV cache read
    weight_bytes: float  # weights streamed once (prefill)
    params: float  # parameters in matrix products
    attention_ops: float  # 4·L·n²·d of a prefill pass
    n: int  # prompt tokens
    peak_bw: float  # bytes/s
    peak_ops: float  # ops/s at the compute precision
    peak_field: str
    q_fixed: float | None  # dequantization ops the format fixes (8 bits and up); None: the profile's value

    def times(self, bw_eff: float, compute_eff: float, q_sub8: float, floor_ms: float) -> tuple[float, ...]:
        """(decode s, prefill s, decode memory s, decode compute s) at these efficiencies."""
        bw, ops = self.peak_bw * bw_eff, self.peak_ops * compute_eff
        q = q_sub8 if self.q_fixed is None else self.q_fixed
        t_mem, t_compute = self.decode_bytes / bw, self.params * (q + 2) / ops
        pre = max((self.params * (q + 2 * self.n) + self.attention_ops) / ops, self.weight_bytes / bw)
        return max(t_mem, t_compute) + floor_ms / 1000, pre + floor_ms / 1000, t_mem, t_compute


def _pass_cost(device: DeviceProfile, load: _Load, bits: float, context: int, n: int, precision) -> _PassCost:
    peak, field = _compute_ops(device, bits, precision)
    decode_bytes = load.streamed_bytes + load.kv_bytes_per_token * context
    attention = 4 * load.n_layer * n * n * load.attn_width
    q_fixed = None if bits < 8 else dequant_ops(device, bits)
    bw = device.memory.peak_gbps.value * 1e9
    return _PassCost(decode_bytes, load.streamed_bytes, load.compute_params, attention, n, bw, peak, field, q_fixed)


def predict_architecture(
    device: DeviceProfile,
    arch: Architecture,
    bits: float,
    context: int = 512,
    kv_bits: float = 16,
    prompt_len: int = 128,
    embed_bits: float | None = None,
    head_bits: float | None = None,
) -> Prediction:
    """Decode and prefill time of a real layout (--config, --arch): GQA KV cache, one embedding row
    read per token, the LM head (tied or not) streamed whole, bits per tensor class."""
    params = sum(arch.params_by_class().values())
    bits_of = {"embed_bits": embed_bits, "head_bits": head_bits}
    return predict(device, params, bits, context, kv_bits, prompt_len, arch=arch, **bits_of)


def predict(
    device: DeviceProfile,
    params: float,
    bits: float,
    context: int = 512,
    kv_bits: float = 16,
    prompt_len: int = 128,
    *,
    arch: Architecture | None = None,
    embed_bits: float | None = None,
    head_bits: float | None = None,
    precision: str | None = None,
) -> Prediction:
    """Decode and prefill time of a ``params``-parameter model at ``bits`` per weight, in the planner's
    shape (a guess), or in ``arch``'s layout (then prefer :func:`predict_architecture`)."""
    if arch is None:
        load = _planner_load(params, bits, context, kv_bits)
    else:
        load = _arch_load(arch, bits, kv_bits, embed_bits, head_bits)
    weight, kv = load.weight_bytes, load.kv_bytes_per_token * context
    cost = _pass_cost(device, load, bits, context, prompt_len, precision)
    bw_eff, compute_eff, q_sub8, floor_ms = _efficiencies(device)
    q = dequant_ops(device, bits)
    decode, prefill, t_mem, t_compute = cost.times(bw_eff, compute_eff, q_sub8, floor_ms)
    floor, peak_field, n, L = floor_ms / 1000, cost.peak_field, prompt_len, load.n_layer
    memory = (weight + kv) * (1 + RUNTIME_OVERHEAD)
    used = {"memory.peak_gbps", "efficiency.bw", "efficiency.compute", peak_field, "memory.usable_gb", "power_w"}
    used |= {"efficiency.dequant_ops", "efficiency.overhead_ms_per_token"}
    assumed = sorted(f for f in device.assumed_fields() if f in used)
    notes = [f"assumed: {f}" for f in assumed] + [
        load.note,
        f"runtime overhead {RUNTIME_OVERHEAD:.0%} of weights + KV assumed for memory",
        f"dequantization {q:g} ops/weight a pass; launch floor {floor * 1000:g} ms a pass",
    ]
    return Prediction(
        device=device.id,
        params=params,
        bits=bits,
        kv_bits=kv_bits,
        context=context,
        prompt_len=n,
        n_layer=L,
        n_embd=load.n_embd,
        weight_bytes=weight,
        kv_bytes=kv,
        memory_bytes=memory,
        usable_bytes=device.memory.usable_gb.value * 1e9,
        fits=memory <= device.memory.usable_gb.value * 1e9,
        decode_ms=decode * 1000,
        decode_tokens_per_s=1 / decode,
        decode_bound="launch floor" if floor > max(t_mem, t_compute) else "memory" if t_mem >= t_compute else "compute",
        prefill_ms=prefill * 1000,
        prefill_tokens_per_s=n / prefill,
        energy_mj_per_token=device.power_w.value * decode * 1000,
        assumptions=notes,
        **load.layout,
        streamed_bytes_per_token=load.streamed_bytes,
        kv_bytes_per_token=load.kv_bytes_per_token,
    )


def _efficiencies(device: DeviceProfile) -> tuple[float, float, float, float]:
    eff = device.efficiency
    floor_ms = eff.overhead_ms_per_token.value if eff.overhead_ms_per_token else 0.0
    return eff.bw.value, eff.compute.value, _sub8_dequant_ops(device), floor_ms
