"""The degradation law: fitted only where the points support it (≥ 5 sizes over ≥ 1.5 decades,
≥ 2 D/N ratios per size for γ_D), recovers known constants with intervals that cover them,
refuses the default-like ladder and any (N, D) outside the sampled box, and says why."""

import json
import math

import handmade_results as handmade
import numpy as np
import pytest

from edgescale.report.degradation import DegradationPoint, degradation_points, fit_degradation, fit_recipes

C, G_D, G_N = 0.5, 0.3, 0.5


def _points(ns, ds, c=C, g_d=G_D, g_n=G_N, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [
        DegradationPoint(f"s{i}", n, d, c * d**g_d / n**g_n * math.exp(rng.normal(0, noise) if noise else 0.0))
        for i, (n, d) in enumerate(zip(ns, ds, strict=True))
    ]


# 6 sizes over 2 decades, each at 2 D/N ratios (a ladder with its cooled branches quantized too)
SIZES = np.geomspace(1e4, 1e6, 6)
RATIOS = [(4.0, 40.0), (6.0, 30.0), (3.0, 20.0), (8.0, 50.0), (5.0, 25.0), (4.0, 40.0)]
NS = [n for n in SIZES for _ in range(2)]
DS = [n * r for n, rs in zip(SIZES, RATIOS, strict=True) for r in rs]


def test_exact_power_law_recovers_kumar_exponents():
    fit = fit_degradation("int4", "fp32", _points(NS, DS))
    assert fit.form == "power_law_nd" and fit.sign == 1.0 and fit.dof == len(NS) - 3
    assert fit.gamma_n == pytest.approx(G_N, abs=1e-9) and fit.gamma_d == pytest.approx(G_D, abs=1e-9)
    delta, lo, hi = fit.predict(2e5, 2e5 * 10)
    assert delta == pytest.approx(C * 2e6**G_D / 2e5**G_N, rel=1e-9)
    assert lo == pytest.approx(delta, rel=1e-6) and hi == pytest.approx(delta, rel=1e-6)  # no residual, no width


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_synthetic_family_recovers_the_constants_and_the_intervals_cover_them(seed):
    fit = fit_degradation("int4", "fp32", _points(NS, DS, noise=0.05, seed=seed))
    assert fit.form == "power_law_nd" and fit.notes == (fit.notes[0],) and "predicts only inside" in fit.notes[0]
    assert fit.gamma_n == pytest.approx(G_N, abs=0.06) and fit.gamma_d == pytest.approx(G_D, abs=0.06)
    ci = fit.intervals()
    assert ci["gamma_n_ci"][0] < G_N < ci["gamma_n_ci"][1]
    assert ci["gamma_d_ci"][0] < G_D < ci["gamma_d_ci"][1]
    assert ci["c_ci"][0] < C < ci["c_ci"][1]
    truth = C * (1e5 * 15) ** G_D / 1e5**G_N
    delta, lo, hi = fit.predict(1e5, 1e5 * 15)
    assert lo < truth < hi and lo < delta < hi
    assert 0 < fit.r2_log <= 1 and fit.rmse_log > 0 and len(fit.residuals_log) == len(NS)
    out = fit.to_dict()
    assert out["gamma_d_ci"] == ci["gamma_d_ci"]
    curve = out["curve"]  # what the report plots: the sampled N only, every point predicted
    assert curve[0]["n"] == pytest.approx(1e4) and curve[-1]["n"] == pytest.approx(1e6)
    assert all(c["low"] <= c["delta"] <= c["high"] for c in curve)


def _default_like():
    """The default ladder's shape: 4 sizes over ~1 decade, D/N falling from 40 to 4 as N grows, δ at noise level."""
    ns = [2.4e4, 6.1e4, 1.3e5, 2.6e5]
    ds = [n * r for n, r in zip(ns, [40.0, 14.0, 9.0, 4.0], strict=True)]
    deltas = [3e-3, 2e-3, 9e-4, 9e-4]
    return [DegradationPoint(f"s{i}", *x) for i, x in enumerate(zip(ns, ds, deltas, strict=True))]


def test_default_ladder_like_points_fit_no_law_and_say_why():
    pts = _default_like()
    r = np.corrcoef(np.log([p.n for p in pts]), np.log([p.d / p.n for p in pts]))[0, 1]
    assert r < -0.98  # the default's collinearity
    fit = fit_degradation("int8", "fp32", pts)
    assert fit.form == "none" and fit.gamma_n is None and fit.gamma_d is None and fit.coef == ()
    assert fit.points == tuple(pts)  # the per-size δ stay reported
    (note,) = fit.notes
    assert "4 sizes (a law needs ≥ 5)" in note and "1.03 decades of N (a law needs ≥ 1.5)" in note
    assert "D/N ratios per size: 1, 1, 1, 1" in note and f"r = {r:.3f}" in note
    assert all(math.isnan(x) for x in fit.predict(6.1e4, 6.1e4 * 14))  # not even at a sampled point
    assert fit.refusal(6.1e4, 6.1e4 * 14).startswith("no degradation law: no law fitted")
    out = fit.to_dict()
    assert "curve" not in out and out["n_points"] == 4 and fit.curve() == []
    json.dumps(out, allow_nan=False)


def test_enough_sizes_over_too_narrow_a_span_fit_no_law():
    ns = list(np.geomspace(1e4, 1e5, 6))  # 6 sizes, 1 decade
    fit = fit_degradation("int8", "fp32", _points(ns, [20 * n for n in ns]))
    assert fit.form == "none"
    assert "1.00 decades of N (a law needs ≥ 1.5)" in fit.notes[0] and "sizes (a law needs" not in fit.notes[0]


def test_predict_outside_the_sampled_box_is_refused():
    fit = fit_degradation("int4", "fp32", _points(NS, DS, noise=0.05, seed=1))
    assert fit.in_range(1e4, 1e4 * 3.0) and fit.in_range(1e6, 1e6 * 50.0)  # the box's corners are sampled edges
    assert all(math.isfinite(x) for x in fit.predict(1e6, 1e6 * 50.0))
    for n, d, why in [
        (4e6, 4e6 * 10, "N = 4e+06 is outside the sampled 1e+04–1e+06"),
        (5e3, 5e3 * 10, "N = 5e+03 is outside"),
        (1e5, 1e5 * 4732, "D/N = 4.73e+03 is outside the sampled 3–50"),  # the default plan's tokens per param
        (1e5, 1e5 * 2.0, "D/N = 2 is outside"),
    ]:
        assert all(math.isnan(x) for x in fit.predict(n, d)) and not fit.in_range(n, d)
        assert why in fit.refusal(n, d) and "does not extrapolate" in fit.refusal(n, d)


def test_one_d_over_n_per_size_drops_gamma_d_with_a_note():
    ns = list(np.geomspace(1e4, 1e7, 5))
    fit = fit_degradation("int8", "fp32", _points(ns, [20 * n for n in ns]))  # D = 20 N: D/N constant
    assert fit.form == "power_law_n" and fit.gamma_d is None and fit.intervals()["gamma_d_ci"] is None
    assert fit.gamma_n == pytest.approx(G_N - G_D, abs=1e-9)  # along D ∝ N, δ ∝ N^(γ_D − γ_N)
    assert "γ_D not fitted: 1 D/N ratio(s) at some size" in fit.notes[0] and "D/N does not vary" in fit.notes[0]
    assert math.isfinite(fit.predict(1e5, 2e6)[0])
    assert "D/N = 40 is outside the sampled 20–20" in fit.refusal(1e5, 4e6)  # the law holds at D/N = 20 only


def test_collinear_ratios_drop_gamma_d_even_with_two_per_size():
    ns = list(np.geomspace(1e4, 1e7, 5))
    pts = _points([n for n in ns for _ in (0, 1)], [n * (1e7 / n) ** 0.5 * k for n in ns for k in (1.0, 1.02)])
    fit = fit_degradation("int8", "fp32", pts)
    assert fit.form == "power_law_n" and "correlate at r = -" in fit.notes[0] and "(needs |r| < 0.95)" in fit.notes[0]


@pytest.mark.parametrize(
    ("deltas", "form", "sign"),
    [
        pytest.param([0.01, -0.002, 0.004, 0.003, 0.001], "constant_mean", 0.0, id="sign-change-mean"),
        pytest.param([0.01, 0.0, 0.004, 0.003, 0.001], "constant_mean", 0.0, id="zero-is-no-power-law"),
        pytest.param([-0.03, -0.02, -0.01, -0.008, -0.005], "power_law_n", -1.0, id="improves-everywhere"),
    ],
)
def test_forms_the_points_support(deltas, form, sign):
    pts = [DegradationPoint(f"s{i}", 10.0 ** (4 + 0.5 * i), 1e6 * (i + 1), d) for i, d in enumerate(deltas)]
    fit = fit_degradation("r", "fp32", pts)
    assert (fit.form, fit.sign) == (form, sign)
    delta, lo, hi = fit.predict(1e5, 3e6)
    if form == "constant_mean":
        assert delta == pytest.approx(np.mean(deltas)) and lo <= delta <= hi
    else:
        assert math.copysign(1, delta) == sign and lo <= delta <= hi
    assert math.isnan(fit.predict(1e7, 1e8)[0])  # the mean fallback is held to the box too
    json.dumps(fit.to_dict(), allow_nan=False)  # plain data


def test_no_points_is_no_fit():
    fit = fit_degradation("r", "fp32", [])
    assert fit.form == "none" and all(math.isnan(x) for x in fit.predict(1e5, 1e6))
    assert "no size has both" in fit.refusal(1e5, 1e6)


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
    assert set(fits) == {"int4"} and fits["int4"].form == "none"  # 3 sizes: no law, the 3 δ kept
    assert len(fits["int4"].points) == 3 and "3 sizes (a law needs ≥ 5)" in fits["int4"].notes[0]


# -- the error of every δ ---------------------------------------------------------------------


def _with_windows(tmp_path, shift: float, w: int = 300):
    """The 3-size handmade ladder with an int4 recipe whose every window costs ``shift`` nats
    more than fp32's (windows of very unequal difficulty), each loss saved as a sidecar."""
    from edgescale.results import nll

    vs = handmade.ladder({"int4": 0.0})
    rng = np.random.default_rng(0)
    hard = {v["size"]: rng.gamma(2.0, 8.0, w) for v in vs}
    n_bytes = np.full(w, 64, np.int64)
    for v in vs:
        extra = shift + rng.normal(0, 0.01, w) if v["recipe"] == "int4" else 0.0
        win = nll.WindowNLL("sha", 128, 64, hard[v["size"]] + extra, n_bytes)
        rec = v["loss"]["validation"]
        rec |= {"bits_per_byte": win.bits_per_byte(), "se_bpb": win.se_bits_per_byte()}
        rec["nll_file"] = nll.save(tmp_path, v["variant_id"], "validation", win)
    return handmade.typed(handmade.results(vs))


def test_every_delta_gets_its_paired_error_from_the_run_directory(tmp_path):
    res = _with_windows(tmp_path, shift=0.2)
    pts = degradation_points(res, "int4", "fp32", tmp_path)
    assert len(pts) == 3 and all(p.se_paired and p.within_noise is False for p in pts)
    for p in pts:
        assert p.delta_bpb == pytest.approx(0.2 / math.log(2) / 64, rel=0.05)
        assert 0 < p.se_bpb < 0.1 * p.delta_bpb  # the shared window difficulty cancels
    loose = degradation_points(res, "int4", "fp32")  # no run directory: the records' se_bpb, unpaired
    assert all(p.se_paired is False and p.se_bpb > 10 * q.se_bpb for p, q in zip(loose, pts, strict=True))
    assert all(p.within_noise for p in loose)  # unpaired, the same δ is lost in the windows' spread
    fit = fit_recipes(res, tmp_path)["int4"]
    assert not any("within noise" in n for n in fit.notes)
    out = fit.to_dict()["points"][0]
    assert out["se_bpb"] == pts[0].se_bpb and out["se_paired"] is True
    json.dumps(fit.to_dict())


def test_a_recipe_whose_every_delta_is_noise_says_so(tmp_path):
    res = _with_windows(tmp_path, shift=0.0)
    fit = fit_recipes(res, root=tmp_path)["int4"]
    assert all(p.se_paired and p.within_noise for p in fit.points)
    assert any(n.startswith("every δ is within noise") and "s0 " in n for n in fit.notes)


def test_old_runs_without_errors_keep_their_points_without_one(tmp_path):
    res = handmade.typed(handmade.results(handmade.ladder({"int4": 2.0})))
    pts = degradation_points(res, "int4", "fp32", tmp_path)
    assert pts and all(p.se_bpb is None and p.within_noise is None for p in pts)
    assert not any("noise" in n for n in fit_recipes(res, tmp_path)["int4"].notes)


# -- the degradation grid: every cooled branch and seed of every size ----------------------------


def _grid(ns, ratios, seeds=(0, 1), noise=0.03, seed=0) -> list[dict]:
    """Grid points (results.json's degradation_grid) with δ = C·D^γ_D/N^γ_N, each seed off by its own noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(ns):
        for r in ratios:
            for s in seeds:
                d = n * r
                delta = C * d**G_D / n**G_N * math.exp(rng.normal(0, noise))
                out.append(
                    {"size": f"s{i}", "seed": s, "tokens": int(d), "fraction": r / max(ratios), "recipe": "int4",
                     "params_total": int(n), "baseline": "fp32", "delta_bpb": delta, "se_bpb": 0.05 * delta,
                     "se_paired": True, "within_noise": False}
                )  # fmt: skip
    return out


def _with_grid(grid: list[dict]):
    data = handmade.results(handmade.ladder({"int4": 2.0}))
    return handmade.typed(data | {"degradation_grid": grid})


def test_grid_points_with_two_ratios_and_two_seeds_recover_known_constants():
    ns = np.geomspace(1e4, 1e6, 6)  # 6 sizes over 2 decades, D/N 5 and 20 at each, 2 seeds
    res = _with_grid(_grid(ns, (5.0, 20.0)))
    fit = fit_recipes(res)["int4"]
    assert fit.form == "power_law_nd" and len(fit.points) == 6 * 2 * 2 and {p.seed for p in fit.points} == {0, 1}
    assert fit.gamma_n == pytest.approx(G_N, abs=0.03) and fit.gamma_d == pytest.approx(G_D, abs=0.05)
    ci = fit.intervals()
    assert ci["gamma_n_ci"][0] < G_N < ci["gamma_n_ci"][1] and ci["gamma_d_ci"][0] < G_D < ci["gamma_d_ci"][1]
    assert any(n.startswith("seed spread of δ: SD across up to 2 seeds in 12") for n in fit.notes)
    assert math.isnan(fit.predict(1e5, 1e5 * 40)[0])  # D/N 40 was never sampled
    assert fit.to_dict()["points"][0]["seed"] == 0


def test_grid_on_the_default_ladder_gives_per_size_delta_by_d_over_n_and_no_law():
    ns = [2.4e4, 6.1e4, 1.3e5, 4.7e5]  # 4 sizes over 1.29 decades, 3 branches each
    grid = _grid(ns, (2.5, 5.0, 10.0))
    grid[0] |= {"status": "failed", "failed_stage": "branch", "reason": "gone", "delta_bpb": None}
    fit = fit_recipes(_with_grid(grid))["int4"]
    assert fit.form == "none" and len(fit.points) == 4 * 3 * 2 - 1
    assert "D/N ratios per size: 3, 3, 3, 3" in fit.notes[0] and "4 sizes (a law needs ≥ 5)" in fit.notes[0]
    text = " ".join(fit.notes)
    assert "δ by D/N per size (mean over seeds, bpb): s0 2.5:" in text and "seed spread of δ" in text
    assert "1 of 24 grid points have no δ (branch: gone)" in text
    assert math.isnan(fit.predict(1e5, 1e6)[0])
