"""Scaling-law inputs read from a finished run: its sizes as (N, D, loss) points, and a law
named by a preset or fitted to a CSV file or a run directory (``fit:FILE|RUN_DIR``).

Here, in the results layer, because a run directory is read through the one reader
(:func:`edgescale.results.read_results`); :mod:`edgescale.scaling` only gets the sizes.
"""

from __future__ import annotations

from pathlib import Path

from edgescale.errors import UserError
from edgescale.results.io import read_results
from edgescale.scaling.identify import law_from_points
from edgescale.scaling.plan import Law, preset_law
from edgescale.scaling.points import Points, from_sizes, read_csv


def scaling_points(run_dir: Path) -> Points:
    """Validation-curve points of every size in a run (N total, loss in nats/token)."""
    return from_sizes(read_results(run_dir).sizes, Path(run_dir) / "results.json")


def load_points(source: Path) -> Points:
    """Points from an edgescale run directory or a CSV file with columns N, D and loss."""
    source = Path(source)
    if source.is_dir():
        pts = scaling_points(source)
    elif not source.exists():
        raise UserError("file not found", file=source)
    else:
        pts = read_csv(source)
    if len(pts.loss) and float(max(pts.loss)) == float(min(pts.loss)):
        # every exponent fits 0: a flat "law" with undefined allocation exponents, not a scaling law
        raise UserError(
            f"every loss is {float(pts.loss[0]):g}: a law needs losses that change with N and D", file=source
        )
    return pts


def resolve_law(spec: str, *, n_boot: int = 200) -> Law:
    """A preset name (``kaplan2020``, ``chinchilla2022``, ``epoch2024``) or ``fit:FILE|RUN_DIR``."""
    if spec.startswith("fit:"):
        return law_from_points(load_points(Path(spec[4:])), spec, n_boot)
    return preset_law(spec)
