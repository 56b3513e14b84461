"""The training estimate printed before a study trains: what it counts, its FLOPs and its wall time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgescale.backends.torch_lm import TorchBackend
from edgescale.errors import UserError
from edgescale.models.gpt import GPTConfig
from edgescale.scaling.estimate import estimate_training, flops_per_token, measured_against, summarise
from edgescale.scaling.plan import DEFAULT_MFU
from edgescale.study_inputs import load_inputs

REPO = Path(__file__).resolve().parents[2]


def _runs(study_file: Path, corpus=None):
    inputs = load_inputs(study_file, corpus_path=corpus)
    trains = {p.name for p in inputs.plans if isinstance(inputs.backends[p.name], TorchBackend)}
    return inputs, estimate_training(inputs.study, inputs.plans, trains, inputs.corpus["train"].n_tokens)


def test_flops_per_token_is_palms_count():
    """3 x forward = 6·N (every matmul weight, the tied head once per use) + 12·L·T·d (PaLM appendix B)."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)
    plan = type("P", (), {"cfg": cfg})()
    d, f, L, T, V = 32, 4 * 32, 2, 64, 256
    n_matmul = L * (4 * d * d + 2 * d * f) + V * d
    assert 3 * flops_per_token(plan, T) == pytest.approx(6 * n_matmul + 12 * L * T * d)


def test_the_default_study_counts_every_training_run():
    """The ladder (4 sizes, 1 seed), the student's 2 seeds, the student's equal-token twin for seed 1
    (the ladder has only seed 0) and its 2 equal-compute twins: 9 runs, in the order they train."""
    inputs, runs = _runs(REPO / "studies" / "default.yaml")
    labels = [r[0] for r in runs]
    assert labels == [
        "s0 seed 0",
        "s1 seed 0",
        "s2 seed 0",
        "s3 seed 0",
        "s1-kd seed 0",
        "s1-eqc seed 0",
        "s1-kd seed 1",
        "s1 seed 1",
        "s1-eqc seed 1",
    ]
    by = {r[0]: r for r in runs}
    # s3: 1.25M tokens in 306 steps of 32 x 128 plus its non-final cooled branches (25%, 50%: 15 + 31 steps)
    assert by["s3 seed 0"][1] == (306 + 15 + 31) * 32 * 128
    # the student has no non-final branches; its teacher's forward passes cost extra FLOPs per token
    assert by["s1-kd seed 0"][1] == 306 * 32 * 128
    assert by["s1-kd seed 0"][2] > by["s1 seed 0"][2] * by["s1-kd seed 0"][1] / by["s1 seed 0"][1]
    # the equal-compute twin has the student's FLOPs (up to rounding to whole steps and its validation)
    assert by["s1-eqc seed 0"][2] == pytest.approx(by["s1-kd seed 0"][2], rel=0.02)


def test_wall_time_is_the_plan_cost_models():
    runs = [("a", 1000, 4e15), ("b", 3000, 6e15)]
    est = summarise(runs, "cuda (NVIDIA H100 80GB HBM3)", (989.5e12, "H100 SXM dense BF16", "datasheet"))
    assert est.runs == 2 and est.tokens == 4000 and est.flops == 1e16
    assert est.seconds == pytest.approx(1e16 / (989.5e12 * DEFAULT_MFU))
    assert "at 40% of its 990 TFLOP/s peak" in est.text() and "Not counted: scratch twins" in est.text()
    assert "training took 50 s against an estimate of 25 s: 20.2% of the peak" in measured_against(est, 50)


def test_an_unknown_peak_gives_no_wall_time():
    est = summarise([("a", 10, 1e12)], "mps", (None, "unknown peak (mps: no published figure)", "none"))
    assert est.seconds is None
    assert "wall time unknown on mps (unknown peak (mps" in est.text()
    assert "no estimate to compare" in measured_against(est, 3.0)


def test_a_finished_run_records_its_estimate_and_every_run_it_trained(tiny_run):
    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    est = manifest["training_estimate"]
    trained = sorted(p.name for p in (run_dir / "train").iterdir() if (p / "curve.json").exists())
    assert est["runs"] == len(trained) and est["flops"] > 0 and est["seconds"] > 0
    assert manifest["training_seconds"] >= 0


def test_corpus_replaces_the_studys_source(tmp_path):
    corpus = tmp_path / "texts"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"w{i}.txt").write_text(f"work {i} " * 2000)
    inputs, runs = _runs(REPO / "studies" / "default.yaml", corpus)
    assert inputs.study.corpus.source == str(corpus.resolve())
    assert inputs.corpus["train"].n_bytes < 100_000  # the folder, not Shakespeare
    assert len(runs) == 9


def test_a_missing_corpus_names_the_option(tmp_path):
    with pytest.raises(UserError, match=r"--corpus: .*nothing-here is neither 'shakespeare' nor an existing"):
        load_inputs(REPO / "studies" / "default.yaml", corpus_path=tmp_path / "nothing-here")
