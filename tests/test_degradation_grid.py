"""The degradation grid: every recipe at each cooled branch and seed of the ladder, scored with a
paired error; a rerun redoes nothing; a failing point is flagged and the run still writes results;
the degradation fit reads the grid (several D/N per size)."""

from __future__ import annotations

import copy
import functools
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tiny_study import TINY

import edgescale.backends.torch_lm as torch_lm
import edgescale.chain as chain_mod
import edgescale.results.assemble as assemble
import edgescale.run as run_mod
from edgescale.config import EvaluationConfig
from edgescale.degradation_grid import degradation_grid
from edgescale.pipeline import Pipeline, scoring
from edgescale.progress import Reporter
from edgescale.report.degradation import fit_recipes
from edgescale.results.io import read_results
from edgescale.run import run_study
from edgescale.scaling.study import fit_study

STUDY = copy.deepcopy(TINY) | {"name": "grid"}
STUDY.pop("distillation")
STUDY["training"] = {**TINY["training"], "seeds": 2}
STUDY["measurement"] = {**TINY["measurement"], "repeats": 3, "warmup": 0}


def _run(study: Path, out: Path, db: Path, mp: pytest.MonkeyPatch) -> float:
    """Run the study; return the seconds its degradation grid took."""
    mp.setenv("EDGESCALE_DB", str(db))
    # the scaling fit's bootstrap is not under test here, and costs minutes on 12 points
    mp.setattr(assemble, "fit_study", functools.partial(fit_study, n_boot=10))
    spent = []

    def timed(*args):
        t0 = time.perf_counter()
        out = degradation_grid(*args)
        spent.append(time.perf_counter() - t0)
        return out

    mp.setattr(run_mod, "degradation_grid", timed)
    run_study(study, out, Reporter(quiet=True))
    return spent[0]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    study = root / "grid.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    with pytest.MonkeyPatch.context() as mp:
        spent = _run(study, root / "run", root / "db", mp)
    print(f"\ndegradation grid: {spent:.1f}s for 2 sizes x 2 seeds x 3 cooled points, int8_dynamic")
    return study, root / "run"


@pytest.mark.slow
def test_branch_files_are_kept_for_every_seed(grid_run):
    _, run = grid_run
    res = read_results(run)
    for seed in (0, 1):  # every seed's 25% and 50% branches, stored content-keyed like the final model
        for size in ("a", "b"):
            for tokens in {p.tokens for p in res.degradation_grid if p.size == size and p.fraction < 1}:
                assert _branch_artifact(run, size, seed, tokens).is_file()
    pts = res.degradation_grid
    assert pts is not None
    branch_starts = {(p.size, p.seed, p.tokens) for p in pts if p.fraction < 1}
    assert len(branch_starts) == 2 * 2 * 2  # 2 sizes x 2 seeds x the 25% and 50% branches


@pytest.mark.slow
def test_grid_points_carry_paired_deltas(grid_run):
    _, run = grid_run
    res = read_results(run)
    pts = res.degradation_grid
    assert len(pts) == 2 * 2 * 3  # sizes x seeds x cooled points (final included), one recipe besides fp32
    assert all(p.status == "ok" and p.recipe == "int8_dynamic" and p.baseline == "fp32" for p in pts)
    for p in pts:
        assert p.delta_bpb == pytest.approx(p.variant.bits_per_byte - p.base.bits_per_byte, abs=1e-12)
        assert p.se_paired is True and p.se_bpb > 0 and (run / p.base.nll_file).is_file()
        assert p.within_noise == (abs(p.delta_bpb) < 1.959963984540054 * p.se_bpb)
    by = {(v.size, v.recipe): v for v in res.variants}
    for p in pts:
        if p.seed == 0 and p.fraction == 1.0:  # the exported run's final model: the variants' own losses
            assert p.reused and p.base.bits_per_byte == by[(p.size, "fp32")].loss["validation"].bits_per_byte
            assert p.variant.bits_per_byte == by[(p.size, "int8_dynamic")].loss["validation"].bits_per_byte
        else:
            assert not p.reused and p.base.artifact != by[(p.size, "fp32")].onnx_path
    tokens = {p.size: sorted({q.tokens for q in pts if q.size == p.size}) for p in pts}
    assert all(len(t) == 3 for t in tokens.values())  # three D/N per size


