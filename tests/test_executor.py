"""The Ray executor on a local Ray instance gives the local executor's deterministic results.

Same study, two run directories: the ladder, its replicate, the distilled student and its twins
trained as Ray tasks; hashes, losses and curves must be equal; latencies are
compared only for their presence (another process measured them), and the measuring
host is recorded. Skipped when Ray is not installed (``pip install 'edgescale[ray]'``).
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from run_fields import deterministic

from edgescale.errors import UserError
from edgescale.progress import Reporter
from edgescale.run import run_study

STUDY = {
    "schema_version": 1,
    "name": "on-ray",
    "seed": 0,
    "ladder": {
        "block_size": 32,
        "sizes": [
            {"name": "b", "n_layer": 1, "n_head": 2, "n_embd": 16},
            {"name": "a", "n_layer": 2, "n_head": 2, "n_embd": 32},
        ],
    },
    "training": {
        "tokens_per_param": 1,
        "min_tokens": 10_240,
        "max_tokens": 10_240,
        "batch_size": 16,
        "eval_every_tokens": 5120,
        "eval_tokens": 1024,
        "threads": 1,
        "learning_rate": 0.01,
        "seeds": 2,
    },
    "distillation": {"teacher": "a", "students": ["b"], "seeds": 2, "equal_compute": True},
    "evaluation": {"context_length": 32, "stride": 32, "max_tokens": 1024, "batch_size": 8},
    "measurement": {"prompt_len": 16, "decode_context": 32, "repeats": 5, "warmup": 1, "threads": 1},
    "recipes": ["fp32", "int8_dynamic"],
    "devices": ["host"],
}


def _deterministic(run: Path) -> dict:
    return deterministic(run, ("onnx_sha256", "file_bytes", "loss", "cost", "steps", "flags"))


def test_unknown_executor_is_refused_before_any_work(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    with pytest.raises(UserError, match="--executor: unknown executor 'spark'; allowed: local, ray"):
        run_study(study, tmp_path / "run", Reporter(quiet=True), executor="spark")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ray_executor_gives_the_local_executors_results(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("EDGESCALE_DB", str(tmp_path / "store.db"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    local = run_study(study, tmp_path / "local", Reporter(quiet=True))
    buf = StringIO()
    on_ray = run_study(study, tmp_path / "ray", Reporter(console=Console(file=buf, width=200)), executor="ray")
    log = buf.getvalue()
    assert "a/fp32 on ray" in log and "a/int8_dynamic on ray" in log and "measured on" in log
    assert "reused host latency" in log  # the driver found the measurement task's record
    # every training run was a task: the sizes and replicates, then the student, then its equal-compute twin
    for run in ("train a on ray", "train b seed 1 on ray", "train b-kd on ray", "train b-kd seed 1 on ray"):
        assert run in log
    assert "train b-eqc on ray" in log and "train b-eqc seed 1 on ray" in log
    assert "train a (" not in log  # nothing trained on the driver
    assert -1 < log.index("training estimate: 8 runs, 112,640 tokens") < log.index("train a on ray")  # before training
    assert "wall time unknown on cpu on the Ray cluster" in log
    assert _deterministic(on_ray) == _deterministic(local)
    distill = [json.loads((r / "results.json").read_text())["distillation"] for r in (local, on_ray)]
    assert distill[0] == distill[1] and distill[0]
    results = json.loads((on_ray / "results.json").read_text())
    assert results["machine"]["hostname"] and results["machine"]["cpu_model"]
    for v in results["variants"]:
        assert v["latency"]["host"]["decode_ms_p50"] > 0
