"""pick and compare on a real (tiny) run: the picked ONNX file, evaluated again independently
on the test split with the run's protocol, has the test loss pick reports; the JSON outputs
are valid and carry their fields; results.json holds the same analysis; the store seam
(--all-runs) finds the run."""

import json
import subprocess
import sys

import pytest
from tiny_study import TINY

from edgescale.bench.loss import onnx_loss
from edgescale.config import CorpusConfig
from edgescale.data.corpus import eval_spans, load_corpus

TARGET = TINY["loss_target_bpb"]  # bits per byte: the tiny models reach about 4.9 on validation


@pytest.fixture
def run_dir(tiny_run):
    return tiny_run[1]


def costs(results):
    return [v["cost"] for v in results["variants"]]


def _cli(*args):
    cmd = [sys.executable, "-m", "edgescale.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_picked_onnx_file_reproduces_its_reported_test_loss(run_dir):
    r = _cli("pick", run_dir, "--target-loss", TARGET, "--device", "rpi5-8gb", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    v = out["variant"]
    assert out["status"] == "ok" and v["loss"]["selected_on"] == "validation"
    assert v["loss"]["validation_bpb"] <= TARGET and v["latency"]["source"] == "predicted"
    assert {"params_total", "file_bytes", "onnx_file", "onnx_sha256", "peak_memory_bytes", "cost"} <= set(v)
    results = json.loads((run_dir / "results.json").read_text())
    p = results["protocol"]
    corpus = load_corpus(CorpusConfig())
    assert corpus["test"].sha256 == p["test_split_sha256"]
    spans = eval_spans(corpus["test"], p["max_bytes"], p["sampling"]["segments"], p["sampling"]["scheme"])
    scoring = (p["context_length"], p["stride"], p["max_bytes"], p["batch_size"])
    got = onnx_loss(v["onnx_file"], corpus["test"], *scoring, spans)
    assert got.bits_per_byte == pytest.approx(v["loss"]["test_bpb"], rel=1e-3)
    assert (got.bits_per_byte <= TARGET) == v["loss"]["test_meets_target"]
    # results.json carries the same answer for the study's target on every study device
    stored = results["analysis"]["picks"]["rpi5-8gb"]
    assert stored["variant"]["variant_id"] == v["variant_id"] and stored["cost_axis"] == out["cost_axis"]
    assert set(results["analysis"]["picks"]) == {"host", "rpi5-8gb"}
    # resident weights (embedding tables in full) + KV + an activation exceed what a token streams
    assert all(c["peak_memory_bytes"] > c["weight_bytes"] + c["kv_bytes_at_context"] for c in costs(results))


@pytest.mark.slow
def test_pick_text_plan_and_infeasible(run_dir):
    text = _cli("pick", run_dir, "--target-loss", TARGET, "--device", "host")
    assert text.returncode == 0 and "pick: " in text.stderr and "measured" in text.stderr
    low = _cli("pick", run_dir, "--target-loss", 0.5, "--device", "rpi5-8gb", "--json")
    body = json.loads(low.stdout)
    assert body["status"] in ("plan", "infeasible", "unidentified") and body["reason"]
    if body["status"] == "plan":  # never numbers from the run's own fit when it is unidentified
        assert body["law"]["reliable"] or not body["law"]["law"].startswith("fit (this run")
    if body["status"] == "unidentified":  # what to train to find out, with sizes and tokens
        assert body["identify_with"]["add_sizes"] and body["identify_with"]["token_budgets"]
    assert low.returncode == (3 if body["status"] == "infeasible" else 0)


@pytest.mark.slow
def test_compare_json_has_its_fields(run_dir):
    r = _cli("compare", run_dir, "--size", "b", "--device", "rpi5-8gb", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["recipe"]: row for row in out["sizes"][0]["rows"]}
    assert set(rows) == {"fp32", "int8_dynamic"} and out["baseline"] == "fp32"
    q = rows["int8_dynamic"]
    for field in ("delta_validation_bpb", "delta_test_bpb", "file_bytes", "on_frontier", "flags", "device_latency"):
        assert field in q
    s = q["host_decode_speedup"]
    assert s["low"] <= s["speedup"] <= s["high"] and isinstance(s["within_noise"], bool)
    assert q["file_ratio"] < 1  # int8 weights: a smaller file
    assert _cli("compare", run_dir).returncode == 0


@pytest.mark.slow
def test_all_runs_from_the_store(run_dir, tmp_path):
    from edgescale.store.write import record_run

    db = tmp_path / "store.db"
    record_run(db, run_dir)
    r = _cli("pick", "--all-runs", "--db", db, "--target-loss", TARGET, "--device", "host", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "ok" and out["runs"] == [str(run_dir.resolve())]
