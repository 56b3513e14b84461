"""The SQLite results store: schema, lossless round trip, idempotent re-recording, clear
refusals, and no lost rows when several real processes write at once."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from cli_runner import CliResult, run_cli
from rich.console import Console

from edgescale.errors import UserError
from edgescale.store.read import list_runs, load_run, load_variants
from edgescale.store.schema import SCHEMA_VERSION, db_path, run_id_of
from edgescale.store.write import record_run


def _variant(size: str, recipe: str, val_bpb: float) -> dict:
    """A results.json variant entry with the fields the pipeline writes (values made up)."""
    return {
        "variant_id": f"{size}/{recipe}",
        "size": size,
        "recipe": recipe,
        "onnx_path": f"artifacts/{size}{recipe}.onnx",
        "onnx_sha256": "ab" * 32,
        "file_bytes": 120_000,
        "shape": {"n_layer": 1, "n_head": 2, "n_embd": 16, "model": "gpt"},
        "params_non_embedding": 3312,
        "params_total": 7920,
        "train_tokens": 20480,
        "steps": [{"op": "export.onnx", "metrics": {}}],
        "feasibility": [],
        "scratch_twin": None,
        "loss": {
            "validation": {"bits_per_byte": val_bpb, "nats_per_token": val_bpb * 0.693, "tokens": 2048},
            "test": {"bits_per_byte": val_bpb + 0.1, "nats_per_token": (val_bpb + 0.1) * 0.693, "tokens": 2048},
        },
        "cost": {
            "weight_bytes": 8425,
            "decode_context": 32,
            "kv_bytes_at_context": 4096,
            "bytes_per_decoded_token": 12521,
            "flops_per_token": 16384.0,
        },
        "latency": {
            "host": {
                "kind": "measured",
                "latency_source": "measured",
                "prefill_ms_p50": 0.29,
                "prefill_ms_p90": 0.32,
                "decode_ms_p50": 0.12,
                "decode_ms_p90": 0.18,
                "threads": 1,
            },
            "rpi5-8gb": {
                "kind": "predicted",
                "latency_source": "predicted",
                "decode_ms": 0.146,
                "decode_ms_low": 0.115,
                "decode_ms_high": 0.177,
                "prefill_ms": 0.126,
                "energy_mj_per_token": 1.75,
            },
        },
        "flags": ["decode slower than the baseline (measured)"] if recipe != "fp32" else [],
        "on_frontier": recipe == "fp32",
    }


def make_run(root: Path, study: str = "tiny", status: str = "finished", losses=(5.0, 4.9)) -> Path:
    """A hand-made run directory: manifest.json and results.json, nothing else."""
    root.mkdir(parents=True, exist_ok=True)
    machine = {"cpu_model": "Test CPU", "load_avg_start": [0.5, 0.4, 0.3], "load_avg_end": [0.7, 0.5, 0.3]}
    manifest = {
        "edgescale_version": "0.1.0",
        "study": {"name": study},
        "machine": {**machine, "torch_threads": 2, "ort_threads": 1},
        "status": status,
        "seconds": 12.5,
    }
    variants = [_variant("a", r, bpb) for r, bpb in zip(("fp32", "int8_dynamic"), losses, strict=True)]
    results = {
        "study": study,
        "schema_version": 2,
        "loss_target_bpb": 3.3,
        "protocol": {
            "context_length": 32,
            "stride": 32,
            "max_tokens": 2048,
            "split_sha256": "v" * 64,
            "unit": "bits_per_byte",
        },
        "measurement": {"prompt_len": 16, "decode_context": 32, "threads": 1},
        "machine": machine,
        "sizes": [{"size": "a", "params_total": 7920, "train_tokens": 20480}],
        "variants": variants,
        "scaling": {"status": "fitted", "law": {"E": 1.0, "A": 50.0, "B": 80.0, "alpha": 0.3, "beta": 0.3}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "results.json").write_text(json.dumps(results))
    return root


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_new_store_is_versioned_and_in_wal_mode(tmp_path):
    db = tmp_path / "sub" / "store.db"
    record_run(db, make_run(tmp_path / "run"))
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "runs", "variants", "latencies"} <= tables


def test_record_list_load_round_trip(tmp_path):
    """What goes in comes out: the variants exactly as results.json has them, plus the run."""
    db, run = tmp_path / "store.db", make_run(tmp_path / "run", losses=(5.0, 4.9))
    results = json.loads((run / "results.json").read_text())
    rid = record_run(db, run)
    assert rid == run_id_of(run) == str(run.resolve())

    (summary,) = list_runs(db)
    assert (summary.study, summary.status, summary.n_variants, summary.cpu_model) == ("tiny", "finished", 2, "Test CPU")
    assert summary.best_val_bpb == 4.9 and summary.best_variant == "a/int8_dynamic" and summary.present
    assert summary.started_at < summary.finished_at  # started = finished - manifest "seconds"

    loaded = load_variants(db)
    assert [(s.run_id, s.run_dir, s.study, s.loss_target_bpb) for s in loaded] == [
        (rid, run.resolve(), "tiny", 3.3)
    ] * 2
    assert [s.variant.data() for s in loaded] == results["variants"]  # typed, through the one reader
    assert load_variants(db, [run]) == loaded  # a run id may be given as its directory
    assert load_run(db, rid).data() == results  # typed, through the one reader; its run directory is rid

    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT device, latency_source, decode_ms, decode_ms_p90, decode_ms_high, energy_mj_per_token, "
            "cpu_model, load_avg_1m_start FROM latencies WHERE variant_id = 'a/fp32' ORDER BY device"
        ).fetchall()
        flags = con.execute("SELECT flags_json FROM variants WHERE variant_id = 'a/int8_dynamic'").fetchone()[0]
    assert rows == [
        ("host", "measured", 0.12, 0.18, None, None, "Test CPU", 0.5),
        ("rpi5-8gb", "predicted", 0.146, None, 0.177, 1.75, None, None),
    ]
    assert json.loads(flags) == ["decode slower than the baseline (measured)"]


def test_variants_from_several_runs_stay_apart(tmp_path):
    db = tmp_path / "store.db"
    r1, r2 = make_run(tmp_path / "r1", "one"), make_run(tmp_path / "r2", "two", losses=(4.0, 3.9))
    record_run(db, r1)
    record_run(db, r2)
    both = load_variants(db)
    assert [(v.study, v.variant.variant_id) for v in both] == [
        ("one", "a/fp32"),
        ("one", "a/int8_dynamic"),
        ("two", "a/fp32"),
        ("two", "a/int8_dynamic"),
    ]
    assert {v.study for v in load_variants(db, [run_id_of(r2)])} == {"two"}
    with pytest.raises(UserError, match="not in the store") as e:
        load_variants(db, [tmp_path / "r3"])
    assert str(db) in str(e.value)


def test_recording_again_replaces_rows(tmp_path):
    db, run = tmp_path / "store.db", make_run(tmp_path / "run", losses=(5.0, 4.9))
    record_run(db, run)
    record_run(db, run)
    assert [_count(db, t) for t in ("runs", "variants", "latencies")] == [1, 2, 4]
    results = json.loads((run / "results.json").read_text())  # a rerun: one variant left, new loss
    results["variants"] = results["variants"][:1]
    results["variants"][0]["loss"]["validation"]["bits_per_byte"] = 4.5
    (run / "results.json").write_text(json.dumps(results))
    record_run(db, run)
    assert [_count(db, t) for t in ("runs", "variants", "latencies")] == [1, 1, 2]
    assert list_runs(db)[0].best_val_bpb == 4.5


def test_unfinished_run_is_refused_naming_the_manifest(tmp_path):
    db, run = tmp_path / "store.db", make_run(tmp_path / "run", status="running")
    with pytest.raises(UserError, match="not finished") as e:
        record_run(db, run)
    assert str(run / "manifest.json") in str(e.value)
    assert not db.exists()
    with pytest.raises(UserError, match="file not found"):
        record_run(db, tmp_path / "empty")


def test_other_schema_version_or_foreign_file_is_refused_naming_it(tmp_path):
    db = tmp_path / "store.db"
    record_run(db, make_run(tmp_path / "run"))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for call in (lambda: list_runs(db), lambda: record_run(db, tmp_path / "run"), lambda: load_variants(db)):
        with pytest.raises(UserError, match="schema version 99") as e:
            call()
        assert str(db) in str(e.value)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a SQLite database") as e:
        list_runs(junk)
    assert str(junk) in str(e.value)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="not an edgescale results store"):
        record_run(foreign, tmp_path / "run")


def test_reading_a_missing_store_creates_nothing(tmp_path):
    db = tmp_path / "none.db"
    assert list_runs(db) == [] and load_variants(db) == []
    assert not db.exists()


def test_location_option_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGESCALE_DB", raising=False)
    assert db_path() == Path("runs/edgescale.db")
    monkeypatch.setenv("EDGESCALE_DB", str(tmp_path / "env.db"))
    assert db_path() == tmp_path / "env.db"
    assert db_path(tmp_path / "opt.db") == tmp_path / "opt.db"


def test_write_retries_past_the_busy_timeout(tmp_path):
    """Another connection holds the write lock for 0.5 s; with a 10 ms busy timeout only the
    backoff retries can get the write through."""
    db, run = tmp_path / "store.db", make_run(tmp_path / "run")
    record_run(db, run)  # creates the schema
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
    release.start()
    t0 = time.perf_counter()
    try:
        record_run(db, make_run(tmp_path / "run2", "two"), busy_timeout_s=0.01)
    finally:
        release.join()
        blocker.close()
    assert time.perf_counter() - t0 >= 0.45
    assert [r.study for r in list_runs(db)] == ["tiny", "two"]


def _record_many(db: str, own: list[str], shared: str, barrier) -> None:
    barrier.wait()  # all processes start writing together
    for run in own:
        record_run(db, run)
        record_run(db, shared)  # the same run from every process: must stay one row set


def test_concurrent_processes_lose_no_rows(tmp_path):
    """N processes x M record_run calls into one file -> exactly N*M runs (and the run all of
    them re-record concurrently exactly once), no exception."""
    n, m = 4, 50
    db = tmp_path / "store.db"
    own = [[str(make_run(tmp_path / f"p{i}" / f"r{j}", f"p{i}r{j}")) for j in range(m)] for i in range(n)]
    shared = str(make_run(tmp_path / "shared", "shared"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_record_many, args=(str(db), own[i], shared, barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * n
    assert _count(db, "runs") == n * m + 1
    assert _count(db, "variants") == 2 * (n * m + 1)
    assert _count(db, "latencies") == 4 * (n * m + 1)
    assert {r.study for r in list_runs(db)} == {f"p{i}r{j}" for i in range(n) for j in range(m)} | {"shared"}


def _cli(*args, cwd: Path) -> CliResult:
    return run_cli(*args, cwd=cwd)


def test_runs_command_lists_and_adds(tmp_path):
    db = tmp_path / "store.db"
    r = _cli("runs", "--db", db, cwd=tmp_path)
    assert r.returncode == 0 and "no runs recorded" in r.stderr and not db.exists()
    r = _cli("runs", "--db", db, "--add", make_run(tmp_path / "run", "alpha"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["db"] == str(db) and [(x["study"], x["n_variants"], x["best_val_bpb"]) for x in out["runs"]] == [
        ("alpha", 2, 4.9)
    ]
    r = _cli("runs", "--db", db, cwd=tmp_path)
    assert r.returncode == 0 and "alpha" in r.stdout and "Test CPU" in r.stdout
    r = _cli("runs", "--db", db, "--add", make_run(tmp_path / "unfinished", status="running"), cwd=tmp_path)
    assert r.returncode == 2 and "not finished" in r.stderr and "Traceback" not in r.stderr


def test_pipeline_hook_warns_and_keeps_the_run_when_the_store_is_broken(tmp_path, monkeypatch):
    from edgescale.progress import Reporter
    from edgescale.run import record_in_store

    run = make_run(tmp_path / "run")
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    monkeypatch.setenv("EDGESCALE_DB", str(junk))
    log = StringIO()
    record_in_store(run, Reporter(quiet=True, console=Console(file=log, width=400)))
    assert "results store" in log.getvalue() and str(junk) in log.getvalue() and "runs --add" in log.getvalue()
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before


def _timeless(results: dict) -> dict:
    """results without the wall times and peak RSS of its stages (timing, like latency)."""
    variants = [{k: x for k, x in v.items() if k != "resources"} for v in results["variants"]]
    return {**results, "variants": variants}


# -- a real run: the pipeline records it (the session's tiny run, with its own store) ---------
@pytest.mark.slow
def test_pipeline_records_the_finished_run(tiny_run):
    from edgescale.export.canonical import artifact_sha256

    _, run, db = tiny_run
    results = json.loads((run / "results.json").read_text())
    (summary,) = list_runs(db)
    assert summary.run_id == run_id_of(run) and summary.status == "finished" and summary.present
    assert summary.best_val_bpb == min(v["loss"]["validation"]["bits_per_byte"] for v in results["variants"])
    # as recorded (a later test rebuilds one artifact of this shared run: its stage timings are new)
    assert _timeless(load_run(db, summary.run_id).data()) == _timeless(results)
    variants = load_variants(db)
    assert len(variants) == len(results["variants"]) == 6
    for v in variants:
        assert artifact_sha256(v.run_dir / v.variant.onnx_path) == v.variant.onnx_sha256
    with sqlite3.connect(db) as con:
        sources = con.execute("SELECT device, latency_source, COUNT(*) FROM latencies GROUP BY device").fetchall()
    assert sorted(sources) == [("host", "measured", 6), ("rpi5-8gb", "predicted", 6)]
