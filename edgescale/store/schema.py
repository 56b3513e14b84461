"""The store's schema and how it is opened: the DDL and its version, where the file lives,
connections (WAL, busy timeout) and the read and write transactions, each retried with
jittered exponential backoff while SQLite reports the database busy or locked.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edgescale import __version__
from edgescale.errors import UserError

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


def write_transaction(db: Path, fn: Callable[[sqlite3.Connection], T], busy_timeout_s: float, attempts: int) -> T:
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


def read_transaction(db: Path, fn: Callable[[sqlite3.Connection], T], empty: T, busy_timeout_s: float) -> T:
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
