"""The distillation scaling law (Busbridge et al. 2025): preset, fit with identifiability flags, plan, CLI."""

import json

import numpy as np
import pytest
from cli_runner import run_cli

from edgescale.scaling.distill_fit import DistillPoints, fit_distill, write_fit
from edgescale.scaling.distill_law import BUSBRIDGE2025, DistillLaw, Supervised, law_from_dict
from edgescale.scaling.distill_plan import plan_distill

SUP = Supervised(E=1.0, A=30.0, B=60.0, alpha=0.4, beta=0.35)
TRUE = DistillLaw(c0=1.0, c1=3.0, f1=0.5, d1=0.9, A=30.0, B=80.0, alpha=0.4, beta=0.35, gamma=1.0, supervised=SUP)


def _grid(teachers=(1.6, 1.9, 2.3, 2.8), noise=0.002, seed=0) -> DistillPoints:
    lt, n, d = np.meshgrid(teachers, np.geomspace(3e3, 1e5, 5), np.geomspace(1e5, 1e7, 4), indexing="ij")
    lt, n, d = lt.ravel(), n.ravel(), d.ravel()
    ls = TRUE.student_loss(n, d, lt) * np.exp(np.random.default_rng(seed).normal(0, noise, n.size))
    return DistillPoints(lt, n, d, ls, SUP.loss(n, d))


@pytest.fixture(scope="module")
def fitted():
    return fit_distill(_grid(), SUP, n_boot=10, starts=6, loss_unit="bits/byte", n_convention="total")


def test_preset_reproduces_the_papers_scale():
    """Table 6's constants give plausible C4 losses (the sanity values in /work/notes/busbridge.md)."""
    assert BUSBRIDGE2025.supervised.loss(143e6, 2.9e9) == pytest.approx(2.887, abs=2e-3)
    assert BUSBRIDGE2025.student_loss(143e6, 2.9e9, 2.0) == pytest.approx(2.60, abs=0.01)
    assert BUSBRIDGE2025.student_loss(1.82e9, 36.4e9, 2.4) == pytest.approx(2.40, abs=0.01)
    assert "Table 6" in BUSBRIDGE2025.source and "do not transfer" in BUSBRIDGE2025.corpus


def test_fit_recovers_known_constants(fitted):
    law, tried = fitted
    assert law.status == "identified" and not law.fixed and len(tried) == 1
    for k in ("c0", "c1", "f1", "d1", "A", "B", "alpha", "beta", "gamma"):
        assert getattr(law, k) == pytest.approx(getattr(TRUE, k), rel=0.15), k
    assert all(law.ci[k][0] < law.ci[k][1] for k in ("c0", "alpha", "gamma"))


def test_one_teacher_cannot_identify_the_teacher_terms():
    law, tried = fit_distill(_grid(teachers=(2.0,)), SUP, n_boot=4, starts=2)
    assert len(tried) == 3  # every form tried, none identified
    assert law.status == "unidentified" and "one teacher" in law.unidentified["c0"]
    assert law.fixed.keys() == {"alpha", "beta", "c1", "f1", "d1"}  # the most reduced form is kept
    plan = plan_distill(law, 2.5, teacher_loss=2.0)
    assert plan.status == "unidentified" and "c0" in plan.reason and plan.student is None


def test_plan_reaches_the_target_and_compares_with_scratch():
    plan = plan_distill(TRUE, 2.2, teacher_loss=1.9, teacher_params=2e5, teacher_tokens=4e6)
    s, c = plan.student, plan.compute
    assert plan.status == "ok" and s["predicted_loss"] <= 2.2 + 1e-9
    assert c["distill_flops"] == pytest.approx(6 * s["n_params"] * s["n_tokens"] + 2 * 2e5 * s["n_tokens"])
    assert c["teacher_training_flops"] == pytest.approx(6 * 2e5 * 4e6)
    assert plan.scratch["status"] == "ok" and plan.scratch["predicted_loss"] == pytest.approx(2.2, abs=1e-6)
    cheaper = "distillation" if c["distill_flops"] < plan.scratch["compute_flops"] else "scratch"
    assert plan.cheaper == cheaper and plan.cheaper_with_teacher_training in ("distillation", "scratch")
    assert plan_distill(TRUE, 1.8, teacher_loss=1.9).status == "infeasible"


def test_fit_file_round_trip(tmp_path, fitted):
    law, tried = fitted
    path = write_fit(tmp_path / "fit.json", law, tried, _grid())
    back = law_from_dict(json.loads(path.read_text())["law"])
    assert back == law


def test_cli_plan_with_preset_json():
    r = run_cli("plan", "--teacher-loss", "2.0", "--loss-target", "2.5", "--distill-law", "busbridge2025",
                "--teacher-params", "7.75e9", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["law"] == "busbridge2025" and out["status"] == "ok"
    assert out["student"]["n_params"] > 0 and out["student"]["n_tokens"] >= out["student"]["n_params"]
    assert out["compute"]["teacher_forward_flops"] == pytest.approx(2 * 7.75e9 * out["student"]["n_tokens"])
    assert out["cheaper"] in ("distillation", "scratch") and out["scratch"]["status"] == "ok"
    assert "published" in out["fit_status"]


def test_cli_plan_with_a_fit_file(tmp_path, fitted):
    law, tried = fitted
    path = write_fit(tmp_path / "fit.json", law, tried, _grid())
    r = run_cli("plan", "--teacher-params", "2e5", "--teacher-tokens", "4e6", "--target-loss", "2.3",
                "--distill-law", f"fit:{path}", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["law"] == f"fit:{path}" and out["fit_status"] == "identified"
    assert out["teacher"]["loss_from"] == "supervised law"
    assert out["teacher"]["loss"] == pytest.approx(float(law.supervised.loss(2e5, 4e6)))


def test_cli_plan_bad_inputs():
    r = run_cli("plan", "--teacher-loss", "2.0", "--loss-target", "1.9", "--distill-law", "busbridge2025", "--json")
    assert r.returncode == 3 and "at or below the teacher's loss" in json.loads(r.stdout)["reason"]
    r = run_cli("plan", "--teacher-loss", "2.0", "--loss-target", "2.5")
    assert r.returncode == 2 and "--distill-law" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("plan", "--teacher-loss", "-1", "--loss-target", "2.5", "--distill-law", "busbridge2025")
    assert r.returncode == 2 and "--teacher-loss" in r.stderr
