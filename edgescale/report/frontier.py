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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, loss)`` points, sorted by cost ascending.

    Example::

        >>> pareto_front([(3, 1), (1, 3), (2, 2), (2.5, 2.5), (1, 3)])
        [1, 4, 2, 0]
    """
    finite = [i for i, (c, loss) in enumerate(points) if math.isfinite(c) and math.isfinite(loss)]
    order = sorted(finite, key=lambda i: (points[i][0], points[i][1]))  # stable: duplicates keep index order
    front: list[int] = []
    best = math.inf  # lowest loss at strictly lower cost than the current group
    group_cost, group_low = math.nan, math.inf  # the current equal-cost group and its lowest loss
    for i in order:
        cost, loss = points[i]
        if cost != group_cost:  # a new group starts; its first point has its lowest loss
            best = min(best, group_low)
            group_cost, group_low = cost, loss
        if loss == group_low and loss < best:
            front.append(i)
    return front


def _dig(d: Any, *keys: str) -> Any:
    """``d[k0][k1]...``, or None where any key is missing (optional parts of results.json)."""
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


@dataclass(frozen=True)
class Axis:
    """A cost axis: its label (with unit) and how to read it from a ``results.json`` variant."""

    label: str
    get: Callable[[Mapping], float | None]
    source: str = "computed"  # "measured" | "predicted" | "estimate" | "computed" (from the graph)


def _getter(*keys: str) -> Callable[[Mapping], float | None]:
    return lambda v: _dig(v, *keys)


AXES: dict[str, Axis] = {
    "bytes_per_decoded_token": Axis(
        "bytes moved per decoded token (weights + KV)", _getter("cost", "bytes_per_decoded_token")
    ),
    "file_bytes": Axis("ONNX file size (bytes)", _getter("file_bytes")),
    "peak_memory_bytes": Axis("peak memory (bytes, estimate)", _getter("cost", "peak_memory_bytes")),
    "flops_per_token": Axis("FLOPs per token", _getter("cost", "flops_per_token")),
    "host_decode_ms": Axis("host decode latency p50 (ms, measured)", _getter("latency", "host", "decode_ms_p50")),
    "host_prefill_ms": Axis("host prefill latency p50 (ms, measured)", _getter("latency", "host", "prefill_ms_p50")),
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


def _device_axes(variants: Sequence[Mapping]) -> dict[str, Axis]:
    devices = dict.fromkeys(d for v in variants for d in (_dig(v, "latency") or {}))
    out = {}
    for dev in devices:
        sources = {_dig(v, "latency", dev, "latency_source") or _dig(v, "latency", dev, "kind") for v in variants}
        measured = _one(sources) == "measured"
        for metric, key_measured, key_predicted, what, unit in DEVICE_METRICS:
            key = key_measured if measured else key_predicted
            if key is None or not any(_dig(v, "latency", dev, key) is not None for v in variants):
                continue  # e.g. no energy figure for the host: no axis rather than an empty one
            stat = " p50" if measured else ""
            label = f"{dev} {what}{stat} ({unit}, {_one(sources)})"
            out[device_axis(dev, metric)] = Axis(label, _getter("latency", dev, key), _one(sources))
    return out


def axes_for(variants: Sequence[Mapping]) -> dict[str, Axis]:
    """Every cost axis these variants have, labelled with its context, KV precision and source.

    The bytes and FLOPs axes name the decode context they were computed at (and the KV-cache
    precision, fp32 unless ``cost.kv_precision`` says otherwise); device axes come from the
    variants' ``latency`` and say whether they were measured or predicted.
    """
    ctx = _one({_dig(v, "cost", "decode_context") for v in variants})
    kv = _one({_dig(v, "cost", "kv_precision") or "fp32" for v in variants})
    flops_ctx = _one({_dig(v, "cost", "flops_context") for v in variants})
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
        "flops_per_token": Axis(f"FLOPs per token (attention at context {flops_ctx})", AXES["flops_per_token"].get),
    }
    return {**fixed, **_device_axes(variants)}


@dataclass(frozen=True)
class FrontierPoint:
    """One variant on one cost axis. ``cost`` or ``loss`` is NaN where the variant lacks it."""

    variant_id: str
    cost: float
    loss: float
    on_front: bool


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def frontier(variants: Sequence[Mapping], cost: str, loss_split: str = "validation") -> list[FrontierPoint]:
    """Every variant, in input order, with its cost on axis ``cost`` and whether it is on that front.

    Loss is bits per byte on ``loss_split``. ``cost`` is a name from :data:`AXES` or a
    device axis of these variants (:func:`axes_for`); raises ValueError for an unknown one.
    """
    axes = {**AXES, **axes_for(variants)}
    if cost not in axes:
        raise ValueError(f"unknown cost axis {cost!r}; allowed: {', '.join(axes)}")
    get = axes[cost].get
    pts = [(_float(get(v)), _float(_dig(v, "loss", loss_split, "bits_per_byte"))) for v in variants]
    front = set(pareto_front(pts))
    return [
        FrontierPoint(str(v["variant_id"]), c, loss, i in front)
        for i, (v, (c, loss)) in enumerate(zip(variants, pts, strict=True))
    ]


def frontiers(variants: Sequence[Mapping], loss_split: str = "validation") -> dict[str, dict]:
    """Every axis of :func:`axes_for` with its label, source and front (variant ids by cost),
    as plain data for ``results.json``; variants missing an axis are listed as excluded."""
    out = {}
    for name, axis in axes_for(variants).items():
        points = frontier(variants, name, loss_split)
        front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
        out[name] = {
            "label": axis.label,
            "source": axis.source,
            "loss_split": loss_split,
            "front": [{"variant_id": p.variant_id, "cost": p.cost, "loss_bpb": p.loss} for p in front],
            "excluded": [p.variant_id for p in points if not (math.isfinite(p.cost) and math.isfinite(p.loss))],
        }
    return out
