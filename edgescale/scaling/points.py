"""(N, D, loss) points for fitting: from a CSV file, or from the sizes of an edgescale run
(:func:`edgescale.results.points.scaling_points` reads the run directory and hands them here)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescale.errors import UserError

COLUMNS = ("N", "D", "loss")


@dataclass(frozen=True)
class Points:
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    source: str
    n_convention: str = "total"
    loss_unit: str = "as given"
    notes: list[str] = field(default_factory=list)
    groups: tuple[str, ...] | None = None  # the run of each point: a bootstrap resamples whole runs (None: points)


def read_csv(path: Path) -> Points:
    """A CSV with a header naming columns N, D and loss (any case; other columns ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", file=path) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise UserError("empty file; expected a header with columns N, D, loss", file=path)
    header = [h.strip() for h in rows[0]]
    lower = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in COLUMNS if c.lower() not in lower]
    if missing:
        raise UserError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(header) or '(none)'}; "
            "allowed: a header with N, D, loss",
            file=path,
        )
    cols = {c: lower[c.lower()] for c in COLUMNS}
    values = {c: [] for c in COLUMNS}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        for c, i in cols.items():
            cell = row[i].strip() if i < len(row) else ""
            try:
                v = float(cell)
            except ValueError:
                raise UserError(f"{c} = {cell!r} is not a number", file=path, field=f"line {line_no}") from None
            if not math.isfinite(v) or v <= 0:
                raise UserError(f"{c} = {cell} must be a positive finite number", file=path, field=f"line {line_no}")
            values[c].append(v)
    if len(values["N"]) < 5:
        raise UserError(f"{len(values['N'])} data rows; a fit needs at least 5", file=path)
    return Points(*(np.array(values[c]) for c in COLUMNS), source=str(path))


def _in_fit(c: Any) -> bool:
    """A point of the run's own scaling fit: ``in_fit`` where recorded, else (older runs) ``cooled``."""
    return bool(c.in_fit) if c.in_fit is not None else bool(c.cooled)


def from_sizes(sizes: Sequence[Any], path: Path) -> Points:
    """The points a run's own scaling fit used, from its ``sizes`` (:class:`edgescale.results.schema.Size`,
    from its ``results.json`` at ``path``; N total, loss in nats/token): every ladder size's curve
    points marked ``in_fit`` (older runs: ``cooled``), each size's other seeds as runs of their own,
    keyed ``size@seedK`` as the run's fit keys them (a bootstrap over runs resamples seeds too)."""
    ladder = [s for s in sizes if not s.distilled_from]  # the ladder only
    runs = [(s.size, s.params_total, s.curve) for s in ladder]
    runs += [(f"{s.size}@seed{r.seed}", s.params_total, r.curve) for s in ladder for r in s.seed_runs]
    chosen = [(run, n, c) for run, n, curve in runs for c in curve if _in_fit(c)]
    if len(chosen) < 5:
        raise UserError(
            f"{len(chosen)} (N, D, loss) points of the run's scaling fit (cooled checkpoints); a fit needs at least 5: "
            "train with training.schedule: wsd and several cooled_fractions",
            file=path,
        )
    seeds = len(runs) - len(ladder)
    return Points(
        np.array([n for _, n, _ in chosen], float),
        np.array([c.tokens for _, _, c in chosen], float),
        np.array([c.val_bpb * math.log(2) for _, _, c in chosen]),  # byte tokens: nats/token = bpb · ln 2
        source=str(path),
        loss_unit="nats/token (validation, byte tokens)",
        notes=[f"cooled checkpoints of warmup-stable-decay runs (the run's own fit points; {seeds} extra seed runs)"],
        groups=tuple(run for run, _, _ in chosen),
    )
