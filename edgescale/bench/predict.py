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
dequantised first). With ``--params`` L and d come from the planner's shape for P (a guess,
multi-head KV). With a real layout (:mod:`edgescale.bench.architectures`, ``--config`` / ``--arch``)
the bytes a token streams are the layer matrices, one embedding row and the whole LM head (tied:
the embedding table), each class at its own bits, and KV(s) = 2 · L · kv_heads · head_dim · (b_kv/8) · s;
2·P counts the matrices and the head. Every prediction lists the assumed numbers it used; energy
is power × time, an estimate.
"""

from __future__ import annotations

import math
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
    decode_bound: str  # "memory" | "compute"
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


def _compute_ops(device: DeviceProfile, bits: float) -> tuple[float, str]:
    peak = device.peak_gops
    low_bit_dot = {"dotprod", "i8mm", "avx512_vnni", "avx_vnni", "amx"} & set(device.cpu.isa)
    if bits <= 8 and peak.int8 is not None and low_bit_dot:
        return peak.int8.value * 1e9, "peak_gops.int8"
    if 8 < bits <= 16 and peak.fp16 is not None:
        return peak.fp16.value * 1e9, "peak_gops.fp16"
    return peak.fp32.value * 1e9, "peak_gops.fp32"


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
) -> Prediction:
    """Decode and prefill time of a ``params``-parameter model at ``bits`` per weight, in the planner's
    shape (a guess), or in ``arch``'s layout (then prefer :func:`predict_architecture`)."""
    if arch is None:
        load = _planner_load(params, bits, context, kv_bits)
    else:
        load = _arch_load(arch, bits, kv_bits, embed_bits, head_bits)
    L, d = load.n_layer, load.attn_width
    weight, streamed, kv = load.weight_bytes, load.streamed_bytes, load.kv_bytes_per_token * context
    bw = device.decode_gbps() * 1e9
    peak, peak_field = _compute_ops(device, bits)
    ops = peak * device.efficiency.compute.value
    overhead = device.efficiency.overhead_ms_per_token.value / 1000 if device.efficiency.overhead_ms_per_token else 0
    t_mem, t_compute = (streamed + kv) / bw, 2 * load.compute_params / ops
    decode = max(t_mem, t_compute) + overhead
    n = prompt_len
    prefill = max((2 * load.compute_params * n + 4 * L * n * n * d) / ops, streamed / bw)
    memory = (weight + kv) * (1 + RUNTIME_OVERHEAD)
    used = {"memory.peak_gbps", "efficiency.bw", "efficiency.compute", peak_field, "memory.usable_gb", "power_w"}
    assumed = sorted(f for f in device.assumed_fields() if f in used)
    notes = [f"assumed: {f}" for f in assumed] + [
        load.note,
        f"runtime overhead {RUNTIME_OVERHEAD:.0%} of weights + KV assumed for memory",
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
        decode_bound="memory" if t_mem >= t_compute else "compute",
        prefill_ms=prefill * 1000,
        prefill_tokens_per_s=n / prefill,
        energy_mj_per_token=device.power_w.value * decode * 1000,
        assumptions=notes,
        **load.layout,
        streamed_bytes_per_token=streamed,
        kv_bytes_per_token=load.kv_bytes_per_token,
    )


# --------------------------------------------------------------------------- calibration anchors


def _ratios(device: DeviceProfile, anchors, workload: str) -> list[float]:
    return [r["ratio"] for r in _anchor_rows(device, anchors) if r["workload"] == workload]


def _anchor_rows(device: DeviceProfile, anchors) -> list[dict]:
    rows = []
    for a in anchors:
        p = predict(device, a.params, a.bits_per_weight, context=a.prompt_len or 128, prompt_len=a.prompt_len or 128)
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


def calibrated(device: DeviceProfile) -> DeviceProfile:
    """The profile with efficiencies fitted to its calibration anchors (priors otherwise).

    Decode anchors fit ``efficiency.bw`` and prefill anchors ``efficiency.compute``: the
    prior is divided by the geometric mean of predicted/measured throughput over the
    anchors of that workload (exact where the workload is bound by that term). The fitted
    number is recorded as ``derived`` with its formula and the anchors' sources;
    validation anchors are never used.
    """
    eff = device.efficiency
    update = {}
    for workload, name in (("decode", "bw"), ("prefill", "compute")):
        anchors = [a for a in device.calibration if a.workload == workload]
        if not anchors or (getattr(eff, name).formula or "").startswith("fitted:"):
            continue
        ratios = _ratios(device, anchors, workload)
        gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        prior = getattr(eff, name)
        value = min(1.0, prior.value / gm)
        update[name] = prior.model_copy(
            update={
                "value": value,
                "kind": "derived",
                "formula": f"fitted: prior {prior.value:g} / geometric mean of predicted/measured {gm:.3f} "
                f"over {len(anchors)} {workload} calibration anchor(s)",
                "source": "; ".join(a.source for a in anchors),
            }
        )
    if not update:
        return device
    return device.model_copy(update={"efficiency": eff.model_copy(update=update)})


def check_anchors(device: DeviceProfile, which: str = "validation") -> list[dict]:
    """Predicted against published throughput for a profile's anchors (ratio = predicted / measured),
    with the efficiencies fitted to its calibration anchors."""
    return _anchor_rows(calibrated(device), getattr(device, which))


def anchor_interval(device: DeviceProfile) -> tuple[float, str]:
    """Relative half-width of a decode prediction's interval on ``device``: twice the RMS
    log error over its validation decode anchors, or an assumed ±50% without any."""
    ratios = [r["ratio"] for r in check_anchors(device) if r["workload"] == "decode"]
    if not ratios:
        return 0.5, "assumed ±50%: no validation anchors on this device"
    rms = math.sqrt(sum(math.log(r) ** 2 for r in ratios) / len(ratios))
    return min(0.9, 2 * rms), f"2 x RMS log error over {len(ratios)} validation decode anchor(s)"
