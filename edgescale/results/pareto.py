"""The Pareto front of (cost, loss) points: pure math, here so the results (``on_frontier``)
and the report's frontiers (:mod:`edgescale.report.frontier`) share it."""

from __future__ import annotations

import math
from collections.abc import Sequence


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
