"""Reading the store: the recorded runs as ``edgescale runs`` lists them, and a run's typed
results or its variants rebuilt from the stored ``results.json`` entries through the one reader.
Reading creates nothing: a missing file reads as an empty store.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from edgescale.errors import UserError
from edgescale.results import Results, parse_results
from edgescale.results.schema import Variant
from edgescale.store.schema import BUSY_TIMEOUT_S, read_transaction, run_id_of


@dataclass(frozen=True)
class RunSummary:
    """One recorded run, as ``edgescale runs`` lists it."""

    run_id: str
    study: str
    started_at: str | None
    finished_at: str | None
    recorded_at: str
    edgescale_version: str | None
    cpu_model: str | None
    threads: int | None
    status: str
    results_path: str
    loss_target_bpb: float | None
    n_variants: int
    best_val_bpb: float | None
    best_variant: str | None
    present: bool  # results.json still where it was recorded

    def to_dict(self) -> dict:
        return asdict(self)


def list_runs(db: Path | str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> list[RunSummary]:
    """Every recorded run, oldest first, with its variant count and best validation loss."""
    sql = """
        SELECT r.run_id, r.study, r.started_at, r.finished_at, r.recorded_at, r.edgescale_version,
               r.cpu_model, r.threads, r.status, r.results_path, r.loss_target_bpb,
               (SELECT COUNT(*) FROM variants v WHERE v.run_id = r.run_id),
               (SELECT MIN(val_bpb) FROM variants v WHERE v.run_id = r.run_id),
               (SELECT variant_id FROM variants v WHERE v.run_id = r.run_id AND val_bpb IS NOT NULL
                ORDER BY val_bpb LIMIT 1)
        FROM runs r ORDER BY r.finished_at, r.run_id
    """

    def fetch(con: sqlite3.Connection) -> list[RunSummary]:
        return [RunSummary(*row, present=Path(row[9]).is_file()) for row in con.execute(sql)]

    return read_transaction(Path(db), fetch, [], busy_timeout_s)


def _known_ids(con: sqlite3.Connection, db: Path, run_ids: list[str] | None) -> list[str]:
    known = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY finished_at, run_id")]
    if run_ids is None:
        return known
    wanted = [run_id_of(r) for r in run_ids]
    missing = [r for r in wanted if r not in known]
    if missing:
        raise UserError(
            f"run(s) not in the store: {', '.join(missing)}; recorded: {', '.join(known) or 'none'} "
            "(record one with edgescale runs --add RUN_DIR)",
            file=db,
            field="run_id",
        )
    return wanted


@dataclass(frozen=True)
class StoredVariant:
    """A recorded variant with the run it belongs to (``variant_id`` is unique within a run only)."""

    run_id: str
    run_dir: Path  # ``run_dir / variant.onnx_path`` is the file
    study: str
    loss_target_bpb: float | None
    variant: Variant


def _run_data(con: sqlite3.Connection, rid: str) -> dict:
    """A recorded run's ``results.json`` data, variants in their recorded order."""
    (rj,) = con.execute("SELECT results_json FROM runs WHERE run_id = ?", (rid,)).fetchone()
    rows = con.execute("SELECT variant_json FROM variants WHERE run_id = ? ORDER BY position", (rid,))
    return {**json.loads(rj), "variants": [json.loads(r[0]) for r in rows]}


def _recorded(
    db: Path, run_ids: list[str] | None, busy_timeout_s: float
) -> list[tuple[str, str, float | None, Results]] | None:
    """(run id, study, loss target) as the runs table has them, and the typed results, of each
    given run (default: all); None where there is no store."""

    def fetch(con: sqlite3.Connection) -> list[tuple[str, str, float | None, dict]]:
        sql = "SELECT study, loss_target_bpb FROM runs WHERE run_id = ?"
        return [
            (rid, *con.execute(sql, (rid,)).fetchone(), _run_data(con, rid)) for rid in _known_ids(con, db, run_ids)
        ]

    found = read_transaction(db, fetch, None, busy_timeout_s)
    if found is None:
        return None
    return [(rid, study, target, parse_results(data, f"{db}: run {rid}")) for rid, study, target, data in found]


def load_variants(
    db: Path | str, run_ids: list[str] | None = None, *, busy_timeout_s: float = BUSY_TIMEOUT_S
) -> list[StoredVariant]:
    """Variants of the given runs (default: all), typed through the one reader, each with its
    run's id, directory, study and ``loss_target_bpb``. A run id may be given as its run directory."""
    db = Path(db)
    found = _recorded(db, run_ids, busy_timeout_s)
    if found is None and run_ids:
        raise UserError("no results store here; runs are recorded when they finish", file=db)
    return [
        StoredVariant(rid, Path(rid), study, target, v)
        for rid, study, target, results in found or []
        for v in results.variants
    ]


def load_run(db: Path | str, run_id: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Results:
    """A recorded run's typed results as they were recorded (loss target, scaling fit,
    protocol, variants, ...); its run directory is ``run_id``."""
    db = Path(db)
    found = _recorded(db, [run_id], busy_timeout_s)
    if found is None:
        raise UserError("no results store here; runs are recorded when they finish", file=db)
    return found[0][3]
