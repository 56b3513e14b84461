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


def _grid_scores(log_n, log_d, log_l, delta, tied: bool = False) -> tuple[np.ndarray, np.ndarray]:
    axes = ("a", "b", "e", "alpha") if tied else ("a", "b", "e", "alpha", "beta")
    starts = _untie(np.array(list(itertools.product(*(GRID[k] for k in axes)))))
    a, b, e, al, be = (starts[:, i : i + 1] for i in range(5))  # (S, 1) against (n,)
    u = np.stack([a - al * log_n, b - be * log_d, np.broadcast_to(e, (len(starts), log_n.size))])
    lse = np.logaddexp.reduce(u, axis=0)
    h, _ = _huber(lse - log_l, delta)
    return starts, h.sum(axis=1)


def _lbfgs(theta0, log_n, log_d, log_l, delta, method: str = "L-BFGS-B", tied: bool = False, e_max=None):
    # BFGS (used by the bootstrap) reaches the same optima here at a small fraction of
    # L-BFGS-B's per-iteration overhead in scipy >= 1.15, which made grid restarts of
    # every refit take minutes; a bound on e needs L-BFGS-B, so BFGS tries first and L-BFGS-B
    # runs only where BFGS's optimum breaks the bound
    if e_max is not None and method == "BFGS":
        theta, fun = _lbfgs(theta0, log_n, log_d, log_l, delta, method, tied)
        if theta[2] <= e_max:
            return theta, fun
    method = "L-BFGS-B" if e_max is not None else method
    options = {"maxiter": 10_000, "gtol": 1e-12} | ({"ftol": 1e-15} if method == "L-BFGS-B" else {})
    fun, x0 = (_objective_tied, np.asarray(theta0)[:4]) if tied else (objective, theta0)
    bounds = None
    if e_max is not None:
        bounds = [(None, None)] * len(x0)
        bounds[2] = (None, e_max)
        x0 = np.array(x0, dtype=float)
        x0[2] = min(x0[2], e_max)
    res = minimize(fun, x0, args=(log_n, log_d, log_l, delta), jac=True, method=method, options=options, bounds=bounds)
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


def _multistart(
    log_n, log_d, log_l, delta, top: int, method: str = "L-BFGS-B", tied: bool = False, e_max=None
) -> list[tuple[np.ndarray, float]]:
    """Local optima from the ``top`` best grid starts."""
    starts, scores = _grid_scores(log_n, log_d, log_l, delta, tied)
    if e_max is not None:  # a start above the bound scores as if at it
        starts = starts.copy()
        starts[:, 2] = np.minimum(starts[:, 2], e_max)
    return [_lbfgs(starts[i], log_n, log_d, log_l, delta, method, tied, e_max) for i in np.argsort(scores)[:top]]


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
    boots = np.full((n_boot, 5), np.nan)
    for i in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        if np.ptp(log_n[idx]) == 0 or np.ptp(log_d[idx]) == 0:
            continue
        optima = _multistart(log_n[idx], log_d[idx], log_l[idx], delta, top_starts, "BFGS", tied, e_max)
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
