"""Pareto frontier over (cost, loss), both minimised. Pure python; no torch, no numpy.

A point is dominated when another is no worse on both axes and better on at least one.
Exact duplicates of a non-dominated point are all on the front (neither beats the
other). Points with a NaN or infinite coordinate are never on the front, and do not
push any other point off it.

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


def _getter(*keys: str) -> Callable[[Mapping], float | None]:
    return lambda v: _dig(v, *keys)


AXES: dict[str, Axis] = {
    "bytes_per_decoded_token": Axis(
        "bytes moved per decoded token (weights + KV)", _getter("cost", "bytes_per_decoded_token")
    ),
    "file_bytes": Axis("ONNX file size (bytes)", _getter("file_bytes")),
    "flops_per_token": Axis("FLOPs per token", _getter("cost", "flops_per_token")),
    "host_decode_ms": Axis("host decode latency p50 (ms, measured)", _getter("latency", "host", "decode_ms_p50")),
    "host_prefill_ms": Axis("host prefill latency p50 (ms, measured)", _getter("latency", "host", "prefill_ms_p50")),
}


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

    Loss is bits per byte on ``loss_split``. Raises ValueError for an unknown axis.
    """
    if cost not in AXES:
        raise ValueError(f"unknown cost axis {cost!r}; allowed: {', '.join(AXES)}")
    get = AXES[cost].get
    pts = [(_float(get(v)), _float(_dig(v, "loss", loss_split, "bits_per_byte"))) for v in variants]
    front = set(pareto_front(pts))
    return [
        FrontierPoint(str(v["variant_id"]), c, loss, i in front)
        for i, (v, (c, loss)) in enumerate(zip(variants, pts, strict=True))
    ]
