"""A law the data can identify: the full form, or a reduced one when the full form is not pinned.

With few runs over a narrow (N, D) range, E, A, B, α and β trade off along ridges, and the cluster
bootstrap (:func:`edgescale.scaling.fit.fit_chinchilla`) flags E, α or β as unidentified. Rather than
plan from constants the data cannot separate, refit the reduced form
:data:`~edgescale.scaling.fit.REDUCED_FORM`: one exponent α = β (Hoffmann et al. 2022 approach 3
finds the two nearly equal: 0.34 and 0.28; Besiroglu et al. 2024's refit 0.348 and 0.366) with E at
most the lowest observed loss (the two power terms are positive), and re-test it with the same
bootstrap. A plan may come from whichever form is identified, labelled with it; if neither is, the
law carries the constants it cannot pin and what data would pin them, and plans answer
``unidentified``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgescale.scaling.fit import ChinchillaFit, fit_chinchilla
from edgescale.scaling.laws import Chinchilla
from edgescale.scaling.points import Points

# the epoch rule of every plan (Muennighoff et al. 2023, arXiv:2305.16264; see scaling.plan)
MAX_EPOCHS = 4.0


@dataclass(frozen=True)
class Identified:
    full: ChinchillaFit
    reduced: ChinchillaFit | None  # fitted only when the full form is not identified

    @property
    def used(self) -> ChinchillaFit | None:
        """The fit a plan may come from: the full form if identified, else an identified reduced form."""
        if not self.full.weak:
            return self.full
        return self.reduced if self.reduced is not None and not self.reduced.weak else None

    @property
    def weak(self) -> list[str]:
        """What stays unidentified in the best form tried (empty when a form is identified)."""
        if self.used is not None:
            return []
        return self.reduced.weak if self.reduced is not None else self.full.weak


def fit_identified(n, d, loss, **kw) -> Identified:
    """:func:`fit_chinchilla` on the full form, and on the reduced form when the full one is not identified."""
    full = fit_chinchilla(n, d, loss, **kw)
    return Identified(full, fit_chinchilla(n, d, loss, reduced=True, **kw) if full.weak else None)


def law_from_points(pts: Points, name: str, n_boot: int = 200) -> Chinchilla:
    """The law fitted to ``pts``, named ``name``, with its bootstrap intervals and form; when no form
    is identified it carries ``unidentified`` and ``identify_with``, and plans from it answer so."""
    found = fit_identified(pts.n, pts.d, pts.loss, n_boot=n_boot, n_convention=pts.n_convention, groups=pts.groups)
    fit = found.used or found.reduced or found.full
    law = fit.law.with_(name=name, source=f"fitted to {pts.source} ({fit.form})", ci=fit.ci, form=fit.form)
    if found.weak:
        law = law.with_(unidentified=tuple(found.weak), identify_with=data_to_identify(pts.n, pts.d, found.weak))
    return law


def data_to_identify(
    n: Sequence[float], d: Sequence[float], unidentified: Sequence[str], unique_tokens: float | None = None
) -> dict:
    """The sizes and token budgets that would identify a law the points ``(n, d)`` leave
    unidentified: sizes reaching a decade beyond the largest (and at least 1.5 decades of N in
    all), and at every size two token budgets outside the tokens-per-parameter range (÷4, ×4)
    (E needs losses nearer the floor, α a wider N range, β more than one D per N). With the
    ``unique_tokens`` that exist, it also says how many unique tokens the largest budget needs
    under the plans' epoch rule (at most 4 passes, Muennighoff et al. 2023), and when that is
    more than there is."""
    n_arr, d_arr = [float(x) for x in n], [float(x) for x in d]
    lo, hi = min(n_arr), max(n_arr)
    span = math.log10(hi / lo)
    steps = [0.5, 1.0] + ([1.5 - span] if span + 1.0 < 1.5 else [])
    new_sizes = [_round2(hi * 10**s) for s in steps]
    ratios = sorted({d_i / n_i for n_i, d_i in zip(n_arr, d_arr, strict=True)})
    # below one token per parameter a run is mostly warm-up, a transient rather than a point of the
    # law: then both new budgets go above the range (x4, x16) instead of one below it (/4)
    below = ratios[0] / 4
    new_ratios = [_round2(below), _round2(ratios[-1] * 4)] if below >= 1 else [_round2(ratios[-1] * r) for r in (4, 16)]
    sizes = sorted({*n_arr, *new_sizes})
    budgets = [{"N": x, "D": [_round2(x * r) for r in new_ratios]} for x in sizes]
    text = (
        f"{', '.join(sorted(unidentified))} not identified by {len(n_arr)} points over N {lo:.3g}-{hi:.3g} "
        f"({span:.2f} decades) and D/N {ratios[0]:.3g}-{ratios[-1]:.3g}: train sizes of about "
        f"{', '.join(f'{x:.2g}' for x in new_sizes)} parameters (N to {max(new_sizes) / lo:.3g}x the smallest), and at "
        f"every size token budgets at D/N = {new_ratios[0]:g} and {new_ratios[1]:g} (e.g. N = {sizes[-1]:.2g}: "
        f"D = {budgets[-1]['D'][0]:.2g} and {budgets[-1]['D'][1]:.2g} tokens), then refit"
    )
    need = max(budgets[-1]["D"]) / MAX_EPOCHS
    if unique_tokens is not None and need > unique_tokens:
        text += (
            f"; the largest budget needs about {need:.2g} unique tokens at {MAX_EPOCHS:g} epochs at most, "
            f"{need / unique_tokens:.3g}x the {unique_tokens:.3g} this corpus has: a larger corpus, or fewer of "
            "the largest budgets"
        )
    return {
        "unique_tokens_needed": need,
        "current": {"N_range": [lo, hi], "decades_N": span, "tokens_per_param_range": [ratios[0], ratios[-1]]},
        "add_sizes": new_sizes,
        "add_tokens_per_param": new_ratios,
        "token_budgets": budgets,
        "n_convention": "total",
        "summary": text,
    }


def _round2(x: float) -> float:
    """``x`` to two significant figures (a suggestion, not a measurement)."""
    return float(f"{x:.2g}")
