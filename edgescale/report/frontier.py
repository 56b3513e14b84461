"""Pareto frontier over (cost, loss), both minimised. Pure python; no torch, no numpy.

A point is dominated when another is no worse on both axes and better on at least one.
Exact duplicates of a non-dominated point are all on the front (neither beats the
other). Points with a NaN or infinite coordinate (a variant missing that axis) are never
on the front, and do not push any other point off it.

Cost axes of a ``results.json``: the fixed ones in :data:`AXES` (bytes moved per decoded
token, file size, peak memory, FLOPs per token) and, per device in the variants'
``latency``, decode and prefill latency and energy per token (:func:`axes_for`), each
labelled measured (host) or predicted (device profiles) from the variants' own
``latency_source``.

The sweep (Kung, Luccio & Preparata 1975, two-dimensional case): sort by (cost, loss);
a point is on the front exactly when its loss is below every loss at strictly lower
cost and is the lowest loss at its own cost. One pass after the sort: O(n log n).

On a measured latency axis, costs within the measurement's A/A noise floor of each other are
ties (:func:`edgescale.results.pareto.pareto_front` with ``tol``): two graphs of one shape
timed 0.0398 and 0.0402 ms cannot be told apart, so only the one with the lower loss stays on
the front, and both say so in ``tie_with``. The floor is ``measurement.aa.noise_floor``
(decode for decode axes, prefill for prefill axes), which the assembled results also keep
beside each variant's host numbers; predicted and byte axes compare exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgescale.results.pareto import noise_ties, pareto_front
from edgescale.results.schema import HostLatency, Variant


@dataclass(frozen=True)
class Axis:
    """A cost axis: its label (with unit) and how to read it from a typed results variant."""

    label: str
    get: Callable[[Variant], float | None]
    source: str = "computed"  # "measured" | "predicted" | "estimate" | "computed" (from the graph)


def _on_device(device: str, key: str) -> Callable[[Variant], float | None]:
    """A latency figure of a variant on ``device`` (None where the device or the figure is missing)."""
    return lambda v: getattr(v.latency.get(device), key, None)


AXES: dict[str, Axis] = {
    "bytes_per_decoded_token": Axis(
        "bytes moved per decoded token (weights + KV)", lambda v: v.cost.bytes_per_decoded_token
    ),
    "file_bytes": Axis("ONNX file size (bytes)", lambda v: v.file_bytes),
    "peak_memory_bytes": Axis("peak memory (bytes, estimate)", lambda v: v.cost.peak_memory_bytes),
    "flops_per_token": Axis("FLOPs per token", lambda v: v.cost.flops_per_token),
    "host_decode_ms": Axis("host decode latency p50 (ms, measured)", _on_device("host", "decode_ms_p50")),
    "host_prefill_ms": Axis("host prefill latency p50 (ms, measured)", _on_device("host", "prefill_ms_p50")),
}
# Per-device metrics: (axis suffix, key for measured latency, key for predicted latency, what, unit).
DEVICE_METRICS = (
    ("decode_ms", "decode_ms_p50", "decode_ms", "decode latency", "ms/token"),
    ("prefill_ms", "prefill_ms_p50", "prefill_ms", "prefill latency", "ms"),
    ("energy_mj", None, "energy_mj_per_token", "energy per decoded token", "mJ"),
)


def device_axis(device: str, metric: str) -> str:
    """The axis name of ``metric`` (``decode_ms``, ``prefill_ms``, ``energy_mj``) on ``device``."""
    return f"{device}_{metric}"


def _one(values: set) -> Any:
    """The single value all variants agree on, else the values joined with "/"."""
    values = values - {None}
    return next(iter(values)) if len(values) == 1 else "/".join(sorted(map(str, values))) or "?"


def _device_axes(variants: Sequence[Variant]) -> dict[str, Axis]:
    devices = dict.fromkeys(d for v in variants for d in v.latency)
    out = {}
    for dev in devices:
        sources = {v.latency[dev].latency_source if dev in v.latency else None for v in variants}
        measured = _one(sources) == "measured"
        for metric, key_measured, key_predicted, what, unit in DEVICE_METRICS:
            key = key_measured if measured else key_predicted
            get = _on_device(dev, key) if key is not None else None
            if get is None or not any(get(v) is not None for v in variants):
                continue  # e.g. no energy figure for the host: no axis rather than an empty one
            stat = " p50" if measured else ""
            label = f"{dev} {what}{stat} ({unit}, {_one(sources)})"
            out[device_axis(dev, metric)] = Axis(label, get, _one(sources))
    return out


def axes_for(variants: Sequence[Variant]) -> dict[str, Axis]:
    """Every cost axis these variants have, labelled with its context, KV precision and source.

    The bytes and FLOPs axes name the decode context they were computed at (and the KV-cache
    precision, fp32 unless ``cost.kv_precision`` says otherwise); device axes come from the
    variants' ``latency`` and say whether they were measured or predicted.
    """
    ctx = _one({v.cost.decode_context for v in variants})
    kv = _one({v.cost.kv_precision or "fp32" for v in variants})
    fixed = {
        "bytes_per_decoded_token": Axis(
            f"bytes moved per decoded token (weights + {kv} KV cache at context {ctx})",
            AXES["bytes_per_decoded_token"].get,
        ),
        "file_bytes": AXES["file_bytes"],
        "peak_memory_bytes": Axis(
            f"peak memory (bytes, estimate: weights + {kv} KV at context {ctx} + largest activation)",
            AXES["peak_memory_bytes"].get,
            "estimate",
        ),
        "flops_per_token": Axis(f"FLOPs per token (attention at context {ctx})", AXES["flops_per_token"].get),
    }
    return {**fixed, **_device_axes(variants)}


@dataclass(frozen=True)
class FrontierPoint:
    """One variant on one cost axis. ``cost`` or ``loss`` is NaN where the variant lacks it."""

    variant_id: str
    cost: float
    loss: float
    on_front: bool
    tie_with: tuple[str, ...] = ()  # variants its place rests on a within-noise cost tie with (measured axes)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def measured_noise_floor(variants: Sequence[Variant], axis: str) -> float:
    """The A/A noise floor of a measured latency axis (prefill axes: the prefill floor, else
    decode), from the variants' host latency; 0 where none was recorded (an older file)."""
    phase = "prefill" if "prefill" in axis else "decode"
    floors = [
        lat.noise_floor[phase]
        for v in variants
        for lat in v.latency.values()
        if isinstance(lat, HostLatency) and lat.noise_floor and phase in lat.noise_floor
    ]
    return max(floors, default=0.0)


