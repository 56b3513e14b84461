"""Fitting scaling laws to (N, D, loss) points, with bootstrap intervals and honest flags.

Chinchilla approach 3 (Hoffmann et al. 2022 §3.3, App. D.2), as corrected by
Besiroglu et al. 2024: minimise the *summed* Huber loss (δ = 1e-3) of log-space
residuals, with the law written as

    log L̂ = LSE(a − α·log N, b − β·log D, e),   A = exp(a), B = exp(b), E = exp(e),

by BFGS from a grid of initialisations (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
a, b ∈ {0, 5, …, 25}). The whole grid is scored at once and BFGS runs from the best
starts, every start of every resample in one batch (:mod:`edgescale.scaling.batch_bfgs`).
Every bootstrap refit restarts from the grid too: a warm start at the point fit
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

from edgescale.scaling.batch_bfgs import bfgs_batch, huber_lse_batch
from edgescale.scaling.laws import Chinchilla

DELTA = 1e-3
FULL_FORM = "L = E + A/N^α + B/D^β"
TIED = "α = β"  # Hoffmann et al. 2022 approach 3 finds α ≈ β (0.34, 0.28; Epoch's refit 0.348, 0.366)
E_CAP = "E ≤ min observed loss"  # the fitted terms are positive, so the floor sits below every loss
REDUCED_FORM = f"{FULL_FORM}, {TIED}, {E_CAP}"
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


def _objective_tied(theta4: np.ndarray, log_n, log_d, log_l, delta: float = DELTA):
    """:func:`objective` with one exponent (α = β); theta4 = (a, b, e, alpha)."""
    f, g = objective(_untie(theta4), log_n, log_d, log_l, delta)
    return f, np.array([g[0], g[1], g[2], g[3] + g[4]])


def _untie(theta: np.ndarray) -> np.ndarray:
    """(a, b, e, alpha) → (a, b, e, alpha, alpha); a 5-vector is returned as it is."""
    theta = np.asarray(theta, dtype=float)
    return np.append(theta, theta[..., 3:4], axis=-1) if theta.shape[-1] == 4 else theta


def _grid(log_n, log_d, log_l, delta, tied: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every grid start (S, 5) and its Huber loss at each point (S, n): a start's score on any
    resample is this matrix times the resample's weights."""
    axes = ("a", "b", "e", "alpha") if tied else ("a", "b", "e", "alpha", "beta")
    starts = _untie(np.array(list(itertools.product(*(GRID[k] for k in axes)))))
    a, b, e, al, be = (starts[:, i : i + 1] for i in range(5))  # (S, 1) against (n,)
    u = np.stack([a - al * log_n, b - be * log_d, np.broadcast_to(e, (len(starts), log_n.size))])
    lse = np.logaddexp.reduce(u, axis=0)
    h, _ = _huber(lse - log_l, delta)
    return starts, h


