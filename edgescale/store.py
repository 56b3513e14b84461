"""The results store: every finished run's variants and measurements in one SQLite file,
so ``edgescale runs`` lists runs and the analysis (pick, compare) can span several runs.

``results.json`` stays the source of truth; the store is an index over run directories
and can be rebuilt from them (``edgescale runs --add RUN_DIR``).

- **Run id** = the run directory's resolved path. A run directory holds one current
  ``results.json`` (a rerun overwrites it, reusing finished work), and every ONNX path in
  it is relative to that directory, so one row set per directory mirrors what is on disk.
  A hash of the manifest would change on every rerun (the manifest records the wall time)
  and leave stale duplicates that point at overwritten files; the manifest's hash is kept
  as a column instead, to trace which manifest a row set came from.
- **Concurrency.** WAL journal (readers never block the writer), a busy timeout, and each
  write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
  writers cannot deadlock upgrading a read lock) retried with jittered exponential
  backoff while SQLite reports the database busy or locked. WAL needs a local file
  system (https://www.sqlite.org/wal.html: not over a network file system).
- **Lossless.** Each variant is kept as its ``results.json`` entry (``variant_json``) next
  to the columns one queries by, so :func:`load_run` rebuilds ``results.json`` exactly and
  :func:`load_variants` gives the same typed variants, both through the one reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from edgescale import __version__
from edgescale.errors import UserError
from edgescale.results import Results, parse_results, read_results
from edgescale.results.schema import HostLatency, Variant

SCHEMA_VERSION = 1
DEFAULT_DB = Path("runs") / "edgescale.db"  # relative to the working directory, beside runs/<study>/
ENV_VAR = "EDGESCALE_DB"
BUSY_TIMEOUT_S = 30.0  # SQLite's own wait for the lock, per attempt
WRITE_ATTEMPTS = 8  # then give up: ~10 s of backoff on top of the busy timeouts
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.05, 2.0

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,            -- the run directory's resolved path
    study TEXT NOT NULL,
    started_at TEXT,                    -- ISO 8601 UTC
    finished_at TEXT,
    recorded_at TEXT NOT NULL,
    edgescale_version TEXT,
    cpu_model TEXT,
    threads INTEGER,                    -- onnxruntime threads of the latency measurement
    train_threads INTEGER,
    status TEXT NOT NULL,               -- the manifest's status (only finished runs are recorded)
    results_path TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    results_sha256 TEXT NOT NULL,
    loss_target_bpb REAL,
    results_json TEXT NOT NULL          -- results.json without its variants (protocol, scaling, ...)
);
CREATE TABLE variants (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    variant_id TEXT NOT NULL,
    position INTEGER NOT NULL,          -- order in results.json
    size TEXT NOT NULL,
    recipe TEXT NOT NULL,
    params_non_embedding INTEGER,
    params_total INTEGER,
    train_tokens INTEGER,
    file_bytes INTEGER,
    onnx_path TEXT,                     -- relative to the run directory
    onnx_sha256 TEXT,
    val_bpb REAL,
    test_bpb REAL,
    bytes_per_decoded_token INTEGER,
    flops_per_token REAL,
    flops_context INTEGER,
    on_frontier INTEGER,
    flags_json TEXT NOT NULL,
    variant_json TEXT NOT NULL,         -- the results.json entry, verbatim
    PRIMARY KEY (run_id, variant_id)
);
CREATE TABLE latencies (
    run_id TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    device TEXT NOT NULL,
    latency_source TEXT NOT NULL CHECK (latency_source IN ('measured', 'predicted')),
    prefill_ms REAL,                    -- p50 when measured, the point estimate when predicted
    prefill_ms_p90 REAL,
    decode_ms REAL,
    decode_ms_p90 REAL,
    decode_ms_low REAL,                 -- predicted: the interval from the device's anchors
    decode_ms_high REAL,
    energy_mj_per_token REAL,
    cpu_model TEXT,                     -- measured: the machine and its load at the time
    threads INTEGER,
    load_avg_1m_start REAL,
    load_avg_1m_end REAL,
    PRIMARY KEY (run_id, variant_id, device),
    FOREIGN KEY (run_id, variant_id) REFERENCES variants (run_id, variant_id) ON DELETE CASCADE
);
CREATE INDEX variants_by_recipe ON variants (recipe, size);
"""

T = TypeVar("T")


class StoreBusyError(RuntimeError):
    """The database stayed locked by other writers through every retry."""


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


def db_path(option: Path | str | None = None) -> Path:
    """Where the store lives: ``--db``, else ``$EDGESCALE_DB``, else ``runs/edgescale.db``."""
    if option is not None:
        return Path(option)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_DB


