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


def from_sizes(sizes: Sequence[Any], path: Path) -> Points:
    """Validation-curve points of a run's ``sizes`` (:class:`edgescale.results.schema.Size`, from its
    ``results.json`` at ``path``; N total, loss in nats/token): the cooled checkpoints when there
    are five, else every point of each training curve."""
    sizes = [s for s in sizes if not s.distilled_from]  # the ladder only
    cooled = [(s, c) for s in sizes for c in s.curve if c.cooled]
    uncooled = [(s, c) for s in sizes for c in s.curve]
    chosen = cooled if len(cooled) >= 5 else uncooled
    if len(chosen) < 5:
        raise UserError(f"{len(chosen)} (N, D, loss) points in the run; a fit needs at least 5", file=path)
    notes = (
        ["cooled checkpoints of warmup-stable-decay runs"]
        if chosen is cooled
        else [
            "no cooled grid in this run: points are validation losses along each size's training curve; "
            "checkpoints before the end of the schedule are not cooled and overstate the loss at that D"
        ]
    )
    return Points(
        np.array([s.params_total for s, _ in chosen], float),
        np.array([c.tokens for _, c in chosen], float),
        np.array([c.val_bpb * math.log(2) for _, c in chosen]),  # byte tokens: nats/token = bpb · ln 2
        source=str(path),
        loss_unit="nats/token (validation, byte tokens)",
        notes=notes,
    )
