"""Pareto frontier over (cost, loss), both minimised. Pure python; no torch, no numpy.

A point is dominated when another is no worse on both axes and better on at least one.
Exact duplicates of a non-dominated point are all on the front (neither beats the
other). Points with a NaN or infinite coordinate are never on the front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by cost ascending (O(n log n) sweep)."""
    finite = [i for i, (c, loss) in enumerate(points) if math.isfinite(c) and math.isfinite(loss)]
    order = sorted(finite, key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    best = math.inf  # lowest loss seen at strictly lower cost
    i = 0
    while i < len(order):
        cost = points[order[i]][0]
        group = [j for j in order[i:] if points[j][0] == cost]  # same cost: sorted by loss
        low = points[group[0]][1]
        if low < best:
            front.extend(j for j in group if points[j][1] == low)
            best = low
        i += len(group)
    return front


@dataclass(frozen=True)
class Axis:
    label: str
    get: Callable[[dict], float | None]


def _host(key: str) -> Callable[[dict], float | None]:
    return lambda v: v.get("latency", {}).get("host", {}).get(key)


AXES: dict[str, Axis] = {
    "bytes_per_decoded_token": Axis(
        "bytes moved per decoded token (weights + KV)", lambda v: v["cost"]["bytes_per_decoded_token"]
    ),
    "file_bytes": Axis("ONNX file size (bytes)", lambda v: v["file_bytes"]),
    "flops_per_token": Axis("FLOPs per token", lambda v: v["cost"]["flops_per_token"]),
    "host_decode_ms": Axis("host decode latency p50 (ms, measured)", _host("decode_ms_p50")),
    "host_prefill_ms": Axis("host prefill latency p50 (ms, measured)", _host("prefill_ms_p50")),
}


@dataclass(frozen=True)
class FrontierPoint:
    variant_id: str
    cost: float
    loss: float
    on_front: bool


def frontier(variants: Sequence[dict], cost: str, loss_split: str = "validation") -> list[FrontierPoint]:
    """Every variant with its cost on ``cost`` and whether it is on that axis's front."""
    if cost not in AXES:
        raise ValueError(f"unknown cost axis {cost!r}; allowed: {', '.join(AXES)}")
    get = AXES[cost].get
    pts = []
    for v in variants:
        c = get(v)
        pts.append((float(c) if c is not None else math.nan, float(v["loss"][loss_split]["bits_per_byte"])))
    front = set(pareto_front(pts))
    return [
        FrontierPoint(v["variant_id"], c, loss, i in front)
        for i, (v, (c, loss)) in enumerate(zip(variants, pts, strict=True))
    ]