def run_id_of(run_dir: Path | str) -> str:
    return str(Path(run_dir).resolve())


# -- connections, schema, retries ----------------------------------------------------
def _is_busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _connect(db: Path, busy_timeout_s: float) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    con = sqlite3.connect(str(db), timeout=busy_timeout_s, isolation_level=None)
    try:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        con.close()
        raise
    except sqlite3.DatabaseError as e:  # "file is not a database"
        con.close()
        raise UserError(f"not a SQLite database ({e}); pass --db or set {ENV_VAR} to another file", file=db) from None
    return con


def _schema_version(con: sqlite3.Connection, db: Path) -> int | None:
    """The file's schema version; None for an empty database. Refuses anything else."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "meta" not in tables:
        raise UserError(
            f"not an edgescale results store (tables: {', '.join(sorted(tables))}); "
            f"pass --db or set {ENV_VAR} to another file",
            file=db,
        )
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else None
    if found != SCHEMA_VERSION:
        raise UserError(
            f"results store has schema version {found}; edgescale {__version__} reads version {SCHEMA_VERSION}. "
            f"Move the file aside (runs can be recorded again with edgescale runs --add RUN_DIR) "
            f"or pass --db / set {ENV_VAR} to another file",
            file=db,
            field="meta.schema_version",
        )
    return found


def _retrying(db: Path, busy_timeout_s: float, attempts: int, body: Callable[[], T]) -> T:
    delay = FIRST_BACKOFF_S
    for attempt in range(1, attempts + 1):
        try:
            return body()
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            if attempt == attempts:
                raise StoreBusyError(f"{db}: still locked by other writers after {attempts} attempts ({e})") from e
        # Jitter keeps processes that collided once from colliding again in lockstep.
        time.sleep(delay * random.uniform(1.0, 2.0))
        delay = min(2 * delay, MAX_BACKOFF_S)
    raise AssertionError("unreachable")


def _write(db: Path, fn: Callable[[sqlite3.Connection], T], busy_timeout_s: float, attempts: int) -> T:
    """Run ``fn`` in one write transaction (creating the schema in a new file), with retries."""
    db.parent.mkdir(parents=True, exist_ok=True)

    def once() -> T:
        con = _connect(db, busy_timeout_s)
        try:
            con.execute("BEGIN IMMEDIATE")
            if _schema_version(con, db) is None:
                # One statement at a time: executescript() would COMMIT our transaction.
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    con.execute(stmt)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            out = fn(con)
            con.execute("COMMIT")
            return out
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
            con.close()

    return _retrying(db, busy_timeout_s, attempts, once)


def _read(db: Path, fn: Callable[[sqlite3.Connection], T], empty: T, busy_timeout_s: float) -> T:
    """Run ``fn`` on the store; ``empty`` when the file does not exist (reading creates nothing)."""
    if not db.exists():
        return empty

    def once() -> T:
        con = _connect(db, busy_timeout_s)
        try:
            return empty if _schema_version(con, db) is None else fn(con)
        finally:
            con.close()

    return _retrying(db, busy_timeout_s, WRITE_ATTEMPTS, once)


# -- recording a run ---------------------------------------------------------------------
def _read_json(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise UserError("file not found; is this an edgescale run directory?", file=path)
    raw = path.read_bytes()
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"invalid JSON ({e})", file=path) from None
    if not isinstance(obj, dict):
        raise UserError("expected a JSON object", file=path)
    return obj, hashlib.sha256(raw).hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _run_row(run_dir: Path, manifest: dict, man_sha: str, results: Results, res_sha: str) -> dict:
    # The manifest has no wall-clock stamps: it is written last, when the run finishes,
    # so its mtime is the finish time, and its "seconds" the run's duration.
    man_path = run_dir / "manifest.json"
    finished = manifest.get("finished_at") or _iso(man_path.stat().st_mtime)
    started = manifest.get("started_at")
    if started is None and isinstance(manifest.get("seconds"), (int, float)):
        started = _iso(man_path.stat().st_mtime - manifest["seconds"])
    machine = manifest.get("machine", {})
    m = results.measurement
    data = results.data()
    return {
        "run_id": run_id_of(run_dir),
        "study": results.study,
        "started_at": started,
        "finished_at": finished,
        "recorded_at": _iso(time.time()),
        "edgescale_version": manifest.get("edgescale_version"),
        "cpu_model": results.machine.get("cpu_model") or machine.get("cpu_model"),
        "threads": m.threads if "threads" in m.model_fields_set else machine.get("ort_threads"),
        "train_threads": machine.get("torch_threads"),
        "status": manifest["status"],
        "results_path": str((run_dir / "results.json").resolve()),
        "manifest_sha256": man_sha,
        "results_sha256": res_sha,
        "loss_target_bpb": results.loss_target_bpb,
        "results_json": json.dumps({k: v for k, v in data.items() if k != "variants"}),
    }


def _variant_row(run_id: str, position: int, v: Variant, entry: dict) -> dict:
    """``entry`` is ``v`` as results.json has it (stored verbatim)."""
    return {
        "run_id": run_id,
        "variant_id": v.variant_id,
        "position": position,
        "size": v.size,
        "recipe": v.recipe,
        "params_non_embedding": v.params_non_embedding,
        "params_total": v.params_total,
        "train_tokens": v.train_tokens,
        "file_bytes": v.file_bytes,
        "onnx_path": v.onnx_path,
        "onnx_sha256": v.onnx_sha256,
        "val_bpb": v.bpb("validation"),
        "test_bpb": v.bpb("test"),
        "bytes_per_decoded_token": v.cost.bytes_per_decoded_token,
        "flops_per_token": v.cost.flops_per_token,
        "flops_context": v.cost.decode_context,  # FLOPs are counted at the decode context (schema 2)
        "on_frontier": None if v.on_frontier is None else int(v.on_frontier),
        "flags_json": json.dumps(v.flags),
        "variant_json": json.dumps(entry),
    }


def _latency_rows(run_id: str, v: Variant, machine: dict) -> list[dict]:
    rows = []
    load_start, load_end = machine.get("load_avg_start") or [None], machine.get("load_avg_end") or [None]
    for device, lat in v.latency.items():
        measured = isinstance(lat, HostLatency)
        row = {"run_id": run_id, "variant_id": v.variant_id, "device": device, "latency_source": lat.latency_source}
        if measured:
            row |= {
                "prefill_ms": lat.prefill_ms_p50,
                "prefill_ms_p90": lat.prefill_ms_p90,
                "decode_ms": lat.decode_ms_p50,
                "decode_ms_p90": lat.decode_ms_p90,
                "decode_ms_low": None,
                "decode_ms_high": None,
                "energy_mj_per_token": None,
            }
        else:
            row |= {
                "prefill_ms": lat.prefill_ms,
                "prefill_ms_p90": None,
                "decode_ms": lat.decode_ms,
                "decode_ms_p90": None,
                "decode_ms_low": lat.decode_ms_low,
                "decode_ms_high": lat.decode_ms_high,
                "energy_mj_per_token": lat.energy_mj_per_token,
            }
        rows.append(
            row
            | {
                "cpu_model": machine.get("cpu_model") if measured else None,
                "threads": lat.threads if measured else None,
                "load_avg_1m_start": load_start[0] if measured else None,
                "load_avg_1m_end": load_end[0] if measured else None,
            }
        )
    return rows


def _insert(con: sqlite3.Connection, table: str, rows: list[dict]) -> None:
    if rows:
        cols = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        con.executemany(sql, [[r[c] for c in cols] for r in rows])


def record_run(db: Path | str, run_dir: Path | str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> str:
    """Record a finished run directory (its manifest.json and results.json); return its run id.

    Recording the same directory again replaces its rows in one transaction.

    Example::

        run_id = record_run("runs/edgescale.db", "runs/default")
    """
    run_dir = Path(run_dir)
    manifest, man_sha = _read_json(run_dir / "manifest.json")
    if manifest.get("status") != "finished":
        raise UserError(
            f"the run is not finished (status {manifest.get('status')!r}); only finished runs are recorded",
            file=run_dir / "manifest.json",
            field="status",
        )
    results = read_results(run_dir)  # the one reader: migrated, validated, or a UserError naming the file
    res_sha = hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest()
    run = _run_row(run_dir, manifest, man_sha, results, res_sha)
    rid = run["run_id"]
    entries = results.data()["variants"]
    vrows = [_variant_row(rid, i, v, e) for i, (v, e) in enumerate(zip(results.variants, entries, strict=True))]
    lrows = [r for v in results.variants for r in _latency_rows(rid, v, results.machine)]

    def replace(con: sqlite3.Connection) -> str:
        for table in ("latencies", "variants", "runs"):  # children first
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", (rid,))
        _insert(con, "runs", [run])
        _insert(con, "variants", vrows)
        _insert(con, "latencies", lrows)
        return rid

    return _write(Path(db), replace, busy_timeout_s, WRITE_ATTEMPTS)


# -- reading ----------------------------------------------------------------------------
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

    return _read(Path(db), fetch, [], busy_timeout_s)


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

    found = _read(db, fetch, None, busy_timeout_s)
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
