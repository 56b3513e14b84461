"""The points a degradation law is fitted to (split out of :mod:`edgescale.report.degradation`,
which re-exports them): the loss change δ of a recipe against its baseline at each ladder size,
or at every cooled branch and seed of the degradation grid, each with its standard error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edgescale.report.degradation_notes import d_over_n_note, seed_spread_note
from edgescale.results import nll
from edgescale.results.nll import Z95, Contrast
from edgescale.results.schema import DegradationGridPoint, LossSplit, Results


@dataclass(frozen=True)
class DegradationPoint:
    size: str
    n: float  # parent's total parameters
    d: float  # parent's pre-training tokens
    delta_bpb: float  # validation loss change vs the baseline, bits per byte
    delta_test_bpb: float | None = None
    se_bpb: float | None = None  # standard error of delta_bpb: paired over windows, else unpaired, else None
    se_paired: bool | None = None  # whether se_bpb is the paired (per-window) error
    within_noise: bool | None = None  # |δ| < 1.96·se_bpb: the recipe's effect at this size is not resolved
    seed: int | None = None  # the training run's seed (degradation-grid points; None: the exported run)

    def with_se(self, c: Contrast | None) -> DegradationPoint:
        if c is None or not math.isfinite(c.se_bpb):
            return self
        return replace(self, se_bpb=c.se_bpb, se_paired=c.paired, within_noise=abs(self.delta_bpb) < Z95 * c.se_bpb)


def delta_se(v: LossSplit, b: LossSplit, root: Path | None) -> Contrast | None:
    """The error of ``v − b``: paired over the windows both were scored on (their sidecars under
    ``root``), else unpaired from the records' se_bpb, else None (older runs keep neither)."""
    c = nll.paired_delta(w, u) if (w := nll.load(root, v.nll_file)) and (u := nll.load(root, b.nll_file)) else None
    if c is None and v.se_bpb is not None and b.se_bpb is not None:
        c = nll.unpaired([(1.0, v.bits_per_byte, v.se_bpb), (-1.0, b.bits_per_byte, b.se_bpb)])
    return c


def degradation_points(
    results: Results, recipe: str, baseline: str, root: Path | None = None
) -> list[DegradationPoint]:
    """δ of ``recipe`` against ``baseline`` at every ladder size that has both (distilled
    students are left out: their loss comes from another training process, and so are
    pretrained candidates whose training tokens are unknown: the law is in N and D), each
    with its standard error (:func:`delta_se`; paired with the run directory ``root``)."""
    sizes = {s.size: s for s in results.sizes if not s.distilled_from and s.train_tokens > 0}
    by = {(v.size, v.recipe): v for v in results.variants}
    out = []
    for name, s in sizes.items():
        v, b = by.get((name, recipe)), by.get((name, baseline))
        if v is None or b is None:
            continue
        val = v.loss["validation"].bits_per_byte - b.loss["validation"].bits_per_byte
        test = None
        if "test" in v.loss and "test" in b.loss:
            test = v.loss["test"].bits_per_byte - b.loss["test"].bits_per_byte
        if math.isfinite(val):
            p = DegradationPoint(name, float(s.params_total), float(s.train_tokens), val, test)
            out.append(p.with_se(delta_se(v.loss["validation"], b.loss["validation"], root)))
    return sorted(out, key=lambda p: p.n)


def grid_points(grid: Sequence[DegradationGridPoint], recipe: str, baseline: str) -> list[DegradationPoint]:
    """δ of ``recipe`` at every scored point of a degradation grid (each cooled branch of each seed of
    each ladder size, :mod:`edgescale.degradation_grid`), with the paired error recorded there."""
    out = []
    for g in grid:
        if g.status != "ok" or g.recipe != recipe or g.baseline != baseline or g.delta_bpb is None:
            continue
        p = DegradationPoint(g.size, float(g.params_total), float(g.tokens), g.delta_bpb, seed=g.seed)
        if g.se_bpb is not None:
            p = replace(p, se_bpb=g.se_bpb, se_paired=g.se_paired, within_noise=g.within_noise)
        out.append(p)
    return sorted(out, key=lambda p: (p.n, p.d, p.seed or 0))


def recipe_points(results: Results, recipe: str, base: str, root: Path | None) -> tuple[list, list[str]]:
    """The grid's points for ``recipe`` where the run has them (several D/N and seeds per size), else
    one point per size from the variants; and notes on what the grid adds or lacks."""
    grid = [g for g in results.degradation_grid or () if g.recipe == recipe and g.baseline == base]
    pts = grid_points(grid, recipe, base)
    if not pts:
        return degradation_points(results, recipe, base, root), []
    failed = [g for g in grid if g.status != "ok"]
    notes = [n for n in (d_over_n_note(pts), seed_spread_note(pts)) if n]
    if failed:
        why = sorted({f"{g.failed_stage}: {g.reason}" for g in failed})
        notes.append(f"{len(failed)} of {len(grid)} grid points have no δ ({'; '.join(why[:3])})")
    return pts, notes
