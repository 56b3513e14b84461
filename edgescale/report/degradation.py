"""How much a compression recipe costs in loss, as a law of model size and data.

After Kumar et al. 2024, "Scaling Laws for Precision" (arXiv:2411.04330), §4 on
post-train quantization: the loss a model loses when quantized after training follows

    δ_PTQ(N, D) ≈ C · D^γ_D / N^γ_N     (times a factor in the post-train precision)

— larger models lose less, models trained on more data lose more. We use that form only:
per recipe, the recipe's validation-loss change against the same size's baseline (fp32),
``δ = L_recipe − L_fp32`` in bits per byte, fitted across the family in log space as

    log|δ| = a + b·log N + c·log(D/N)          (γ_N = c − b, γ_D = c)

with N the parent's total parameters (the run's scaling-law convention) and D its
pre-training tokens (recovery tokens are part of the recipe, not of D). The paper's
constants (fitted on larger models, other data and integer formats) are not used, nor its
precision factor: one recipe is one precision.

A law is fitted only where the points support it (the numbers of a failed requirement are
in ``notes``; the per-size δ points are kept either way):

- at least ``MIN_SIZES`` (5) sizes spanning at least ``MIN_DECADES`` (1.5) decades of N;
  otherwise the form is ``none``: per-size δ only, no law, no prediction. A ladder of
  3–4 sizes over a decade, with D/N falling as N grows (the default's r ≈ −0.99), cannot
  separate a slope in N from one in D/N, nor judge either against noise;
- ``c`` (γ_D) needs at least ``MIN_RATIOS`` (2) D/N ratios at every size (e.g. the cooled
  branches quantized too) and log N, log(D/N) not collinear (|r| < 0.95); otherwise
  ``c = 0`` (form ``power_law_n``) and ``b`` carries the ladder's D(N) along with N;
- δ that changes sign across the family, or is zero anywhere (a recipe that is noise
  around the baseline, e.g. fp16), has no power law: the fit falls back to the mean δ,
  with a note. A recipe that improves the loss at every size is fitted on |δ| with
  sign −1.

``predict(N, D)`` refuses (NaN, with ``refusal`` saying why) outside the sampled box —
N within the sampled sizes, D/N within the sampled ratios — and ``curve`` spans only the
sampled N: Kumar et al. find PTQ loss growing with D/N, so a law fitted at 4–40 tokens
per parameter says nothing at 4,000.

The points are the run's degradation grid where it has one (:mod:`edgescale.degradation_grid`:
every recipe at each cooled branch of each seed, so several D/N per size and replicate δ per
(N, D/N) cell; the notes give δ by D/N per size and the spread across seeds), else one point
per size from the variants.

Every δ carries its standard error: paired over the scoring windows both models were scored
on (their per-window NLL sidecars, :mod:`edgescale.results.nll`), which removes the windows'
shared difficulty; else unpaired, sqrt(se_recipe² + se_base²), from the loss records; else
none (older runs). A δ with |δ| < 1.96·SE is flagged ``within_noise``, and a recipe whose
every δ is within noise says so. The law's fit is not weighted by these errors (in log space
a δ near noise has no usable weight); the points keep them, and the notes name the noisy ones.

Intervals come from a residual bootstrap with leverage-corrected residuals (Davison &
Hinkley 1997, §6.2.3, "modified residuals"), percentile 95%; inside the box they are the
law's own uncertainty. Fit quality: R² and RMSE in log space, the residual of every point
and the degrees of freedom left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgescale.report.degradation_points import (  # noqa: F401 -- re-exported: they were defined here first
    DegradationPoint,
    degradation_points,
    delta_se,
    grid_points,
    recipe_points,
)
from edgescale.results.nll import Z95
from edgescale.results.schema import HostLatency, Results

N_BOOT = 2000
COLLINEAR_R = 0.95
MIN_SIZES = 5  # sizes a law needs ...
MIN_DECADES = 1.5  # ... spanning this many decades of N
MIN_RATIOS = 2  # D/N ratios at every size for the D term
BOX_RTOL = 1e-9  # the box's edges are sampled points: float noise must not refuse them


@dataclass(frozen=True)
class DegradationFit:
    """One recipe's degradation law; ``predict(N, D)`` gives (δ, low, high) in bits per byte
    inside the sampled (N, D/N) box, NaN outside it (``refusal`` says why)."""

    recipe: str
    baseline: str
    form: str  # "power_law_nd" | "power_law_n" | "constant_mean" | "none" (per-size δ only)
    sign: float  # +1: the recipe loses loss; −1: it gains at every size; 0 for the mean fallback
    coef: tuple[float, ...]  # (a, b, c) in log space, zeros where not fitted; (mean,) for the mean fallback
    boot: tuple[tuple[float, ...], ...] = field(repr=False, default=())
    points: tuple[DegradationPoint, ...] = ()
    r2_log: float | None = None
    rmse_log: float | None = None
    dof: int = 0
    residuals_log: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()

    def _design(self, n: float, d: float) -> np.ndarray:
        return np.array([1.0, math.log(n), math.log(d / n)])

    def refusal(self, n: float, d: float) -> str | None:
        """Why ``predict(n, d)`` gives no number (no law, or (N, D/N) outside the sampled box); None: it does."""
        if self.form == "none":
            return "no degradation law: " + ("; ".join(self.notes) or "no points")
        if not (n > 0 and d > 0):
            return f"N = {n:.3g}, D = {d:.3g}: the law needs both positive"
        (n_lo, n_hi), (r_lo, r_hi) = _box(self.points)
        out = []
        if not n_lo * (1 - BOX_RTOL) <= n <= n_hi * (1 + BOX_RTOL):
            out.append(f"N = {n:.3g} is outside the sampled {n_lo:.3g}–{n_hi:.3g}")
        if not r_lo * (1 - BOX_RTOL) <= d / n <= r_hi * (1 + BOX_RTOL):
            out.append(f"D/N = {d / n:.3g} is outside the sampled {r_lo:.3g}–{r_hi:.3g}")
        return "; ".join(out) + ": the degradation law does not extrapolate" if out else None

    def in_range(self, n: float, d: float) -> bool:
        return self.refusal(n, d) is None

    def predict(self, n: float, d: float) -> tuple[float, float, float]:
        """(δ, low, high) in bits per byte at N total parameters trained on D tokens (95%);
        NaN where the law refuses (see ``refusal``)."""
        if self.refusal(n, d) is not None:
            return math.nan, math.nan, math.nan
        if self.form == "constant_mean":
            lo, hi = np.quantile(np.array(self.boot)[:, 0], [0.025, 0.975])
            return self.coef[0], float(lo), float(hi)
        x = self._design(n, d)
        centre = self.sign * math.exp(float(x @ np.array(self.coef)))
        draws = self.sign * np.exp(np.array(self.boot) @ x)
        lo, hi = np.quantile(draws, [0.025, 0.975])
        return centre, float(min(lo, hi)), float(max(lo, hi))

    @property
    def gamma_n(self) -> float | None:
        """Kumar et al.'s γ_N (δ ∝ 1/N^γ_N at fixed D); None without a power law."""
        return None if self.form not in ("power_law_nd", "power_law_n") else self.coef[2] - self.coef[1]

    @property
    def gamma_d(self) -> float | None:
        """γ_D (δ ∝ D^γ_D at fixed N); None where the points could not separate D from N."""
        return self.coef[2] if self.form == "power_law_nd" else None

    def intervals(self) -> dict[str, list[float] | None]:
        """Bootstrap 95% intervals of γ_N, γ_D and C = e^a (None where not fitted)."""
        if self.form not in ("power_law_nd", "power_law_n") or not self.boot:
            return {"gamma_n_ci": None, "gamma_d_ci": None, "c_ci": None}
        b = np.array(self.boot)

        def ci(x: np.ndarray) -> list[float]:
            return [float(q) for q in np.quantile(x, [0.025, 0.975])]

        gamma_d = ci(b[:, 2]) if self.form == "power_law_nd" else None
        return {"gamma_n_ci": ci(b[:, 2] - b[:, 1]), "gamma_d_ci": gamma_d, "c_ci": ci(np.exp(b[:, 0]))}

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("boot")
        out |= {"gamma_n": self.gamma_n, "gamma_d": self.gamma_d, "n_points": len(self.points)}
        out |= self.intervals()
        if self.points and self.form != "none":
            out["curve"] = self.curve()
        return out

    def curve(self, n_points: int = 16) -> list[dict]:
        """δ with its interval across the sampled N only, D following the sizes' D(N) (log-linear
        between sizes; a size's D is the geometric mean of its points'): what a plot of the law draws."""
        if self.form == "none" or not self.points:
            return []
        by_n: dict[float, list[float]] = {}
        for p in self.points:
            by_n.setdefault(p.n, []).append(math.log(p.d))
        ns = np.log(sorted(by_n))  # np.interp needs increasing N
        ds = np.array([np.mean(by_n[n]) for n in sorted(by_n)])
        grid = np.geomspace(math.exp(ns.min()), math.exp(ns.max()), n_points)
        grid[0], grid[-1] = math.exp(ns.min()), math.exp(ns.max())
        out = []
        for n in grid:
            d = math.exp(float(np.interp(math.log(n), ns, ds)))
            delta, lo, hi = self.predict(float(n), d)
            out.append({"n": float(n), "d": d, "delta": delta, "low": lo, "high": hi})
        return out


