"""Distillation over seeds: CE apart from the KD objective, the equal-compute budget, the interval
over seeds, and the pipeline's replicate runs (issue 16, finding 6)."""

import json
import math

import pytest
import yaml

from edgescale.config import TrainingConfig
from edgescale.models.checkpoint import build_model
from edgescale.models.gpt import GPTConfig
from edgescale.results.assemble import _distillation
from edgescale.results.schema import Distillation
from edgescale.train.distill import DistillConfig
from edgescale.train.seed_stats import equal_compute_tokens, welch_delta
from edgescale.train.trainer import train

STUDENT = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
TEACHER = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
CFG = TrainingConfig(batch_size=8, eval_every_tokens=256 * 4, eval_tokens=256, threads=1, learning_rate=1e-2)


def test_kd_curve_logs_cross_entropy_apart_from_the_objective(corpus, tmp_path):
    teacher = build_model(TEACHER, seed=3)
    kd = train(STUDENT, CFG, corpus, 256 * 8, 0, tmp_path / "kd", "k", teacher=teacher, distill=DistillConfig(alpha=1))
    scratch = train(STUDENT, CFG, corpus, 256 * 8, 0, tmp_path / "s", "s")
    for c in kd.curve:
        # alpha = 1: the objective is T²·KL only; train_bpb stays the cross-entropy on the targets
        assert c["train_objective"] != pytest.approx(c["train_bpb"], rel=1e-3)
        assert 2.0 < c["train_bpb"] < 9.0
    assert all("train_objective" not in c for c in scratch.curve)


def test_equal_compute_tokens():
    # 6·25k·1M + 2·484k·1M over 6·25k: 1M·(1 + 484/75)
    tokens, note = equal_compute_tokens(25_000, 484_000, 1_000_000, 10_000_000)
    assert tokens == round(1_000_000 * (1 + 484_000 / (3 * 25_000))) and note is None
    capped, note = equal_compute_tokens(25_000, 484_000, 1_000_000, 4_000_000)
    assert capped == 4_000_000 and "capped by max_epochs" in note and f"{tokens:,}" in note


def test_welch_interval_matches_the_formula():
    a, b = [3.0, 3.1, 3.2], [3.3, 3.5, 3.4]
    d = welch_delta("equal_tokens", "validation", a, b)
    se = math.sqrt(0.01 / 3 + 0.01 / 3)
    assert d.mean == pytest.approx(-0.3) and d.se == pytest.approx(se) and d.df == pytest.approx(4.0)
    assert d.hi - d.mean == pytest.approx(2.7764451 * se, rel=1e-6)  # t(0.975, 4)
    one = welch_delta("equal_tokens", "validation", [3.0], [3.3])
    assert one.lo is None and one.n_distilled == 1


def test_distillation_pair_carries_an_interval_from_n_seeds():
    loss = {
        n: {"validation": {"bits_per_byte": v}, "test": {"bits_per_byte": v}}
        for n, v in [("t", 2.5), ("a", 3.3), ("a-kd", 3.1)]
    }
    variants = [{"size": n, "recipe": "fp32", "loss": v} for n, v in loss.items()]
    sizes = [{"size": "a-kd", "distilled_from": "t", "train_tokens": 100}]
    arms = {
        "distilled": {"validation": [3.1, 3.12, 3.08], "test": [3.2, 3.22, 3.18]},
        "equal_tokens": {"validation": [3.3, 3.32, 3.29], "test": [3.4, 3.41, 3.39]},
        "equal_compute": {"validation": [3.0, 3.05, 3.02], "test": [3.1, 3.12, 3.11]},
    }
    runs = {"a": {"seeds": [0, 1, 2], "scorer": "torch", "equal_compute_tokens": 400, "arms": arms}}
    kd = type("KD", (), {"alpha": 0.5, "temperature": 2.0, "teacher": "t"})
    out = Distillation.model_validate(_distillation(sizes, variants, "fp32", kd, runs))
    pair = out.pairs[0]
    assert pair.seeds == [0, 1, 2] and pair.equal_compute_tokens == 400
    assert {(d.twin, d.split) for d in pair.deltas} == {
        (t, s) for t in ("equal_tokens", "equal_compute") for s in ("validation", "test")
    }
    for d in pair.deltas:
        assert d.n_distilled == d.n_scratch == 3 and d.lo < d.mean < d.hi
    tok_val = next(d for d in pair.deltas if d.twin == "equal_tokens" and d.split == "validation")
    assert tok_val.hi < 0  # distillation helps the equal-token twin here, and the interval says so
    eqc_val = next(d for d in pair.deltas if d.twin == "equal_compute" and d.split == "validation")
    assert eqc_val.lo > 0
    from edgescale.report.html import _distillation_seeds  # the report shows every delta with its interval

    html = _distillation_seeds(out)
    assert html.count("<tr>") == 5 and f"[{tok_val.lo:+.4f}, {tok_val.hi:+.4f}]" in html and "3 / 3" in html


def test_pipeline_trains_each_seed_as_its_own_resumable_run(tmp_path):
    from tiny_study import TINY

    from edgescale.pipeline import Pipeline
    from edgescale.progress import Reporter
    from edgescale.rundir import RunDir
    from edgescale.study_inputs import load_inputs

    study = {
        **TINY,
        "training": {**TINY["training"], "seeds": 2, "min_tokens": 4096, "max_tokens": 4096},
        "distillation": {**TINY["distillation"], "seeds": 2},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    with RunDir(tmp_path / "run") as rd:
        pipe = Pipeline(load_inputs(path), rd, Reporter(quiet=True))
        trained = pipe.train_all()
    assert {n: [r["seed"] for r in rs] for n, rs in pipe.replicates.items()} == {"a": [1], "b": [1]}
    assert pipe.replicates["a"][0]["checkpoint"] != trained["a"]["checkpoint"]
    assert (tmp_path / "run" / "train" / "a-seed1").is_dir() and (tmp_path / "run" / "train" / "a-eqc-seed1").is_dir()
    runs = pipe.distill_runs["a"]
    assert runs["seeds"] == [0, 1] and set(runs["arms"]) == {"distilled", "equal_tokens", "equal_compute"}
    assert all(len(v) == 2 for arm in runs["arms"].values() for v in arm.values())
    assert runs["train_tokens"]["equal_compute"][0] > runs["train_tokens"]["distilled"][0]
    assert runs["arms"]["distilled"]["validation"][0] != runs["arms"]["distilled"]["validation"][1]
    # cooled branches where something reads them: the ladder's runs (the fit, the grid), not a student's
    # or an equal-compute twin's (the same final model, about 15% fewer steps)
    cooled = {
        d.name: sum(p["cooled"] for p in json.loads((d / "curve.json").read_text()))
        for d in (tmp_path / "run" / "train").iterdir()
    }
    assert cooled["a"] == cooled["a-seed1"] == 3 and cooled["a-kd"] == cooled["a-eqc"] == cooled["a-eqc-seed1"] == 1
    # a rerun finds every seed's run and score finished: nothing is trained again
    written = (tmp_path / "run" / "train" / "a-eqc-seed1" / "curve.json").stat().st_mtime_ns
    with RunDir(tmp_path / "run") as rd:
        again = Pipeline(load_inputs(path), rd, Reporter(quiet=True))
        again.train_all()
    assert again.distill_runs["a"]["arms"] == runs["arms"]
    assert (tmp_path / "run" / "train" / "a-eqc-seed1" / "curve.json").stat().st_mtime_ns == written
    assert [r["sha256"] for r in again.replicates["b"]] == [r["sha256"] for r in pipe.replicates["b"]]
