"""Fitting scaling laws to (N, D, loss) points, with bootstrap intervals and honest flags.

Chinchilla approach 3 (Hoffmann et al. 2022 §3.3, App. D.2), as corrected by
Besiroglu et al. 2024: minimise the *summed* Huber loss (δ = 1e-3) of log-space
residuals, with the law written as

    log L̂ = LSE(a − α·log N, b − β·log D, e),   A = exp(a), B = exp(b), E = exp(e),

by L-BFGS from a grid of initialisations (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
a, b ∈ {0, 5, …, 25}). The whole grid is scored at once and L-BFGS runs from the best
starts. Every bootstrap refit restarts from the grid too: a warm start at the point fit
stays where the point fit is when its gradient is flat (a collapsed E at e ≈ −21 has a
gradient near 1e-10, so every refit returned the same E and the "interval" was a point).
When the points carry a label of the run they come from (one size's trajectory), whole
runs are resampled (a cluster bootstrap): points of one run share its noise, so
resampling them one by one overstates how much the data pin down. Refits that run off to
an unbounded law, or resamples in which N or D does not vary, are dropped and counted
(``boot_dropped``), never silently.

A and B sit on a flat ridge of this objective: judge a fit by E, α, β and the
allocation exponent a = β/(α+β). Parameters the data cannot pin down (interval wider
than the value, or log N and log D collinear) are flagged, not printed as known.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from edgescale.scaling.laws import Chinchilla
from edgescale.scaling.points import Points

DELTA = 1e-3
GRID = {
    "a": np.arange(0, 26, 5.0),
    "b": np.arange(0, 26, 5.0),
    "e": np.arange(-1, 1.01, 0.5),
    "alpha": np.arange(0, 2.01, 0.5),
    "beta": np.arange(0, 2.01, 0.5),
}


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, elementwise."""
    small = np.abs(r) <= delta
    loss = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    grad = np.where(small, r, delta * np.sign(r))
    return loss, grad


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float = DELTA):
    """Summed Huber loss of log residuals and its gradient; theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])  # (3, n)
    m = u.max(axis=0)
    w = np.exp(u - m)
    s = w.sum(axis=0)
    lse = m + np.log(s)
    soft = w / s  # d LSE / d u_k
    h, dh = _huber(lse - log_l, delta)
    g = np.array(
        [
            (dh * soft[0]).sum(),
            (dh * soft[1]).sum(),
            (dh * soft[2]).sum(),
            -(dh * soft[0] * log_n).sum(),
            -(dh * soft[1] * log_d).sum(),
        ]
    )
    return float(h.sum()), g


def _grid_scores(log_n, log_d, log_l, delta) -> tuple[np.ndarray, np.ndarray]:
    starts = np.array(list(itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])))
    a, b, e, al, be = (starts[:, i : i + 1] for i in range(5))  # (S, 1) against (n,)
    u = np.stack([a - al * log_n, b - be * log_d, np.broadcast_to(e, (len(starts), log_n.size))])
    lse = np.logaddexp.reduce(u, axis=0)
    h, _ = _huber(lse - log_l, delta)
    return starts, h.sum(axis=1)


def _lbfgs(theta0, log_n, log_d, log_l, delta, method: str = "L-BFGS-B"):
    # BFGS (used by the bootstrap) reaches the same optima here at a small fraction of
    # L-BFGS-B's per-iteration overhead in scipy >= 1.15, which made grid restarts of
    # every refit take minutes
    options = {"maxiter": 10_000, "gtol": 1e-12} | ({"ftol": 1e-15} if method == "L-BFGS-B" else {})
    res = minimize(objective, theta0, args=(log_n, log_d, log_l, delta), jac=True, method=method, options=options)
    return res.x, float(res.fun)


@dataclass(frozen=True)
class ChinchillaFit:
    law: Chinchilla
    objective: float
    n_points: int
    ci: dict[str, tuple[float, float]]
    rmse_log: float  # root mean square of log residuals
    r2_log: float
    unidentified: dict[str, str] = field(default_factory=dict)  # parameter -> why
    warnings: list[str] = field(default_factory=list)
    grid_spread: dict[str, float] = field(default_factory=dict)  # max-min over the best starts' optima
    boots: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False, compare=False)  # (a,b,e,α,β)
    boot_dropped: int = 0  # bootstrap draws left out of the intervals (blown up, or N or D constant)
    boot_unit: str = "point"  # what was resampled: "point" or "run" (cluster bootstrap)

    def to_dict(self) -> dict:
        L = self.law
        return {
            "law": "chinchilla_form",
            "E": L.E,
            "A": L.A,
            "B": L.B,
            "alpha": L.alpha,
            "beta": L.beta,
            "a": L.a,
            "b": L.b,
            "ci": {k: [x if math.isfinite(x) else None for x in v] for k, v in self.ci.items()},
            "n_points": self.n_points,
            "objective": self.objective,
            "rmse_log": self.rmse_log,
            "r2_log": self.r2_log,
            "unidentified": self.unidentified,
            "warnings": self.warnings,
            "n_convention": L.n_convention,
            "boot_n": int(len(self.boots)) + self.boot_dropped,
            "boot_dropped": self.boot_dropped,
            "boot_unit": self.boot_unit,
        }


def _theta_to_law(theta, **meta) -> Chinchilla:
    a, b, e, alpha, beta = theta
    return Chinchilla(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta), **meta)


def fit_chinchilla(
    n,
    d,
    loss,
    *,
    n_boot: int = 200,
    top_starts: int = 24,
    seed: int = 0,
    delta: float = DELTA,
    n_convention: str = "total",
    groups=None,
    boot_starts: int = 4,
) -> ChinchillaFit:
    """Fit L = E + A/N^α + B/D^β (approach 3) with bootstrap 95% intervals; ``groups`` labels each
    point's run (e.g. its size) so the bootstrap resamples whole runs."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    if not (n.size == d.size == loss.size) or n.size < 5:
        raise ValueError(f"need at least 5 (N, D, loss) points of equal length, got {n.size}")
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    optima = _multistart(log_n, log_d, log_l, delta, top_starts)
    theta, fun = min(optima, key=lambda o: o[1])
    near = np.array([t for t, f in optima if f <= fun * (1 + 1e-6) + 1e-12])
    spread = dict(zip(("a", "b", "e", "alpha", "beta"), (near.max(0) - near.min(0)).tolist(), strict=True))

    boots = bootstrap(theta, log_n, log_d, log_l, n_boot, seed, delta, groups=groups, top_starts=boot_starts)
    kept = _usable(boots)
    dropped = int(len(boots) - len(kept))
    with np.errstate(divide="ignore", invalid="ignore"):
        derived = _derived(kept)
    ci = {
        k: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if len(v) else (math.nan, math.nan)
        for k, v in derived.items()
    }

    law = _theta_to_law(theta, name="fit", source="fitted (Chinchilla approach 3)", n_convention=n_convention)
    resid = np.log(law.loss(n, d)) - log_l
    ss_tot = float(((log_l - log_l.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    unidentified, warnings = _identification(law, ci, log_n, log_d)
    if dropped:
        warnings.append(
            f"{dropped} of {len(boots)} bootstrap refits dropped (ran off to an unbounded law, or their resample "
            "had one N or one D): the intervals come from the rest"
        )
    e_fit, floor = law.E, 1e-3 * float(loss.min())
    if e_fit < floor:
        unidentified["E"] = f"collapsed to {e_fit:.2g}: the data show no loss floor, so E is not identified"
    return ChinchillaFit(
        law=law,
        objective=fun,
        n_points=int(n.size),
        ci=ci,
        rmse_log=float(np.sqrt((resid**2).mean())),
        r2_log=r2,
        unidentified=unidentified,
        warnings=warnings,
        grid_spread=spread,
        boots=kept,
        boot_dropped=dropped,
        boot_unit="run" if groups is not None and len(set(groups)) > 1 else "point",
    )


def _multistart(log_n, log_d, log_l, delta, top: int, method: str = "L-BFGS-B") -> list[tuple[np.ndarray, float]]:
    """Local optima from the ``top`` best grid starts."""
    starts, scores = _grid_scores(log_n, log_d, log_l, delta)
    return [_lbfgs(starts[i], log_n, log_d, log_l, delta, method) for i in np.argsort(scores)[:top]]


def bootstrap(
    theta, log_n, log_d, log_l, n_boot: int, seed: int = 0, delta: float = DELTA, *, groups=None, top_starts: int = 4
) -> np.ndarray:
    """Refits to resamples with replacement, each from the grid's ``top_starts`` best starts (``theta``,
    the point fit, is not a start; see the module docstring): (n_boot, 5) rows of (a, b, e, alpha, beta).
    With ``groups`` (a run label per point) whole runs are resampled. A resample in which N or D
    does not vary identifies nothing: its row is NaN (dropped by :func:`_usable`, and counted)."""
    rng = np.random.default_rng(seed)
    log_n, log_d, log_l = (np.asarray(x, dtype=float) for x in (log_n, log_d, log_l))
    members = _clusters(groups, log_n.size)
    boots = np.full((n_boot, 5), np.nan)
    for i in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        if np.ptp(log_n[idx]) == 0 or np.ptp(log_d[idx]) == 0:
            continue
        optima = _multistart(log_n[idx], log_d[idx], log_l[idx], delta, top_starts, "BFGS")
        boots[i] = min(optima, key=lambda o: o[1])[0]
    return boots


def _clusters(groups, size: int) -> list[np.ndarray]:
    """Point indices per resampling unit: one per run label, or one per point without labels (or
    with a single label, which leaves nothing to resample between)."""
    if groups is None or len(set(groups)) < 2:
        return [np.array([i]) for i in range(size)]
    labels = list(groups)
    if len(labels) != size:
        raise ValueError(f"{len(labels)} group labels for {size} points")
    return [np.array([i for i, g in enumerate(labels) if g == u]) for u in dict.fromkeys(labels)]


def _usable(boots: np.ndarray) -> np.ndarray:
    """Bootstrap rows whose law is finite (a refit can run off along the flat A/B ridge, exp overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        law = np.column_stack([np.exp(boots[:, :3]), boots[:, 3:]])
    return boots[np.isfinite(law).all(axis=1)]


def _derived(boots: np.ndarray) -> dict[str, np.ndarray]:
    out = {
        "E": np.exp(boots[:, 2]),
        "A": np.exp(boots[:, 0]),
        "B": np.exp(boots[:, 1]),
        "alpha": boots[:, 3],
        "beta": boots[:, 4],
    }
    out["a"] = out["beta"] / (out["alpha"] + out["beta"])
    return out


def _identification(law: Chinchilla, ci: dict, log_n, log_d) -> tuple[dict[str, str], list[str]]:
    values = {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": law.a}
    out = {}
    for k, v in values.items():
        lo, hi = ci[k]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            out[k] = "no usable bootstrap refit: no interval"
        elif hi - lo > abs(v):
            out[k] = f"95% interval [{lo:.4g}, {hi:.4g}] is wider than the value {v:.4g}"
    warnings = []
    if np.std(log_n) > 0 and np.std(log_d) > 0:
        corr = float(np.corrcoef(log_n, log_d)[0, 1])
        if abs(corr) > 0.99:
            warnings.append(
                f"log N and log D are collinear (r = {corr:.3f}): alpha and beta cannot both be identified; "
                "train several token budgets per size"
            )
            out.setdefault("alpha", "collinear N and D")
            out.setdefault("beta", "collinear N and D")
    else:
        warnings.append("N or D does not vary: the law is not identified")
        out.update({k: "no variation in N or D" for k in ("alpha", "beta", "A", "B")})
    return out, warnings


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


def law_from_points(pts: Points, name: str, n_boot: int = 200) -> Chinchilla:
    """The Chinchilla law fitted to ``pts``, named ``name``, with its bootstrap intervals."""
    fitted = fit_chinchilla(pts.n, pts.d, pts.loss, n_boot=n_boot, n_convention=pts.n_convention)
    return fitted.law.with_(name=name, source=f"fitted to {pts.source}", ci=fitted.ci)
