"""Single-variable power laws (Kaplan et al. 2020, arXiv:2001.08361 eqs. 1.1-1.2) and learning-curve
extrapolation L(t) = E + A·t^(−α): the small fits beside :mod:`edgescale.scaling.fit`'s L(N, D)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


@dataclass(frozen=True)
class PowerLawFit:
    """L(X) = (X_c / X)^alpha fitted by least squares in log-log (Kaplan's single-variable laws)."""

    alpha: float
    x_c: float
    alpha_se: float
    r2_log: float
    n_points: int

    def loss(self, x):
        return (self.x_c / np.asarray(x, dtype=float)) ** self.alpha


def fit_power_law(x, loss) -> PowerLawFit:
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    if x.size < 3:
        raise ValueError("need at least 3 points for a power law")
    lx, ll = np.log(x), np.log(loss)
    slope, intercept = np.polyfit(lx, ll, 1)
    resid = ll - (slope * lx + intercept)
    dof = max(1, x.size - 2)
    se = math.sqrt((resid**2).sum() / dof / ((lx - lx.mean()) ** 2).sum())
    ss_tot = ((ll - ll.mean()) ** 2).sum()
    alpha = -slope
    return PowerLawFit(
        alpha=float(alpha),
        x_c=float(math.exp(intercept / alpha)) if alpha else float("nan"),
        alpha_se=float(se),
        r2_log=float(1 - (resid**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        n_points=int(x.size),
    )


@dataclass(frozen=True)
class CurvePrediction:
    """Final loss predicted from a partial learning curve L(t) = E + A·t^(−alpha)."""

    predicted: float
    low: float
    high: float
    E: float
    A: float
    alpha: float


def predict_final_loss(tokens, loss, final_tokens: float, n_boot: int = 200, seed: int = 0) -> CurvePrediction:
    """Fit L(t) = E + A·t^(−α) to (tokens, loss) of a partial run; predict L(final_tokens) with a 95% interval.

    A schedule that decays the learning rate at the end lowers the final loss below
    this curve; use it on the stable phase of a warmup-stable-decay run.
    """
    t, y = np.asarray(tokens, dtype=float), np.asarray(loss, dtype=float)
    if t.size < 4:
        raise ValueError("need at least 4 points of the learning curve")
    lt = np.log(t / t.max())

    def fit(yy):
        def f(p):
            e, la, al = p
            pred = e + np.exp(la + -al * lt)
            r = pred - yy
            return float((r**2).sum())

        best = None
        for al0 in (0.2, 0.5, 1.0):
            x0 = [yy.min() * 0.9, math.log(max(yy.max() - yy.min(), 1e-6)), al0]
            r = minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000})
            if best is None or r.fun < best.fun:
                best = r
        return best.x

    p = fit(y)

    def at(params, tt):
        e, la, al = params
        return e + math.exp(la - al * math.log(tt / t.max()))

    resid = y - np.array([at(p, tt) for tt in t])
    rng = np.random.default_rng(seed)
    preds = []
    for _ in range(n_boot):
        yy = y - resid + rng.choice(resid, resid.size)
        preds.append(at(fit(yy), final_tokens))
    lo, hi = np.quantile(preds, [0.025, 0.975])
    e, la, al = p
    return CurvePrediction(
        at(p, final_tokens), float(lo), float(hi), float(e), float(math.exp(la) * t.max() ** al), float(al)
    )
