"""Fitting the distillation law (:mod:`edgescale.scaling.distill_law`) to a teacher × student × tokens grid.

Points are (L_T, N_S, D_S, L_S) with L̃_S, the student's supervised loss at (N_S, D_S), measured (a
scratch twin) or from the supervised law fitted to the same study's scratch runs. The fit minimises
the squared log residuals, log L̂_S − log L_S (Busbridge et al. 2025 App. F fit in log space with a
Huber loss of δ = 1e-4; on a grid of tens of points there is no tail for Huber to cut, so plain least
squares), by scipy's bounded ``least_squares`` from several seeded random starts; intervals are the
2.5-97.5% quantiles of refits to resamples of whole runs, each refit from fresh random starts (a warm
start at the point fit would hide a flat direction, as in :mod:`edgescale.scaling.fit`).

Nine constants from a small grid trade off along ridges, so the fit tries forms in order and uses the
first whose free constants are all identified (the rule of :mod:`edgescale.scaling.identify`):

1. the full Eq. 8;
2. α′ = α, β′ = β: the student's exponents tied to the supervised law's;
3. also no capacity gap (c1 = 0: the broken power law is 1, the strong-student limit; f1, d1 unused).

A constant is "not identified" when the optimum sits on its bound, when its bootstrap interval spans
more than a factor 10 (positive scale constants) or is wider than its value (exponents), or when no
refit was usable. If no form is identified, the most reduced one is kept with its flags, and a plan
from it says ``unidentified``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from edgescale.atomic import write_json
from edgescale.scaling.distill_law import FIT_VERSION, FORM, PARAMS, DistillLaw, Supervised, student_loss
from edgescale.scaling.identify import fit_identified

LOG_PARAMS = ("c1", "f1", "d1", "A", "B")  # fitted as logs: positive scales
BOUNDS = {  # in the fitted space (logs for LOG_PARAMS); the paper calls every constant positive
    "c0": (0.0, 10.0),
    "c1": (math.log(1e-2), math.log(1e3)),
    "f1": (math.log(1e-2), math.log(10.0)),
    "d1": (math.log(0.1), math.log(10.0)),
    "A": (-10.0, 25.0),
    "B": (-10.0, 25.0),
    "alpha": (0.02, 2.0),
    "beta": (0.02, 2.0),
    "gamma": (0.05, 3.0),
}
STARTS = {  # where random starts are drawn (inside the bounds)
    "c0": (0.0, 3.0),
    "c1": (math.log(0.1), math.log(100.0)),
    "f1": (math.log(0.05), math.log(2.0)),
    "d1": (math.log(0.5), math.log(3.0)),
    "A": (0.0, 10.0),
    "B": (0.0, 12.0),
    "alpha": (0.1, 1.0),
    "beta": (0.1, 1.0),
    "gamma": (0.3, 1.5),
}
LEVELS = (
    ("full Eq. 8", ()),
    ("α' = α, β' = β (the supervised law's exponents)", ("alpha", "beta")),
    ("α' = α, β' = β, no capacity gap (c1 = 0)", ("alpha", "beta", "c1", "f1", "d1")),
)


_SUP_WHY = "not identified by the scratch runs (the supervised law gives L̃_S and the from-scratch plan)"


@dataclass(frozen=True)
class DistillPoints:
    teacher_loss: np.ndarray
    n_s: np.ndarray
    d_s: np.ndarray
    student_loss: np.ndarray
    supervised_loss: np.ndarray  # L̃_S at each point
    groups: tuple | None = None  # a run label per point: the bootstrap resamples whole runs


@dataclass(frozen=True)
class LevelFit:
    form: str
    fixed: dict[str, float]
    theta: np.ndarray  # all nine constants, natural space
    rmse_log: float
    ci: dict[str, tuple[float, float]]
    unidentified: dict[str, str]
    boot_used: int

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "fixed": self.fixed,
            "constants": dict(zip(PARAMS, self.theta.tolist(), strict=True)),
            "rmse_log": self.rmse_log,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "unidentified": self.unidentified,
            "boot_used": self.boot_used,
        }


def _fixed_values(names: tuple[str, ...], sup: Supervised) -> dict[str, float]:
    values = {"alpha": sup.alpha, "beta": sup.beta, "c1": 0.0, "f1": 1.0, "d1": 1.0}
    return {k: values[k] for k in names}


def _full(x: np.ndarray, free: list[str], fixed: dict[str, float]) -> np.ndarray:
    vals = dict(fixed)
    for k, v in zip(free, x, strict=True):
        vals[k] = math.exp(v) if k in LOG_PARAMS else v
    return np.array([vals[k] for k in PARAMS])


def _solve(pts: DistillPoints, idx: np.ndarray, free, fixed, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """The best of the local optima from ``starts`` on the points ``idx``: (x in fitted space, cost)."""
    lt, n, d, ls, lt_s = (a[idx] for a in (pts.teacher_loss, pts.n_s, pts.d_s, pts.student_loss, pts.supervised_loss))
    log_ls = np.log(ls)

    def resid(x):
        r = np.log(student_loss(_full(x, free, fixed), n, d, lt, lt_s)) - log_ls
        return np.where(np.isfinite(r), r, 1e3)

    lo, hi = np.array([BOUNDS[k][0] for k in free]), np.array([BOUNDS[k][1] for k in free])
    best = (starts[0], math.inf)
    for x0 in starts:
        res = least_squares(resid, x0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=2000)
        if res.cost < best[1]:
            best = (res.x, float(res.cost))
    return best


def _starts(rng: np.random.Generator, free: list[str], k: int) -> np.ndarray:
    return np.column_stack([rng.uniform(*STARTS[name], size=k) for name in free])


def fit_level(pts: DistillPoints, level: int, sup: Supervised, *, n_boot: int, starts: int, seed: int) -> LevelFit:
    form, names = LEVELS[level]
    fixed = _fixed_values(names, sup)
    free = [k for k in PARAMS if k not in fixed]
    rng = np.random.default_rng(seed)
    everything = np.arange(pts.n_s.size)
    x, cost = _solve(pts, everything, free, fixed, _starts(rng, free, starts))
    theta = _full(x, free, fixed)
    members = _clusters(pts.groups, pts.n_s.size)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        if (
            len(set(pts.teacher_loss[idx])) < 2
            or np.ptp(np.log(pts.n_s[idx])) == 0
            or np.ptp(np.log(pts.d_s[idx])) == 0
        ):
            continue  # a resample with one teacher, one N or one D identifies nothing
        xb, _ = _solve(pts, idx, free, fixed, _starts(rng, free, max(2, starts // 3)))
        boots.append(xb)
    boots = np.array(boots).reshape(-1, len(free))
    ci = {}
    for j, k in enumerate(free):
        if len(boots):
            lo, hi = np.quantile(boots[:, j], [0.025, 0.975])
            ci[k] = (math.exp(lo), math.exp(hi)) if k in LOG_PARAMS else (float(lo), float(hi))
    flags = _flags(x, free, theta, ci, pts)
    rmse = float(np.sqrt(2 * cost / max(pts.n_s.size, 1)))
    return LevelFit(form, fixed, theta, rmse, ci, flags, len(boots))


def _flags(x, free, theta, ci, pts: DistillPoints) -> dict[str, str]:
    """Why each free constant is not identified (absent when it is)."""
    out = {}
    values = dict(zip(PARAMS, theta, strict=True))
    for j, k in enumerate(free):
        lo_b, hi_b = BOUNDS[k]
        if min(x[j] - lo_b, hi_b - x[j]) < 1e-3 * (hi_b - lo_b):
            edge = "lower" if x[j] - lo_b < hi_b - x[j] else "upper"
            out[k] = f"pinned at its {edge} bound ({values[k]:.4g}): the data do not bound it"
        elif k not in ci:
            out[k] = "no usable bootstrap refit: no interval"
        elif k in LOG_PARAMS and ci[k][1] > 10 * ci[k][0]:
            out[k] = f"95% interval [{ci[k][0]:.3g}, {ci[k][1]:.3g}] spans more than a factor 10"
        elif k not in LOG_PARAMS and ci[k][1] - ci[k][0] > abs(values[k]):
            out[k] = f"95% interval [{ci[k][0]:.3g}, {ci[k][1]:.3g}] is wider than the value {values[k]:.3g}"
    if len(set(pts.teacher_loss.tolist())) < 2:
        out.update({k: "one teacher loss: the teacher terms are not identified" for k in ("c0", "c1", "f1", "d1")})
    return out


def _clusters(groups, size: int) -> list[np.ndarray]:
    if groups is None or len(set(groups)) < 2:
        return [np.array([i]) for i in range(size)]
    labels = list(groups)
    return [np.array([i for i, g in enumerate(labels) if g == u]) for u in dict.fromkeys(labels)]


def fit_supervised(n, d, loss, *, n_boot: int = 200, groups=None, seed: int = 0) -> tuple[Supervised, dict]:
    """The study's supervised law (Chinchilla approach 3 with its identifiability test, γ = 1) and the fit's record."""
    found = fit_identified(n, d, loss, n_boot=n_boot, seed=seed, groups=groups)
    fit = found.used or found.reduced or found.full
    law = fit.law
    sup = Supervised(law.E, law.A, law.B, law.alpha, law.beta, 1.0, name=f"fitted ({fit.form})")
    return Supervised(**{**sup.__dict__, "unidentified": tuple(found.weak)}), fit.to_dict()


def fit_distill(
    pts: DistillPoints, sup: Supervised, *, n_boot: int = 200, starts: int = 12, seed: int = 0, **meta
) -> tuple[DistillLaw, list[LevelFit]]:
    """The law in the first identified form of :data:`LEVELS` (or the most reduced one, flagged), and
    every form tried. ``meta`` sets the law's name, source, loss_unit, corpus and n_convention."""
    if pts.n_s.size < 6:
        raise ValueError(f"need at least 6 (teacher, student, tokens) points, got {pts.n_s.size}")
    tried = []
    for level in range(len(LEVELS)):
        fit = fit_level(pts, level, sup, n_boot=n_boot, starts=starts, seed=seed + level)
        tried.append(fit)
        if not fit.unidentified:
            break
    use = tried[-1]
    form = FORM if not use.fixed else f"{FORM}; {use.form}"
    law = DistillLaw(
        *use.theta.tolist(),
        supervised=sup,
        form=form,
        ci=use.ci,
        unidentified=dict(use.unidentified) | {f"supervised.{k}": _SUP_WHY for k in sup.unidentified},
        fixed={k: f"{v:.4g}" for k, v in use.fixed.items()},
        **meta,
    )
    return law, tried


def write_fit(
    path: Path, law: DistillLaw, tried: list[LevelFit], pts: DistillPoints, extra: dict | None = None
) -> Path:
    """The JSON ``edgescale plan --distill-law fit:FILE`` reads."""
    points = [
        {"teacher_loss": a, "n_s": b, "d_s": c, "student_loss": e, "supervised_loss": f}
        for a, b, c, e, f in zip(
            *(x.tolist() for x in (pts.teacher_loss, pts.n_s, pts.d_s, pts.student_loss, pts.supervised_loss)),
            strict=True,
        )
    ]
    doc = {"version": FIT_VERSION, "law": law.to_dict(), "forms_tried": [t.to_dict() for t in tried], "points": points}
    write_json(path, json.loads(json.dumps(doc | (extra or {}), default=float)))
    return path