def test_grid_off_is_no_grid():
    study = SimpleNamespace(evaluation=EvaluationConfig(degradation_grid=False))
    pipe = SimpleNamespace(study=study, chains=["never looked at"])
    assert degradation_grid(pipe, {}, {}, {}) == []
    assert "degradation_grid" not in scoring(EvaluationConfig())  # the flag is no part of a loss record's key


@pytest.mark.slow
def test_fit_reads_the_grid(grid_run):
    _, run = grid_run
    res = read_results(run)
    fit = fit_recipes(res, run)["int8_dynamic"]
    assert len(fit.points) == 12 and {p.seed for p in fit.points} == {0, 1}
    assert fit.form == "none"  # 2 sizes: no law, but the points now span 3 D/N per size
    text = " ".join(fit.notes)
    assert "D/N ratios per size: 3, 3" in text and "seed spread of δ" in text and "δ by D/N per size" in text
    law = res.analysis.degradation["int8_dynamic"]
    assert len(law.points) == 12
    page = (run / "report.html").read_text()  # the report's grid table: per size and D/N, δ of each seed
    assert "The degradation grid" in page and page.count("seed 1: ") == 6


@pytest.mark.slow
def test_rerun_reuses_everything_and_a_failing_point_is_flagged(grid_run, monkeypatch):
    study, run = grid_run
    before = read_results(run).degradation_grid

    def never(*a, **k):
        raise AssertionError("a rerun trained or ran a chain step again")

    monkeypatch.setattr(torch_lm, "train", never)
    monkeypatch.setattr(chain_mod, "_run_step", never)
    _run(study, run, run.parent / "db", monkeypatch)
    assert read_results(run).degradation_grid == before

    # one point fails in its loss, another has lost its branch file: both flagged, the run goes on
    losses = Pipeline.losses
    target = next(p for p in before if p.seed == 1 and p.size == "b" and p.fraction < 1)

    def failing(self, vid, v, *args):
        if vid == f"grid/b/seed1/{target.tokens}/int8_dynamic":
            raise RuntimeError("scorer fell over")
        return losses(self, vid, v, *args)

    monkeypatch.setattr(Pipeline, "losses", failing)
    lost = next(p for p in before if p.seed == 1 and p.size == "a" and p.fraction < 1)
    _branch_artifact(run, "a", 1, lost.tokens).unlink()  # not retrained: its point says the branch is gone
    _run(study, run, run.parent / "db", monkeypatch)
    after = read_results(run)
    bad = {(p.size, p.seed, p.tokens): p for p in after.degradation_grid if p.status == "failed"}
    assert set(bad) == {("b", 1, target.tokens), ("a", 1, lost.tokens)}
    assert bad[("b", 1, target.tokens)].failed_stage == "loss" and "fell over" in bad[("b", 1, target.tokens)].reason
    assert bad[("a", 1, lost.tokens)].failed_stage == "baseline branch"
    assert sum(p.status == "ok" for p in after.degradation_grid) == len(before) - 2
    assert any("grid points have no δ" in n for n in after.analysis.degradation["int8_dynamic"].notes)


def _train_records(run: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in (run / "cache").glob("*.json")]


def _branch_artifact(run: Path, size: str, seed: int, tokens: int) -> Path:
    """The stored branch checkpoint of (size, seed) at ``tokens``, found through its train record."""
    for rec in _train_records(run):
        if rec.get("seed") == seed and rec.get("branches") and rec.get("checkpoint"):
            for b in rec["branches"]:
                if b["tokens"] == tokens and _size_of(run, rec) == size:
                    return run / b["checkpoint"]
    raise AssertionError(f"no branch record for {size} seed {seed} at {tokens}")


def _size_of(run: Path, rec: dict) -> str:
    from edgescale.models.checkpoint import read_spec

    return "a" if read_spec(run / rec["checkpoint"]).n_embd == 16 else "b"


def test_the_grid_skips_recipes_that_retrain_and_keeps_post_training_ones():
    from edgescale.compress.recipe import load_recipe
    from edgescale.degradation_grid import retrains

    assert retrains(load_recipe("heads_ffn50_recover")) and retrains(load_recipe("layer_drop_recover_int4"))
    assert not any(retrains(load_recipe(r)) for r in ("fp32", "int8_dynamic", "int4_weight_only", "sparse_2_4"))
