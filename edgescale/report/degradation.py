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
precision factor: one recipe is one precision. A ladder of 3–5 sizes supports few
parameters, so the form shrinks with the data:

- ``c`` is fitted only with at least 4 points and log N, log(D/N) not collinear
  (|r| < 0.95); otherwise ``c = 0`` and ``b`` carries the ladder's D(N) along with N
  (the note says D is not separated);
- a slope needs at least 3 points (2 leave no residual to judge it by): with 2, the
  fit is a constant in log space;
- δ that changes sign across the family, or is zero anywhere (a recipe that is noise
  around the baseline, e.g. fp16), has no power law: the fit falls back to the mean δ,
  with a note. A recipe that improves the loss at every size is fitted on |δ| with
  sign −1.

Intervals come from a residual bootstrap with leverage-corrected residuals (Davison &
Hinkley 1997, §6.2.3, "modified residuals"), percentile 95%. Fit quality: R² and RMSE in
log space, the residual of every point and the degrees of freedom left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from edgescale.results.schema import HostLatency, Results

N_BOOT = 2000
COLLINEAR_R = 0.95


@dataclass(frozen=True)
class DegradationPoint:
    size: str
    n: float  # parent's total parameters
    d: float  # parent's pre-training tokens
    delta_bpb: float  # validation loss change vs the baseline, bits per byte
    delta_test_bpb: float | None = None


@dataclass(frozen=True)
class DegradationFit:
    """One recipe's degradation law; ``predict(N, D)`` gives (δ, low, high) in bits per byte."""

    recipe: str
    baseline: str
    form: str  # "power_law_nd" | "power_law_n" | "constant_log" | "constant_mean" | "none"
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

    def predict(self, n: float, d: float) -> tuple[float, float, float]:
        """(δ, low, high) in bits per byte at N total parameters trained on D tokens (95%)."""
        if self.form == "none":
            return math.nan, math.nan, math.nan
        if self.form == "constant_mean":
            lo, hi = np.quantile(np.array(self.boot)[:, 0], [0.025, 0.975]) if self.boot else (math.nan, math.nan)
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
        """γ_D (δ ∝ D^γ_D at fixed N); None where the ladder could not separate D from N."""
        return self.coef[2] if self.form == "power_law_nd" else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("boot")
        out |= {"gamma_n": self.gamma_n, "gamma_d": self.gamma_d, "n_points": len(self.points)}
        if self.points:
            out["curve"] = self.curve()
        return out

    def curve(self, n_points: int = 16) -> list[dict]:
        """δ with its interval from half the smallest to 4x the largest N, D following the
        ladder's D(N) (log-linear between sizes, flat beyond): what a plot of the law draws."""
        pts = sorted(self.points, key=lambda p: p.n)  # np.interp needs increasing N
        ns = np.log([p.n for p in pts])
        # D unknown (0: a pretrained checkpoint, not trained here) stays 0 along the curve
        ds = np.log([p.d for p in pts]) if all(p.d > 0 for p in pts) else None
        grid = np.geomspace(0.5 * math.exp(ns.min()), 4 * math.exp(ns.max()), n_points)
        out = []
        for n in grid:
            d = math.exp(float(np.interp(math.log(n), ns, ds))) if ds is not None else 0.0
            delta, lo, hi = self.predict(float(n), d)
            out.append({"n": float(n), "d": d, "delta": delta, "low": lo, "high": hi})
        return out


def degradation_points(results: Results, recipe: str, baseline: str) -> list[DegradationPoint]:
    """δ of ``recipe`` against ``baseline`` at every ladder size that has both (distilled
    students are left out: their loss comes from another training process, and so are
    pretrained candidates whose training tokens are unknown: the law is in N and D)."""
    sizes = {s.size: s for s in results.sizes if not s.distilled_from and s.train_tokens > 0}
    by = {(v.size, v.recipe): v for v in results.variants}
    out = []
    for name, s in sizes.items():
        v, b = by.get((name, recipe)), by.get((name, baseline))
        if v is None or b is None:
            continue
        val = v.loss["validation"].bits_per_byte - b.loss["validation"].bits_per_byte
        test = None
        if "test" in v.loss and "test" in b.loss:
            test = v.loss["test"].bits_per_byte - b.loss["test"].bits_per_byte
        if math.isfinite(val):
            out.append(DegradationPoint(name, float(s.params_total), float(s.train_tokens), val, test))
    return sorted(out, key=lambda p: p.n)


def _mean_fit(recipe: str, baseline: str, pts: Sequence[DegradationPoint], note: str, seed: int) -> DegradationFit:
    deltas = np.array([p.delta_bpb for p in pts])
    rng = np.random.default_rng(seed)
    boot = ()
    notes = [note]
    if deltas.size >= 2:
        boot = tuple((float(m),) for m in rng.choice(deltas, (N_BOOT, deltas.size)).mean(axis=1))
    else:
        notes.append("one point: no interval")
    return DegradationFit(
        recipe, baseline, "constant_mean", 0.0, (float(deltas.mean()),), boot, tuple(pts), dof=deltas.size - 1,
        notes=tuple(notes),
    )  # fmt: skip


def _columns(pts: Sequence[DegradationPoint]) -> tuple[np.ndarray, str, list[str]]:
    """The design matrix the points support, its form name and notes on what was dropped."""
    log_n = np.log([p.n for p in pts])
    log_r = np.log([p.d / p.n for p in pts])
    ones = np.ones_like(log_n)
    if len(pts) < 3:
        return ones[:, None], "constant_log", [f"{len(pts)} points: no slope in N can be judged; δ taken as constant"]
    corr = float(np.corrcoef(log_n, log_r)[0, 1]) if np.std(log_r) > 1e-12 else 1.0
    if len(pts) >= 4 and abs(corr) < COLLINEAR_R:
        return np.column_stack([ones, log_n, log_r]), "power_law_nd", []
    why = "D/N does not vary" if np.std(log_r) <= 1e-12 else f"log N and log(D/N) collinear (r = {corr:.2f})"
    if len(pts) < 4:
        why = f"{len(pts)} points"
    return np.column_stack([ones, log_n]), "power_law_n", [f"{why}: γ_D not separated; the slope in N carries D(N)"]


def fit_degradation(
    recipe: str, baseline: str, pts: Sequence[DegradationPoint], *, n_boot: int = N_BOOT, seed: int = 0
) -> DegradationFit:
    """Fit one recipe's δ(N, D) to its points (see the module docstring for the forms)."""
    if not pts:
        return DegradationFit(
            recipe, baseline, "none", 0.0, (), notes=("no size has both this recipe and the baseline",)
        )
    deltas = np.array([p.delta_bpb for p in pts])
    if len(pts) == 1:
        return _mean_fit(recipe, baseline, pts, "one size: δ taken as constant", seed)
    if not (np.all(deltas > 0) or np.all(deltas < 0)):
        return _mean_fit(
            recipe, baseline, pts, "δ is zero or changes sign across the family: no power law; mean δ", seed
        )
    sign = 1.0 if deltas[0] > 0 else -1.0
    X, form, notes = _columns(pts)
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
        form,
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


def fit_recipes(results: Results, *, seed: int = 0) -> dict[str, DegradationFit]:
    """A degradation fit for every recipe of a run but its baseline (the first recipe)."""
    recipes = list(dict.fromkeys(v.recipe for v in results.variants))
    if not recipes:
        return {}
    base = baseline_recipe(results)
    unknown = sorted(s.size for s in results.sizes if s.train_tokens <= 0)
    fits = {r: fit_degradation(r, base, degradation_points(results, r, base), seed=seed) for r in recipes if r != base}
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
