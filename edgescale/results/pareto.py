"""The Pareto front of (cost, loss) points: pure math, here so the results (``on_frontier``)
and the report's frontiers (:mod:`edgescale.report.frontier`) share it.

On a measured latency axis two costs within the measurement's noise floor cannot be told
apart, so :func:`pareto_front` takes a relative tolerance: with ``tol`` a point is dominated
by another with lower-or-equal loss and a cost no more than ``(1 + tol)`` times its own, when
that other is strictly better in loss or in cost. ``tol = 0`` is the exact comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float], tol: float = 0.0) -> bool:
    """Whether ``a`` dominates ``b``: no worse loss, a cost within ``(1 + tol)`` of ``b``'s or below,
    and strictly better in one. With ``tol > 0`` an equal-cost-within-noise point with lower loss wins."""
    (ca, la), (cb, lb) = a, b
    return la <= lb and ca <= (1.0 + tol) * cb and (la < lb or ca < cb)


def pareto_front(points: Sequence[tuple[float, float]], tol: float = 0.0) -> list[int]:
    """Indices of the non-dominated ``(cost, loss)`` points, sorted by cost ascending.

    ``tol``: costs within this relative noise floor are ties (:func:`dominates`); a point
    can then be dominated by one that is itself dominated (the relation is not transitive).

    Example::

        >>> pareto_front([(3, 1), (1, 3), (2, 2), (2.5, 2.5), (1, 3)])
        [1, 4, 2, 0]
        >>> pareto_front([(1.00, 2.0), (1.01, 1.9)], tol=0.02)
        [1]
    """
    if not tol >= 0.0:
        raise ValueError(f"tolerance must be >= 0, got {tol}")
    finite = [i for i, (c, loss) in enumerate(points) if math.isfinite(c) and math.isfinite(loss)]
    order = sorted(finite, key=lambda i: (points[i][0], points[i][1]))  # stable: duplicates keep index order
    if tol > 0.0:  # pairwise: the fronts are tens of points
        return [i for i in order if not any(dominates(points[j], points[i], tol) for j in finite)]
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


def noise_ties(points: Sequence[tuple[float, float]], tol: float) -> dict[int, list[int]]:
    """Point → the points its place rests on a tie with: a point on the exact front but off the
    front within ``tol`` lists those that beat it only within the noise, and each of them lists it."""
    if tol <= 0.0:
        return {}
    exact, within = set(pareto_front(points)), set(pareto_front(points, tol))
    ties: dict[int, list[int]] = {}
    for i in sorted(exact - within):
        for j, p in enumerate(points):
            if j != i and dominates(p, points[i], tol) and not dominates(p, points[i]):
                ties.setdefault(i, []).append(j)
                ties.setdefault(j, []).append(i)
    return {k: sorted(v) for k, v in ties.items()}
