"""Approach-3 fitting recovers known constants; flags what the data cannot identify."""

import numpy as np
import pytest

from edgescale.scaling.curves import fit_power_law, predict_final_loss
from edgescale.scaling.fit import fit_chinchilla, objective
from edgescale.scaling.laws import EPOCH2024


def _synthetic(law, n_points=120, noise=0.01, seed=0, collinear=False):
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n_points))
    d = 20 * n if collinear else np.exp(rng.uniform(np.log(5e9), np.log(5e11), n_points))
    return n, d, law.loss(n, d) * np.exp(rng.normal(0, noise, n_points))


@pytest.fixture(scope="module")
def fitted():
    n, d, loss = _synthetic(EPOCH2024)
    return fit_chinchilla(n, d, loss, n_boot=100, seed=0)


def test_recovers_known_constants_within_intervals(fitted):
    truth = {"E": EPOCH2024.E, "alpha": EPOCH2024.alpha, "beta": EPOCH2024.beta, "a": EPOCH2024.a}
    for k, v in truth.items():
        lo, hi = fitted.ci[k]
        assert lo <= v <= hi, f"{k}={v} outside [{lo}, {hi}]"
    assert fitted.r2_log > 0.9 and fitted.rmse_log < 0.02
    assert "E" not in fitted.unidentified and "alpha" not in fitted.unidentified


def test_point_estimate_is_stable_across_grid_starts_and_seeds(fitted):
    assert max(fitted.grid_spread[k] for k in ("e", "alpha", "beta")) < 1e-3
    n, d, loss = _synthetic(EPOCH2024)
    other = fit_chinchilla(n, d, loss, n_boot=20, seed=7, top_starts=8)
    assert pytest.approx(fitted.law.E, rel=1e-4) == other.law.E
    assert other.law.alpha == pytest.approx(fitted.law.alpha, rel=1e-3)


def test_gradient_matches_finite_differences():
    n, d, loss = _synthetic(EPOCH2024, n_points=30)
    args = (np.log(n), np.log(d), np.log(loss))
    theta = np.array([6.0, 7.5, 0.6, 0.35, 0.37])
    _, g = objective(theta, *args)
    for i in range(5):
        step = np.zeros(5)
        step[i] = 1e-6
        fd = (objective(theta + step, *args)[0] - objective(theta - step, *args)[0]) / 2e-6
        assert g[i] == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_collinear_n_and_d_is_flagged():
    n, d, loss = _synthetic(EPOCH2024, collinear=True)
    f = fit_chinchilla(n, d, loss, n_boot=30)
    assert any("collinear" in w for w in f.warnings)
    assert {"alpha", "beta"} <= set(f.unidentified)


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="at least 5"):
        fit_chinchilla([1, 2], [1, 2], [1, 2])


def test_kaplan_power_law_fit():
    n = np.geomspace(1e5, 1e9, 12)
    f = fit_power_law(n, (8.8e13 / n) ** 0.076)
    assert f.alpha == pytest.approx(0.076, rel=1e-6) and f.x_c == pytest.approx(8.8e13, rel=1e-4)


def test_early_prediction_of_final_loss():
    t = np.linspace(1e5, 1e6, 10)
    curve = 1.5 + 30 * t**-0.3
    noisy = curve + np.random.default_rng(0).normal(0, 0.002, t.size)
    p = predict_final_loss(t, noisy, 4e6, n_boot=50)
    true = 1.5 + 30 * 4e6**-0.3
    assert p.low <= true <= p.high or abs(p.predicted - true) < 0.01
    assert p.low < p.predicted < p.high


def test_a_collapsed_floor_is_flagged_not_reported_as_known():
    rng = np.random.default_rng(3)
    n = np.exp(rng.uniform(np.log(1e4), np.log(5e5), 12))
    d = np.exp(rng.uniform(np.log(2e5), np.log(2e6), 12))
    loss = 40 / n**0.1 + 60 / d**0.2  # no irreducible term at all
    f = fit_chinchilla(n, d, loss * np.exp(rng.normal(0, 0.005, 12)), n_boot=30)
    assert "E" in f.unidentified


def test_only_e_unidentifiable_gives_a_wide_interval_on_e_not_a_point():
    """Losses 25-600x above E: α and β are pinned by 6 sizes over 3 decades at 4 D/N ratios each, E is
    not. Refits restart from the grid, so the interval on E spreads instead of repeating the point fit's E."""
    from edgescale.scaling.laws import Chinchilla

    law = Chinchilla(E=0.02, A=60.0, B=200.0, alpha=0.35, beta=0.3)
    n = np.repeat(np.geomspace(1e4, 1e7, 6), 4)
    d = n * np.tile([2, 10, 50, 250], 6)
    loss = law.loss(n, d) * np.exp(np.random.default_rng(0).normal(0, 0.005, n.size))
    assert loss.min() > 25 * law.E
    f = fit_chinchilla(n, d, loss, n_boot=30, seed=0)
    for k in ("alpha", "beta"):  # identified, and right
        lo, hi = f.ci[k]
        assert lo <= getattr(law, k) <= hi and hi - lo < 0.1 and k not in f.unidentified
    lo, hi = f.ci["E"]
    assert lo <= law.E <= hi and hi > 100 * lo and hi - lo > law.E  # wide, not collapsed to a point
    assert "E" in f.unidentified
    assert len(np.unique(np.round(f.boots[:, 2], 6))) > 10  # the refits' E differ


def test_cluster_bootstrap_resamples_whole_runs_and_counts_dropped_draws():
    n = np.repeat([1e4, 1e5], 3)
    d = n * np.tile([5.0, 20.0, 80.0], 2)
    loss = EPOCH2024.loss(n, d)
    f = fit_chinchilla(n, d, loss, n_boot=12, seed=0, groups=["s0"] * 3 + ["s1"] * 3, boot_starts=1)
    # two runs: a resample of one run twice has one N and identifies nothing: dropped, and counted
    assert f.boot_unit == "run" and f.boot_dropped > 0 and len(f.boots) + f.boot_dropped == 12
    body = f.to_dict()
    assert body["boot_dropped"] == f.boot_dropped and body["boot_n"] == 12 and body["boot_unit"] == "run"
    assert any("bootstrap refits dropped" in w for w in f.warnings)
    assert fit_chinchilla(n, d, loss, n_boot=2, seed=0, boot_starts=1).boot_unit == "point"
