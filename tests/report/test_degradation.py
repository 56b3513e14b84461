"""The degradation law: recovers known exponents, shrinks its form to what the points
support, falls back honestly on δ that changes sign, and its intervals cover the truth."""

import json
import math

import handmade_results as handmade
import numpy as np
import pytest

from edgescale.report.degradation import DegradationPoint, degradation_points, fit_degradation, fit_recipes


def _points(ns, ds, c=0.5, g_d=0.3, g_n=0.5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [
        DegradationPoint(f"s{i}", n, d, c * d**g_d / n**g_n * math.exp(rng.normal(0, noise) if noise else 0.0))
        for i, (n, d) in enumerate(zip(ns, ds, strict=True))
    ]


NS = [1e4, 3e4, 1e5, 3e5, 1e6]
DS = [2e6, 1e6, 8e6, 2e6, 3e7]  # D/N not collinear with N: both exponents identifiable


def test_exact_power_law_recovers_kumar_exponents():
    fit = fit_degradation("int4", "fp32", _points(NS, DS))
    assert fit.form == "power_law_nd" and fit.sign == 1.0 and fit.dof == 2
    assert fit.gamma_n == pytest.approx(0.5, abs=1e-9) and fit.gamma_d == pytest.approx(0.3, abs=1e-9)
    delta, lo, hi = fit.predict(2e6, 5e7)
    assert delta == pytest.approx(0.5 * 5e7**0.3 / 2e6**0.5, rel=1e-9)
    assert lo == pytest.approx(delta, rel=1e-6) and hi == pytest.approx(delta, rel=1e-6)  # no residual, no width


def test_noisy_fit_interval_covers_the_truth_and_grows_away_from_data():
    fit = fit_degradation("int4", "fp32", _points(NS, DS, noise=0.1, seed=3))
    truth = 0.5 * 4e6**0.3 / 1e5**0.5
    delta, lo, hi = fit.predict(1e5, 4e6)
    assert lo < truth < hi and lo < delta < hi
    _, lo_far, hi_far = fit.predict(1e8, 1e10)  # far outside the ladder: wider in log terms
    assert math.log(hi_far / lo_far) > math.log(hi / lo)
    assert 0 < fit.r2_log <= 1 and fit.rmse_log > 0 and len(fit.residuals_log) == 5
    curve = fit.to_dict()["curve"]  # what the report plots: N from half the smallest to 4x the largest
    assert curve[0]["n"] == pytest.approx(0.5e4) and curve[-1]["n"] == pytest.approx(4e6)
    assert all(c["low"] <= c["delta"] <= c["high"] for c in curve)


def test_collinear_d_over_n_drops_gamma_d_with_a_note():
    ns = [1e4, 1e5, 1e6, 1e7]
    fit = fit_degradation("int8", "fp32", _points(ns, [20 * n for n in ns]))  # D = 20 N: D/N constant
    assert fit.form == "power_law_n" and fit.gamma_d is None
    assert fit.gamma_n == pytest.approx(0.5 - 0.3, abs=1e-9)  # along D ∝ N, δ ∝ N^(γ_D − γ_N)
    assert any("D/N does not vary" in n for n in fit.notes)


@pytest.mark.parametrize(
    ("deltas", "form", "sign"),
    [
        pytest.param([0.01, -0.002, 0.004], "constant_mean", 0.0, id="sign-change-mean"),
        pytest.param([0.01, 0.0, 0.004], "constant_mean", 0.0, id="zero-is-no-power-law"),
        pytest.param([-0.03, -0.02, -0.01], "power_law_n", -1.0, id="improves-everywhere"),
        pytest.param([0.02, 0.01], "constant_log", 1.0, id="two-points-no-slope"),
        pytest.param([0.02], "constant_mean", 0.0, id="one-point"),
    ],
)
def test_forms_the_points_support(deltas, form, sign):
    pts = [DegradationPoint(f"s{i}", 10.0 ** (4 + i), 1e6 * (i + 1), d) for i, d in enumerate(deltas)]
    fit = fit_degradation("r", "fp32", pts)
    assert (fit.form, fit.sign) == (form, sign)
    delta, lo, hi = fit.predict(1e5, 2e6)
    if form == "constant_mean":
        assert delta == pytest.approx(np.mean(deltas))
        assert (math.isnan(lo) and math.isnan(hi)) if len(deltas) == 1 else lo <= delta <= hi
    else:
        assert math.copysign(1, delta) == sign and lo <= delta <= hi
    json.dumps(fit.to_dict(), allow_nan=True)  # plain data


def test_no_points_is_no_fit():
    fit = fit_degradation("r", "fp32", [])
    assert fit.form == "none" and all(math.isnan(x) for x in fit.predict(1e5, 1e6))


def test_points_from_results_pair_each_size_with_its_baseline_and_skip_students():
    vs = handmade.ladder({"int4": 2.0})
    res = handmade.results(vs)
    res["sizes"].append({"size": "s0-kd", "params_total": 20_000, "train_tokens": 1_000_000, "distilled_from": "s2"})
    res["variants"] += [
        handmade.variant("s0-kd/fp32", n=20_000, val=3.0),
        handmade.variant("s0-kd/int4", n=20_000, val=3.5),
    ]
    res = handmade.typed(res)
    pts = degradation_points(res, "int4", "fp32")
    assert [p.size for p in pts] == ["s0", "s1", "s2"]
    assert pts[0].delta_bpb == pytest.approx(2.0 * (1e6 / 2e4) ** 0.3 / 2e4**0.25)
    assert pts[0].delta_test_bpb == pytest.approx(pts[0].delta_bpb)
    fits = fit_recipes(res)
    assert set(fits) == {"int4"} and fits["int4"].form == "power_law_n"  # 3 points: slope in N only