def _box(pts: Sequence[DegradationPoint]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The sampled (N, D/N) box: (min, max) of N and of D/N over the points."""
    ns = [p.n for p in pts]
    rs = [p.d / p.n for p in pts]
    return (min(ns), max(ns)), (min(rs), max(rs))


@dataclass(frozen=True)
class _Support:
    """What the points can carry: a law at all, and its D term; notes give the numbers."""

    law: bool
    d_term: bool
    notes: tuple[str, ...]


def _support(pts: Sequence[DegradationPoint]) -> _Support:
    by_n: dict[float, set[float]] = {}
    for p in pts:
        by_n.setdefault(p.n, set()).add(round(math.log(p.d / p.n), 6))
    sizes = sorted(by_n)
    decades = math.log10(sizes[-1] / sizes[0])
    ratios = [len(by_n[n]) for n in sizes]
    log_n, log_r = np.log([p.n for p in pts]), np.log([p.d / p.n for p in pts])
    corr = float(np.corrcoef(log_n, log_r)[0, 1]) if np.std(log_r) > 1e-12 and np.std(log_n) > 1e-12 else math.nan
    r_text = "D/N does not vary" if np.std(log_r) <= 1e-12 else f"log N and log(D/N) correlate at r = {corr:.3f}"
    per_size = f"D/N ratios per size: {', '.join(map(str, ratios))}"
    span = f"{len(sizes)} sizes over {decades:.2f} decades of N ({sizes[0]:.3g}–{sizes[-1]:.3g})"
    failed = [f"{len(sizes)} sizes (a law needs ≥ {MIN_SIZES})"] if len(sizes) < MIN_SIZES else []
    failed += [f"{decades:.2f} decades of N (a law needs ≥ {MIN_DECADES})"] if decades < MIN_DECADES else []
    if failed:
        why = f"no law fitted, per-size δ only: {' and '.join(failed)}; {span}; {per_size}; {r_text}"
        return _Support(False, False, (why,))
    d_failed = [f"{min(ratios)} D/N ratio(s) at some size (needs ≥ {MIN_RATIOS} at every size)"]
    d_failed = d_failed if min(ratios) < MIN_RATIOS else []
    d_failed += [r_text + f" (needs |r| < {COLLINEAR_R})"] if not abs(corr) < COLLINEAR_R else []
    if d_failed:
        why = f"γ_D not fitted: {' and '.join(d_failed)}; {per_size}; the slope in N carries the sizes' D(N)"
        return _Support(True, False, (why,))
    return _Support(True, True, ())


def _box_note(pts: Sequence[DegradationPoint]) -> str:
    (n_lo, n_hi), (r_lo, r_hi) = _box(pts)
    return f"predicts only inside the sampled N {n_lo:.3g}–{n_hi:.3g}, D/N {r_lo:.3g}–{r_hi:.3g}"


def _mean_fit(
    recipe: str, baseline: str, pts: Sequence[DegradationPoint], notes: list[str], seed: int
) -> DegradationFit:
    deltas = np.array([p.delta_bpb for p in pts])
    rng = np.random.default_rng(seed)
    boot = tuple((float(m),) for m in rng.choice(deltas, (N_BOOT, deltas.size)).mean(axis=1))
    return DegradationFit(
        recipe, baseline, "constant_mean", 0.0, (float(deltas.mean()),), boot, tuple(pts), dof=deltas.size - 1,
        notes=tuple(notes),
    )  # fmt: skip


def _noise_notes(pts: Sequence[DegradationPoint]) -> list[str]:
    """What the points' standard errors say: every δ within noise, or which ones are."""
    known = [p for p in pts if p.within_noise is not None]
    noisy = [p for p in known if p.within_noise]
    if not noisy:
        return []
    each = ", ".join(f"{p.size} {p.delta_bpb:+.2g} ± {Z95 * p.se_bpb:.2g}" for p in noisy)
    if len(noisy) == len(pts):
        return [f"every δ is within noise (|δ| < 1.96·SE at every size: {each} bpb): no effect is resolved"]
    return [f"{len(noisy)} of {len(pts)} δ within noise (|δ| < 1.96·SE: {each} bpb)"]


def fit_degradation(
    recipe: str, baseline: str, pts: Sequence[DegradationPoint], *, n_boot: int = N_BOOT, seed: int = 0
) -> DegradationFit:
    """Fit one recipe's δ(N, D) to its points (see the module docstring for the forms); the
    points keep their standard errors and the notes say which δ are within noise."""
    fit = _fit(recipe, baseline, pts, n_boot=n_boot, seed=seed)
    noise = _noise_notes(pts)
    return replace(fit, notes=(*fit.notes, *noise)) if noise else fit


def _fit(
    recipe: str, baseline: str, pts: Sequence[DegradationPoint], *, n_boot: int = N_BOOT, seed: int = 0
) -> DegradationFit:
    if not pts:
        return DegradationFit(
            recipe, baseline, "none", 0.0, (), notes=("no size has both this recipe and the baseline",)
        )
    support = _support(pts)
    if not support.law:
        return DegradationFit(recipe, baseline, "none", 0.0, (), points=tuple(pts), notes=support.notes)
    notes = [*support.notes, _box_note(pts)]
    deltas = np.array([p.delta_bpb for p in pts])
    if not (np.all(deltas > 0) or np.all(deltas < 0)):
        why = "δ is zero or changes sign across the family: no power law; mean δ"
        return _mean_fit(recipe, baseline, pts, [why, *notes], seed)
    sign = 1.0 if deltas[0] > 0 else -1.0
    log_n, log_r = np.log([p.n for p in pts]), np.log([p.d / p.n for p in pts])
    cols = [np.ones_like(log_n), log_n] + ([log_r] if support.d_term else [])
    X = np.column_stack(cols)
    y = np.log(np.abs(deltas))
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    fitted = X @ beta
    resid = y - fitted
    dof = len(pts) - X.shape[1]
    # Leverage-corrected residuals, centred (Davison & Hinkley 1997 eq. 6.9).
    h = np.einsum("ij,jk,ik->i", X, np.linalg.pinv(X.T @ X), X)
    mod = resid / np.sqrt(np.clip(1 - h, 1e-12, None))
    mod -= mod.mean()
    rng = np.random.default_rng(seed)
    ystar = fitted + rng.choice(mod, (n_boot, len(pts)))
    boot = np.linalg.lstsq(X, ystar.T, rcond=None)[0].T  # (n_boot, k)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return DegradationFit(
        recipe,
        baseline,
        "power_law_nd" if support.d_term else "power_law_n",
        sign,
        _pad(beta),
        tuple(_pad(b) for b in boot),
        tuple(pts),
        r2_log=1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 and dof > 0 else None,
        rmse_log=float(np.sqrt((resid**2).mean())),
        dof=dof,
        residuals_log=tuple(float(r) for r in resid),
        notes=tuple(notes + (["improves the loss at every size: fitted on |δ| with sign −1"] if sign < 0 else [])),
    )