def axis_noise_floor(variants: Sequence[Variant], cost: str, noise_floor: Mapping[str, float] | None = None) -> float:
    """The relative tolerance costs on axis ``cost`` are compared with: the A/A floor on a measured
    latency axis (``noise_floor``: phase → floor, e.g. ``results.measurement.aa.noise_floor``; None:
    read from the variants), 0 on every other axis (predicted, bytes, FLOPs)."""
    axis = {**AXES, **axes_for(variants)}.get(cost)
    if axis is None or axis.source != "measured" or not cost.endswith("_ms"):
        return 0.0
    if noise_floor is None:
        return measured_noise_floor(variants, cost)
    return float(noise_floor.get("prefill" if "prefill" in cost else "decode", 0.0))


def frontier(
    variants: Sequence[Variant],
    cost: str,
    loss_split: str = "validation",
    noise_floor: Mapping[str, float] | None = None,
) -> list[FrontierPoint]:
    """Every variant, in input order, with its cost on axis ``cost`` and whether it is on that front.

    Loss is bits per byte on ``loss_split``. ``cost`` is a name from :data:`AXES` or a
    device axis of these variants (:func:`axes_for`); raises ValueError for an unknown one.
    On a measured latency axis costs within the noise floor (:func:`axis_noise_floor`) tie.
    """
    axes = {**AXES, **axes_for(variants)}
    if cost not in axes:
        raise ValueError(f"unknown cost axis {cost!r}; allowed: {', '.join(axes)}")
    get = axes[cost].get
    pts = [(_float(get(v)), _float(v.bpb(loss_split))) for v in variants]
    tol = axis_noise_floor(variants, cost, noise_floor)
    front, ties = set(pareto_front(pts, tol)), noise_ties(pts, tol)
    return [
        FrontierPoint(v.variant_id, c, loss, i in front, tuple(variants[j].variant_id for j in ties.get(i, ())))
        for i, (v, (c, loss)) in enumerate(zip(variants, pts, strict=True))
    ]


def frontiers(
    variants: Sequence[Variant], loss_split: str = "validation", noise_floor: Mapping[str, float] | None = None
) -> dict[str, dict]:
    """Every axis of :func:`axes_for` with its label, source and front (variant ids by cost),
    as plain data for ``results.json``; variants missing an axis are listed as excluded. A
    measured axis names its noise floor, and a front entry that won a within-noise tie the
    variants it beat (``tie_with``)."""
    out = {}
    for name, axis in axes_for(variants).items():
        points = frontier(variants, name, loss_split, noise_floor)
        front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
        tol = axis_noise_floor(variants, name, noise_floor)
        out[name] = {
            "label": axis.label,
            "source": axis.source,
            "loss_split": loss_split,
            **({"noise_floor": tol} if tol > 0 else {}),
            "front": [{"variant_id": p.variant_id, "cost": p.cost, "loss_bpb": p.loss, **_ties(p)} for p in front],
            "excluded": [p.variant_id for p in points if not (math.isfinite(p.cost) and math.isfinite(p.loss))],
        }
    return out


def _ties(p: FrontierPoint) -> dict:
    return {"tie_with": list(p.tie_with)} if p.tie_with else {}
