"""The batched BFGS that every scaling fit runs on: the same function and the same optima as
scipy's one-problem-at-a-time BFGS, and a resample's weights mean what repeating its points means."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from edgescale.scaling.batch_bfgs import bfgs_batch, huber_lse_batch
from edgescale.scaling.fit import DELTA, _grid, objective


def _points(seed: int = 3, n: int = 12):
    rng = np.random.default_rng(seed)
    log_n = rng.uniform(np.log(1e4), np.log(5e5), n)
    log_d = rng.uniform(np.log(2e5), np.log(2e6), n)
    loss = 1.7 + 40 / np.exp(log_n) ** 0.3 + 60 / np.exp(log_d) ** 0.3
    return log_n, log_d, np.log(loss * np.exp(rng.normal(0, 0.01, n)))


def test_the_batched_objective_is_the_scalar_one_with_weights_as_repeats():
    log_n, log_d, log_l = _points()
    rng = np.random.default_rng(0)
    theta = rng.normal([3, 4, 0.5, 0.3, 0.3], 0.5, (6, 5))
    weights = rng.integers(0, 3, (6, log_n.size)).astype(float)
    f, g = huber_lse_batch(theta, weights, log_n, log_d, log_l, DELTA)
    for i in range(6):
        rows = np.repeat(np.arange(log_n.size), weights[i].astype(int))
        f1, g1 = objective(theta[i], log_n[rows], log_d[rows], log_l[rows], DELTA)
        assert np.isclose(f[i], f1, rtol=1e-12) and np.allclose(g[i], g1, rtol=1e-10, atol=1e-15)


def test_every_start_reaches_at_least_scipys_optimum_and_the_best_is_the_same():
    log_n, log_d, log_l = _points()
    starts, h = _grid(log_n, log_d, log_l, DELTA)
    top = starts[np.argsort(h.sum(axis=1))[:12]]
    ones = np.ones((len(top), log_n.size))
    x, f = bfgs_batch(lambda th, idx: huber_lse_batch(th, ones[idx], log_n, log_d, log_l, DELTA), top)
    ref = [minimize(objective, s, args=(log_n, log_d, log_l, DELTA), jac=True, method="BFGS") for s in top]
    best = min(ref, key=lambda r: r.fun)
    assert f.min() <= best.fun * (1 + 1e-9)
    assert np.allclose(x[f.argmin()][2:], best.x[2:], atol=1e-4)  # e, α, β (A and B sit on a flat ridge)
    _, g = huber_lse_batch(x, ones, log_n, log_d, log_l, DELTA)
    assert np.abs(g[f.argmin()]).max() < 1e-8  # a stationary point, not a stalled line search


def test_problems_stop_on_their_own():
    """A problem that starts at its optimum takes no step while the others keep going."""
    log_n, log_d, log_l = _points()
    w = np.ones((2, log_n.size))
    fg = lambda th, idx: huber_lse_batch(th, w[idx], log_n, log_d, log_l, DELTA)  # noqa: E731
    x, _ = bfgs_batch(fg, np.array([[3.0, 4.0, 0.5, 0.3, 0.3], [3.0, 4.0, 0.5, 0.3, 0.3]]))
    again, f = bfgs_batch(fg, np.array([x[0], [10.0, 10.0, 0.0, 1.0, 1.0]]))
    assert np.array_equal(again[0], x[0]) and np.isfinite(f).all()
