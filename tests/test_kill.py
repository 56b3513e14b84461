"""`edgescale run` killed with SIGKILL (real subprocesses) at several stages, then rerun.

One run directory is killed in turn during training (after a resume checkpoint), during
quantization (the step's output written, not yet stored: the ``EDGESCALE_KILL_AT`` hook
of edgescale.rundir), during host-latency measurement (while the timing worker runs) and
while the report is written; each rerun resumes, and the last one finishes. Its
deterministic fields (artifact hashes, loss curves, held-out losses) must equal those of
an uninterrupted run, and every file in the run directory must be intact. Then a checkpoint
and a quantized graph are corrupted in place (same size, flipped bytes): the rerun
quarantines and rebuilds them under the same hashes. A second run started while the
first holds the directory is refused with one clear message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest
import yaml
from run_fields import deterministic

from edgescale.export.canonical import artifact_sha256

STUDY = {
    "schema_version": 1,
    "name": "killed",
    "seed": 0,
    "ladder": {"block_size": 32, "sizes": [{"name": "a", "n_layer": 2, "n_head": 2, "n_embd": 32}]},
    "training": {
        "tokens_per_param": 1,
        "min_tokens": 20_480,
        "max_tokens": 20_480,
        "batch_size": 16,  # 40 steps of 16 x 32 tokens
        "eval_every_tokens": 5120,  # a curve point every 10 steps
        "eval_tokens": 1024,
        "checkpoint_every_steps": 7,  # resume checkpoints that do not line up with the curve points
        "threads": 1,
        "learning_rate": 0.01,
    },
    "evaluation": {"context_length": 32, "stride": 32, "max_tokens": 1024, "batch_size": 8},
    "measurement": {"prompt_len": 16, "decode_context": 32, "repeats": 5, "warmup": 1, "threads": 1},
    "recipes": ["fp32", "int8_dynamic"],
    "devices": ["host"],
}
TIMEOUT_S = 900  # per run; about 30 s each on 2 idle cores
_STARTED: list[subprocess.Popen] = []


def _start(study: Path, out: Path, **env: str) -> subprocess.Popen:
    """`edgescale run` in its own session (so the kill reaches the timing worker too)."""
    log = out.parent / f"{out.name}.{time.monotonic_ns()}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgescale.cli", "run", str(study), "--out", str(out)],
            cwd=out.parent,
            env={**os.environ, "EDGESCALE_DB": str(out.parent / "store.db"), "COLUMNS": "300", **env},
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log
    _STARTED.append(proc)
    return proc


def _log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()


def _finish(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=TIMEOUT_S)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}:\n{_log(proc)[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    assert _finish(proc) == -signal.SIGKILL


def _children_running(proc: subprocess.Popen, script: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            ppid = int(
                next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("PPid"))[5:]
            )
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == proc.pid and script.encode() in cmd:
            return True
    return False


def _deterministic(run: Path) -> dict:
    return deterministic(run, ("onnx_path", "onnx_sha256", "file_bytes", "loss", "cost", "steps"))


def _assert_intact(run: Path) -> None:
    """Every file parses, every artifact matches its hash (manifest, name, cache records)."""
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    for rel, sha in manifest["artifacts"].items():
        assert artifact_sha256(run / rel) == sha, rel
    for f in (run / "artifacts").iterdir():
        assert artifact_sha256(f).startswith(f.stem), f
        if f.suffix == ".onnx":
            ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    for f in run.rglob("*.json"):
        rec = json.loads(f.read_text())
        for rel, sha in rec.get("_artifacts", {}).items() if f.parent.name == "cache" else ():
            assert artifact_sha256(run / rel) == sha, (f, rel)
    assert not list(run.rglob("*.tmp")), "temp files of interrupted writes left behind"
    assert not list((run / "train").rglob("resume.*")), "resume state left behind"


@pytest.fixture(scope="module", autouse=True)
def _no_run_left_behind():
    yield
    for proc in _STARTED:  # a failed assertion must not leave a run (or a stopped one) behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill") / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


@pytest.fixture(scope="module")
def uninterrupted(study) -> dict:
    out = study.parent / "uninterrupted"
    proc = _start(study, out)
    assert _finish(proc) == 0, _log(proc)
    return _deterministic(out)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_killed_at_each_stage_then_rerun_equals_an_uninterrupted_run(study, uninterrupted):
    run = study.parent / "killed"

    # 1. training, after a resume checkpoint (step 7, 14, ...), between two curve points
    proc = _start(study, run)
    _kill_when(proc, lambda: (run / "train" / "a" / "resume.json").exists(), "a resume checkpoint")
    assert not (run / "results.json").exists()

    # 2. quantization: int8 graph written in work/, not yet moved into artifacts/ nor recorded
    proc = _start(study, run, EDGESCALE_KILL_AT="store:model.int8_dynamic.onnx")
    assert _finish(proc) == -signal.SIGKILL, _log(proc)[-3000:]
    assert list((run / "work").glob("*/model.int8_dynamic.onnx"))
    assert not (run / "results.json").exists()

    # 3. host-latency measurement, while the timing worker runs
    proc = _start(study, run)
    _kill_when(proc, lambda: _children_running(proc, "_ort_worker.py"), "the timing worker")
    assert not (run / "results.json").exists()

    # 4. report: results.json is written, the figures and report.html not all yet
    proc = _start(study, run)
    _kill_when(proc, lambda: (run / "results.json").exists(), "results.json")
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"

    proc = _start(study, run)
    assert _finish(proc) == 0, _log(proc)[-3000:]
    log = _log(proc)
    for unit in ("train a", "a/fp32: export.onnx", "a/int8_dynamic: quantize.int8_dynamic", "host latency"):
        assert f"reused {unit}" in log, unit
    _assert_intact(run)
    assert _deterministic(run) == uninterrupted
    assert (run / "report.html").stat().st_size > 1000

    # Corrupted in place, same size: detected by hash, quarantined, rebuilt bit-identically.
    manifest = json.loads((run / "manifest.json").read_text())
    victims = [run / rel for rel in manifest["artifacts"] if rel.endswith(".safetensors")]
    victims += [run / v["onnx_path"] for k, v in uninterrupted["variants"].items() if k.endswith("int8_dynamic")]
    for v in victims:
        data = bytearray(v.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        v.write_bytes(bytes(data))
    proc = _start(study, run)
    assert _finish(proc) == 0, _log(proc)[-3000:]
    assert "failed its hash check" in _log(proc)
    assert {p.name for p in (run / "quarantine").iterdir()} == {v.name for v in victims}
    _assert_intact(run)
    assert _deterministic(run) == uninterrupted


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_second_run_on_a_busy_directory_is_refused_and_changes_nothing(study):
    run = study.parent / "busy"
    first = _start(study, run)
    ckpt = run / "train" / "a" / "resume.json"
    deadline = time.monotonic() + TIMEOUT_S
    while not ckpt.exists():  # the first run holds the lock while it trains
        assert first.poll() is None and time.monotonic() < deadline, _log(first)[-3000:]
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGSTOP)  # hold it there, lock and all
    try:
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        second = _start(study, run)
        assert _finish(second) == 2
        msg = _log(second)
        assert "another edgescale run is using this run directory" in msg and str(run) in msg
        assert "Traceback" not in msg
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        _finish(first)
