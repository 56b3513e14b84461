"""Recording a finished run directory: its manifest.json and results.json become one row in
``runs``, one per variant in ``variants`` (the results.json entry kept verbatim beside the
query columns) and one per variant and device in ``latencies``, replaced in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from edgescale.errors import UserError
from edgescale.results import Results, read_results
from edgescale.results.schema import HostLatency, Variant
from edgescale.store.schema import BUSY_TIMEOUT_S, WRITE_ATTEMPTS, run_id_of, write_transaction


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

    return write_transaction(Path(db), replace, busy_timeout_s, WRITE_ATTEMPTS)