def _pad(b: Sequence[float]) -> tuple[float, ...]:
    """(a, b, c) with zeros for the columns a smaller form left out."""
    return tuple(float(x) for x in b) + (0.0,) * (3 - len(b))


def fit_recipes(results: Results, root: Path | None = None, *, seed: int = 0) -> dict[str, DegradationFit]:
    """A degradation fit for every recipe of a run but its baseline (the first recipe); with the
    run directory ``root``, each δ's error is paired over the per-window NLL sidecars. Where the run
    has a degradation grid, its points (every cooled branch and seed) are the data, else one per size."""
    recipes = list(dict.fromkeys(v.recipe for v in results.variants))
    if not recipes:
        return {}
    base = baseline_recipe(results)
    unknown = sorted(s.size for s in results.sizes if s.train_tokens <= 0)
    fits = {}
    for r in recipes:
        if r != base:
            pts, notes = recipe_points(results, r, base, root)
            fit = fit_degradation(r, base, pts, seed=seed)
            fits[r] = replace(fit, notes=(*fit.notes, *notes)) if notes else fit
    if unknown:  # said, not silently dropped
        note = f"left out (training tokens unknown): {', '.join(unknown)}"
        fits = {r: replace(f, notes=(*f.notes, note)) for r, f in fits.items()}
    return fits


def baseline_recipe(results: Results) -> str:
    """The recipe speed-ups are measured against (named by ``decode_speedup_vs_<recipe>``), else the first."""
    for v in results.variants:
        host = v.latency.get("host")
        for base in host.speedups("decode") if isinstance(host, HostLatency) else ():
            return base
    return results.variants[0].recipe
