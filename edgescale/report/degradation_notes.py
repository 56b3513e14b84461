"""What a degradation grid's points say before any law: δ's dependence on D/N at each size,
and its spread across seeds (:mod:`edgescale.degradation_grid` makes the points;
:mod:`edgescale.report.degradation` fits them where a law is supported).

The seed spread is the standard deviation of δ across seeds in one (size, D/N) cell, set
beside the cells' paired standard errors: the paired error holds the model fixed and
resamples the text; the spread varies the training run. A δ smaller than either is not
resolved.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Protocol


class _Point(Protocol):
    size: str
    n: float
    d: float
    delta_bpb: float
    se_bpb: float | None


def cells(pts: Sequence[_Point]) -> dict[tuple[str, float], list[_Point]]:
    """Points by (size, D): a cell's points are the same branch of different seeds."""
    out: dict[tuple[str, float], list[_Point]] = {}
    for p in sorted(pts, key=lambda p: (p.n, p.d)):
        out.setdefault((p.size, p.d), []).append(p)
    return out


def seed_spread_note(pts: Sequence[_Point]) -> str | None:
    """The spread of δ across seeds (SD per cell) against the cells' paired errors; None without replicates."""
    sds = [statistics.stdev(p.delta_bpb for p in c) for c in cells(pts).values() if len(c) >= 2]
    if not sds:
        return None
    seeds = max(len(c) for c in cells(pts).values())
    ses = [p.se_bpb for p in pts if p.se_bpb is not None]
    se = f"; median SE of one δ {statistics.median(ses):.2g} bpb" if ses else ""
    return (
        f"seed spread of δ: SD across up to {seeds} seeds in {len(sds)} (size, D/N) cells, "
        f"median {statistics.median(sds):.2g}, max {max(sds):.2g} bpb{se}"
    )


def d_over_n_note(pts: Sequence[_Point]) -> str | None:
    """Per size, the mean δ over seeds at each sampled D/N (lowest first); None with one D/N per size."""
    by_size: dict[str, list[str]] = {}
    for (size, d), c in cells(pts).items():
        mean = statistics.fmean(p.delta_bpb for p in c)
        by_size.setdefault(size, []).append(f"{d / c[0].n:.3g}: {mean:+.2g}")
    if all(len(v) < 2 for v in by_size.values()):
        return None
    each = "; ".join(f"{s} {', '.join(v)}" for s, v in by_size.items())
    return f"δ by D/N per size (mean over seeds, bpb): {each}"
