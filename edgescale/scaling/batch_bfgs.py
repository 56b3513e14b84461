"""Many small fits at once: BFGS over a batch of independent problems, in numpy.

A scaling fit solves hundreds of five-parameter problems (24 grid starts for the point fit,
4 starts for each of 200 bootstrap resamples, in two forms). Each is tiny (one objective
call on 24 points is ~20 µs of arithmetic), so ``scipy.optimize.minimize`` spends its time in
per-iteration Python overhead: ~0.1 s per problem, a minute or more per fit. scipy has no
batched minimiser, hence this module: every problem steps together, one vectorised objective
call per iteration for the whole batch, and each problem stops on its own test.

A bootstrap resample is a weight per point (how many times the draw took it), so every
problem shares the same points and the objective is one broadcast over (problem, term, point).
The method is textbook BFGS (Nocedal & Wright, Numerical Optimization, 2nd ed., Alg. 6.1)
with a backtracking Armijo line search; the inverse-Hessian update is skipped when the
curvature yᵀs is not positive (N&W §6.1), which keeps it positive definite without Wolfe's
second condition.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ARMIJO = 1e-4  # sufficient-decrease constant (N&W's c1)
HALVINGS = 60  # a step of 2^-60 that still does not decrease: converged to float precision

# objective over a batch: (thetas (m, k), problem indices (m,)) -> (f (m,), gradient (m, k))
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def huber_lse_batch(
    theta: np.ndarray, weights: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Summed, weighted Huber loss of log L̂ − log L with log L̂ = LSE(a − α·log N, b − β·log D, e),
    for m parameter rows at once: theta (m, 5) as (a, b, e, α, β), weights (m, n) per point.
    Returns (f (m,), gradient (m, 5)); the same function as :func:`edgescale.scaling.fit.objective`."""
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    u = np.stack([a - al * log_n, b - be * log_d, np.broadcast_to(e, weights.shape)], axis=1)  # (m, 3, n)
    top = u.max(axis=1, keepdims=True)
    w = np.exp(u - top)
    s = w.sum(axis=1)
    soft = w / s[:, None, :]  # d LSE / d u_k
    r = top[:, 0, :] + np.log(s) - log_l
    small = np.abs(r) <= delta
    h = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    dh = weights * np.where(small, r, delta * np.sign(r))
    dn, dd, de = ((dh * soft[:, k, :]).sum(axis=1) for k in range(3))
    dal, dbe = -(dh * soft[:, 0, :] * log_n).sum(axis=1), -(dh * soft[:, 1, :] * log_d).sum(axis=1)
    grad = np.column_stack([dn, dd, de, dal, dbe])
    return (weights * h).sum(axis=1), grad


def bfgs_batch(
    fg: BatchObjective, x0: np.ndarray, gtol: float = 1e-12, maxiter: int = 10_000
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise m independent problems from their starts ``x0`` (m, k); ``fg(x, idx)`` evaluates
    problems ``idx`` at rows ``x``. A problem stops when its gradient's largest component is
    under ``gtol``, when no step along its direction decreases it (float precision reached), or
    at ``maxiter``. Returns (x (m, k), f (m,))."""
    x = np.array(x0, dtype=float)
    m, k = x.shape
    f, g = fg(x, np.arange(m))
    h_inv = np.tile(np.eye(k), (m, 1, 1))
    fresh = np.ones(m, dtype=bool)  # the inverse Hessian is the identity: the direction is steepest descent
    live = np.flatnonzero(np.isfinite(f))
    for _ in range(maxiter):
        live = live[np.abs(g[live]).max(axis=1) > gtol]
        if not live.size:
            break
        p = -np.einsum("pij,pj->pi", h_inv[live], g[live])
        slope = (p * g[live]).sum(axis=1)
        uphill = ~(slope < 0)  # not a descent direction (a stale inverse Hessian): restart at steepest descent
        if uphill.any():
            h_inv[live[uphill]], fresh[live[uphill]] = np.eye(k), True
            p[uphill] = -g[live[uphill]]
            slope[uphill] = -(g[live[uphill]] ** 2).sum(axis=1)
        step, f_new, g_new = _backtrack(fg, x, f, live, p, slope)
        moved = np.isfinite(f_new)
        idx = live[moved]
        s = step[moved, None] * p[moved]
        y = g_new[moved] - g[idx]
        x[idx] += s
        f[idx], g[idx] = f_new[moved], g_new[moved]
        h_inv[idx], fresh[idx] = _bfgs_update(h_inv[idx], s, y), False
        # no step decreased f: retry once along steepest descent (the Huber loss has kinks where a
        # quasi-Newton direction can fail); failing that too, it has converged as far as float64 goes
        retry = live[~moved & ~fresh[live]]
        h_inv[retry], fresh[retry] = np.eye(k), True
        live = np.concatenate([idx, retry])
    return x, f


def _backtrack(fg: BatchObjective, x, f, live, p, slope):
    """Armijo backtracking from a unit step for every live problem at once: (step, f, gradient)
    at the accepted points, f = inf where no step down to 2^-HALVINGS decreased the objective."""
    step = np.ones(live.size)
    f_new = np.full(live.size, np.inf)
    g_new = np.zeros_like(p)
    todo = np.arange(live.size)
    for _ in range(HALVINGS):
        with np.errstate(over="ignore", invalid="ignore"):
            ff, gg = fg(x[live[todo]] + step[todo, None] * p[todo], live[todo])
        f0 = f[live[todo]]  # strictly below: at float precision an Armijo bound rounds to f itself
        ok = (ff < f0) & (ff <= f0 + ARMIJO * step[todo] * slope[todo]) & np.isfinite(gg).all(axis=1)
        f_new[todo[ok]], g_new[todo[ok]] = ff[ok], gg[ok]
        todo = todo[~ok]
        if not todo.size:
            break
        step[todo] *= 0.5
    return step, f_new, g_new


def _bfgs_update(h_inv: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """N&W (6.17) for each problem; rows whose curvature yᵀs is not positive keep their matrix."""
    ys = (y * s).sum(axis=1)
    ok = ys > 1e-300
    if not ok.any():
        return h_inv
    h, s, y, rho = h_inv[ok], s[ok], y[ok], 1.0 / ys[ok]
    k = s.shape[1]
    v = np.eye(k) - rho[:, None, None] * np.einsum("pi,pj->pij", s, y)
    h = np.einsum("pij,pjk,plk->pil", v, h, v) + rho[:, None, None] * np.einsum("pi,pj->pij", s, s)
    out = h_inv.copy()
    out[ok] = h
    return out