def _bounded(theta0, log_n, log_d, log_l, delta, tied: bool, e_max: float) -> tuple[np.ndarray, float]:
    """The optimum with e ≤ ``e_max``, by L-BFGS-B (bounds need it; it runs only where the batch's
    unbounded optimum breaks the bound, as its per-iteration overhead in scipy >= 1.15 is large)."""
    x0 = np.array(theta0[:4] if tied else theta0, dtype=float)
    fun = _objective_tied if tied else objective
    x0[2] = min(x0[2], e_max)
    bounds = [(None, None)] * len(x0)
    bounds[2] = (None, e_max)
    options = {"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15}
    args = (log_n, log_d, log_l, delta)
    res = minimize(fun, x0, args=args, jac=True, method="L-BFGS-B", options=options, bounds=bounds)
    return _untie(res.x), float(res.fun)


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
    form: str = FULL_FORM  # the law fitted: the full form, or REDUCED_FORM

    @property
    def weak(self) -> list[str]:
        """The constants a plan needs (E, α, β) that the data do not pin."""
        return sorted(k for k in ("E", "alpha", "beta") if k in self.unidentified)

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
            "form": self.form,
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
    reduced: bool = False,
    unit: tuple[float, str] = (1.0, ""),
) -> ChinchillaFit:
    """Fit L = E + A/N^α + B/D^β (approach 3) with bootstrap 95% intervals; ``groups`` labels each
    point's run (e.g. its size) so the bootstrap resamples whole runs. ``reduced`` fits
    :data:`REDUCED_FORM` instead (one exponent, E at most the lowest loss: fewer constants for data
    that cannot separate five). ``unit`` = (factor, name) prints the messages' losses in the
    caller's unit (the fit itself runs in the loss's own unit)."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    if not (n.size == d.size == loss.size) or n.size < 5:
        raise ValueError(f"need at least 5 (N, D, loss) points of equal length, got {n.size}")
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    shape = {"tied": reduced, "e_max": float(log_l.min()) if reduced else None}
    optima = _multistart(log_n, log_d, log_l, delta, top_starts, **shape)
    theta, fun = min(optima, key=lambda o: o[1])
    near = np.array([t for t, f in optima if f <= fun * (1 + 1e-6) + 1e-12])
    spread = dict(zip(("a", "b", "e", "alpha", "beta"), (near.max(0) - near.min(0)).tolist(), strict=True))

    boots = bootstrap(theta, log_n, log_d, log_l, n_boot, seed, delta, groups=groups, top_starts=boot_starts, **shape)
    kept = _usable(boots)
    dropped = int(len(boots) - len(kept))
    with np.errstate(divide="ignore", invalid="ignore"):
        derived = _derived(kept)
    ci = {
        k: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if len(v) else (math.nan, math.nan)
        for k, v in derived.items()
    }

    form = REDUCED_FORM if reduced else FULL_FORM
    law = _theta_to_law(
        theta, name="fit", source=f"fitted (Chinchilla approach 3): {form}", n_convention=n_convention, form=form
    )
    resid = np.log(law.loss(n, d)) - log_l
    ss_tot = float(((log_l - log_l.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    unidentified, warnings = _identification(law, ci, log_n, log_d, unit, tied=reduced)
    if dropped:
        warnings.append(
            f"{dropped} of {len(boots)} bootstrap refits dropped (ran off to an unbounded law, or their resample "
            "had one N or one D): the intervals come from the rest"
        )
    e_fit, floor = law.E, 1e-3 * float(loss.min())
    if e_fit < floor:
        shown = f"{e_fit * unit[0]:.2g}{' ' + unit[1] if unit[1] else ''}"
        unidentified["E"] = f"collapsed to {shown}: the data show no loss floor, so E is not identified"
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
        form=form,
    )


def _multistart(log_n, log_d, log_l, delta, top: int, tied: bool = False, e_max=None) -> list[tuple[np.ndarray, float]]:
    """Local optima from the ``top`` best grid starts."""
    thetas, funs = _refits(np.ones((1, log_n.size)), log_n, log_d, log_l, delta, top, tied, e_max)
    return list(zip(thetas[0], funs[0], strict=True))


def _refits(weights: np.ndarray, log_n, log_d, log_l, delta, top: int, tied: bool, e_max):
    """For each row of point weights (a resample: how often each point was drawn), the optima from
    its ``top`` best grid starts, all solved in one batch (:mod:`edgescale.scaling.batch_bfgs`):
    (thetas (m, top, 5), objectives (m, top)). A start above ``e_max`` scores as if at it; an optimum
    that breaks the bound is refitted under it by L-BFGS-B."""
    starts, h = _grid(log_n, log_d, log_l, delta, tied)
    best = np.argsort(h @ weights.T, axis=0)[:top].T  # (m, top) start indices per resample
    x0 = starts[best].reshape(-1, 5)
    if e_max is not None:
        x0[:, 2] = np.minimum(x0[:, 2], e_max)
    w = np.repeat(weights, top, axis=0)  # one weight row per problem

    def fg(theta, idx):
        f, g = huber_lse_batch(_untie(theta), w[idx], log_n, log_d, log_l, delta)
        return (f, np.column_stack([g[:, :3], g[:, 3] + g[:, 4]])) if tied else (f, g)

    x, f = bfgs_batch(fg, x0[:, :4] if tied else x0)
    x = _untie(x)
    for i in np.flatnonzero(x[:, 2] > e_max) if e_max is not None else ():
        rows = np.repeat(np.arange(log_n.size), w[i].astype(int))
        x[i], f[i] = _bounded(x0[i], log_n[rows], log_d[rows], log_l[rows], delta, tied, e_max)
    return x.reshape(len(weights), top, 5), f.reshape(len(weights), top)


def bootstrap(
    theta,
    log_n,
    log_d,
    log_l,
    n_boot: int,
    seed: int = 0,
    delta: float = DELTA,
    *,
    groups=None,
    top_starts: int = 4,
    tied: bool = False,
    e_max=None,
) -> np.ndarray:
    """Refits to resamples with replacement, each from the grid's ``top_starts`` best starts (``theta``,
    the point fit, is not a start; see the module docstring): (n_boot, 5) rows of (a, b, e, alpha, beta).
    With ``groups`` (a run label per point) whole runs are resampled. A resample in which N or D
    does not vary identifies nothing: its row is NaN (dropped by :func:`_usable`, and counted)."""
    rng = np.random.default_rng(seed)
    log_n, log_d, log_l = (np.asarray(x, dtype=float) for x in (log_n, log_d, log_l))
    members = _clusters(groups, log_n.size)
    weights = np.zeros((n_boot, log_n.size))
    for i in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        weights[i] = np.bincount(idx, minlength=log_n.size)
    drawn = weights > 0
    varies = np.array([np.ptp(log_n[m]) > 0 and np.ptp(log_d[m]) > 0 for m in drawn], dtype=bool)
    boots = np.full((n_boot, 5), np.nan)
    if varies.any():
        thetas, funs = _refits(weights[varies], log_n, log_d, log_l, delta, top_starts, tied, e_max)
        boots[varies] = thetas[np.arange(len(thetas)), funs.argmin(axis=1)]
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


def _identification(
    law: Chinchilla, ci: dict, log_n, log_d, unit: tuple[float, str] = (1.0, ""), tied: bool = False
) -> tuple[dict[str, str], list[str]]:
    values = {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": law.a}
    out = {}
    for k, v in values.items():
        lo, hi = ci[k]
        f, name = unit if k in ("E", "A", "B") else (1.0, "")  # E, A, B carry the loss's unit
        shown = f" {name}" if name else ""
        if not (math.isfinite(lo) and math.isfinite(hi)):
            out[k] = "no usable bootstrap refit: no interval"
        elif hi - lo > abs(v):
            out[k] = f"95% interval [{lo * f:.4g}, {hi * f:.4g}]{shown} is wider than the value {v * f:.4g}{shown}"
    warnings = []
    if np.std(log_n) > 0 and np.std(log_d) > 0:
        corr = float(np.corrcoef(log_n, log_d)[0, 1])
        if abs(corr) > 0.99 and tied:  # one exponent survives collinearity; A and B do not separate
            out.setdefault("A", "collinear N and D")
            out.setdefault("B", "collinear N and D")
        elif abs(corr) > 0.99:
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
