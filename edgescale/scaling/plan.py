"""The training-side planner: what to train for a compute budget or a loss target.

- compute-optimal N*, D* for a budget C (closed form of the parametric law, Hoffmann
  et al. 2022 eq. 4, checked against a numeric optimum);
- the cheapest way to reach a target loss: compute-optimal, under a token cap (the
  smallest N at the cap), or inference-aware after Sardana et al. 2024 ("Beyond
  Chinchilla-Optimal", arXiv:2401.00448 §2): minimise 6·N·D + 2·N·D_inference subject to
  L(N, D) = target;
- a model shape for a parameter count, tokens per parameter, Kaplan's overfitting
  check and critical batch size, and the cost of the plan (FLOPs → accelerator-hours →
  kWh) with every assumption stated.

A target at or below the law's irreducible loss E is answered with
``status: "infeasible"`` and the reason, never an exception. A law whose E, α or β the
data cannot pin gives no numbers: :func:`data_to_identify` says which sizes and token
budgets to train so that it would (``status: "unidentified"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from scipy.optimize import brentq, minimize_scalar

from edgescale.errors import UserError
from edgescale.models.shape import Shape, shape_for_params
from edgescale.scaling.laws import KAPLAN2020, PF_DAY, PRESETS, Chinchilla, Kaplan

Law = Chinchilla | Kaplan

# Cost defaults: NVIDIA A100 SXM, 312 TFLOP/s dense BF16 and 400 W TDP (NVIDIA A100
# datasheet, 2020); 40% model-FLOPs utilisation is an assumption, stated in every plan.
DEFAULT_PEAK_FLOPS = 312e12
DEFAULT_MFU = 0.40
DEFAULT_POWER_W = 400.0


@dataclass(frozen=True)
class Cost:
    compute_flops: float
    pf_days: float
    accelerator_hours: float
    energy_kwh: float
    assumptions: dict


@dataclass(frozen=True)
class Plan:
    status: str  # "ok" | "infeasible"
    objective: str
    law: str
    n_params: float | None = None
    n_tokens: float | None = None
    compute_flops: float | None = None
    predicted_loss: float | None = None
    tokens_per_param: float | None = None
    shape: Shape | None = None
    cost: Cost | None = None
    inference_tokens: float = 0.0
    lifetime_flops: float | None = None
    checks: dict = field(default_factory=dict)
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Infeasible(Exception):
    pass


def compute_optimal_numeric(law: Law, compute_flops: float) -> tuple[float, float]:
    """The same optimum found numerically (a check of the closed form)."""

    def loss_at(log_n: float) -> float:
        n = math.exp(log_n)
        return float(law.loss(n, compute_flops / (6 * n)))

    n0, _ = law.compute_optimal(compute_flops)
    res = minimize_scalar(
        loss_at, bounds=(math.log(n0) - 10, math.log(n0) + 10), method="bounded", options={"xatol": 1e-10}
    )
    n = math.exp(res.x)
    return n, compute_flops / (6 * n)


def plan_cost(
    compute_flops: float,
    peak_flops: float = DEFAULT_PEAK_FLOPS,
    mfu: float = DEFAULT_MFU,
    power_w: float = DEFAULT_POWER_W,
) -> Cost:
    hours = compute_flops / (peak_flops * mfu) / 3600
    return Cost(
        compute_flops=compute_flops,
        pf_days=compute_flops / PF_DAY,
        accelerator_hours=hours,
        energy_kwh=hours * power_w / 1000,
        assumptions={
            "peak_flops": peak_flops,
            "utilisation": mfu,
            "power_w": power_w,
            "note": "C = 6·N·D training FLOPs; hours = C / (peak · utilisation); energy = hours · power",
        },
    )


def _checks(law: Law, n: float, d: float, loss: float) -> dict:
    """Kaplan's overfitting check and critical batch size, with their calibration caveats."""
    d_needed = float(KAPLAN2020.min_tokens_no_overfit(n))
    b_crit = float(KAPLAN2020.critical_batch_tokens(loss))
    return {
        "overfitting": {
            "min_tokens_kaplan": d_needed,
            "ok": d >= d_needed,
            "rule": "D >= 5e3 · N^0.74 (Kaplan et al. 2020 eq. 4.4; N non-embedding)",
        },
        "critical_batch_tokens": {
            "value": b_crit,
            "clamped": min(b_crit, d / 100),
            "clamp": "at most D/100 tokens per step, so the run keeps >= 100 optimizer steps",
            "rule": "B_crit = 2.1e8 / L^(1/0.21) tokens (Kaplan et al. 2020 eq. 1.4)",
            "caveat": "calibrated on WebText2 BPE loss in nats/token; on another corpus or tokenizer treat it "
            "as an order of magnitude, or measure the gradient noise scale",
        },
    }


def _finish(
    law: Law,
    objective: str,
    n: float,
    d: float,
    *,
    inference_tokens: float = 0.0,
    notes: list[str] | None = None,
    vocab_size: int = 256,
    **cost_kw,
) -> Plan:
    loss = float(law.loss(n, d))
    c = 6 * n * d
    shape = shape_for_law(law, n, vocab_size)
    built = shape.params_total if law.n_convention == "total" else shape.params_non_embedding
    if built and abs(math.log(built / n)) > math.log(1.25):
        notes = [*(notes or []), f"the nearest buildable shape has N = {built:,} ({law.n_convention}), not {n:,.0f}"]
    return Plan(
        status="ok",
        objective=objective,
        law=law.name,
        n_params=n,
        n_tokens=d,
        compute_flops=c,
        predicted_loss=loss,
        tokens_per_param=d / n,
        shape=shape,
        cost=plan_cost(c, **cost_kw),
        inference_tokens=inference_tokens,
        lifetime_flops=c + 2 * n * inference_tokens,
        checks=_checks(law, n, d, loss),
        notes=[f"N convention of {law.name}: {law.n_convention}", *(notes or [])],
    )


def shape_for_law(law: Law, n: float, vocab_size: int = 256, block_size: int = 256) -> Shape:
    """The shape whose parameter count in the law's N convention is closest to ``n``."""
    if law.n_convention != "total":
        return shape_for_params(n, vocab_size=vocab_size, block_size=block_size)
    return shape_for_total(n, vocab_size, block_size)


def shape_for_total(n: float, vocab_size: int = 256, block_size: int = 256) -> Shape:
    """The shape whose *total* parameter count is closest to ``n``.

    :func:`shape_for_params` matches *non-embedding* N; total N (the Chinchilla convention,
    and this project's fits) counts the embedding too, which dominates small byte-level
    models, so the embedding is taken off first (a few fixed-point steps: it depends on the
    width). A total N at or below the smallest shape's embedding gets the smallest shape,
    whose larger count the plan's note states."""
    target = n
    shape = shape_for_params(max(target, 1.0), vocab_size=vocab_size, block_size=block_size)
    for _ in range(8):
        target = max(n - (shape.params_total - shape.params_non_embedding), 1.0)
        nxt = shape_for_params(target, vocab_size=vocab_size, block_size=block_size)
        if nxt == shape:
            break
        shape = nxt
    return shape


def data_to_identify(n: Sequence[float], d: Sequence[float], unidentified: Sequence[str]) -> dict:
    """The sizes and token budgets that would identify a law the points ``(n, d)`` leave
    unidentified: sizes reaching a decade beyond the largest (and at least 1.5 decades of N in
    all), and at every size two token budgets outside the tokens-per-parameter range (÷4, ×4)
    (E needs losses nearer the floor, α a wider N range, β more than one D per N)."""
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
    return {
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


def plan_for_compute(law: Law, compute_flops: float, **kw) -> Plan:
    if not compute_flops > 0:
        raise ValueError("compute must be positive")
    n, d = law.compute_optimal(compute_flops)
    return _finish(law, "compute_optimal", n, d, **kw)


def _infeasible(law: Law, objective: str, reason: str) -> Plan:
    return Plan(status="infeasible", objective=objective, law=law.name, reason=reason)


def plan_for_loss(
    law: Law,
    target: float,
    *,
    inference_tokens: float = 0.0,
    max_tokens: float | None = None,
    **kw,
) -> Plan:
    """The cheapest (N, D) reaching ``target``; see the module docstring for the objectives."""
    e_high = law.ci.get("E", (law.E, law.E))[1]
    e_high = e_high if e_high is not None and math.isfinite(e_high) else law.E
    if target <= e_high:
        return _infeasible(
            law,
            "target_loss",
            f"target {target:g} is at or below the irreducible loss E = {law.E:.4g}"
            + (f" (95% interval up to {e_high:.4g})" if e_high != law.E else "")
            + f" of {law.name}: no model size or token count reaches it",
        )
    if max_tokens is not None:
        n = law.n_for_loss(target, max_tokens)
        if not math.isfinite(n):
            return _infeasible(
                law,
                "target_loss_token_cap",
                f"with at most {max_tokens:.3g} tokens the data term alone exceeds {target:g}",
            )
        return _finish(
            law,
            "target_loss_token_cap",
            n,
            max_tokens,
            inference_tokens=inference_tokens,
            notes=["smallest N reaching the target with the token cap"],
            **kw,
        )
    n_min = law.n_min_for_loss(target)  # reaches the target only with infinite data

    def lifetime(log_n: float) -> float:
        n = math.exp(log_n)
        return 6 * n * law.d_for_loss(target, n) + 2 * n * inference_tokens

    res = minimize_scalar(
        lifetime, bounds=(math.log(n_min) + 1e-9, math.log(n_min) + 30), method="bounded", options={"xatol": 1e-10}
    )
    n = math.exp(res.x)
    objective = "inference_aware" if inference_tokens else "target_loss_min_compute"
    note = (
        "minimises 6·N·D + 2·N·D_inference (Sardana et al. 2024)"
        if inference_tokens
        else "minimises training compute 6·N·D"
    )
    return _finish(law, objective, n, law.d_for_loss(target, n), inference_tokens=inference_tokens, notes=[note], **kw)


def smallest_n_under_compute(law: Law, target: float, compute_flops: float) -> float:
    """Smallest N with L(N, C/(6N)) <= target, or raise Infeasible."""
    n_opt, d_opt = law.compute_optimal(compute_flops)
    if float(law.loss(n_opt, d_opt)) > target:
        raise Infeasible(
            f"{compute_flops:.3g} FLOPs cannot reach {target:g} (best {float(law.loss(n_opt, d_opt)):.4g})"
        )

    def gap(log_n: float) -> float:
        n = math.exp(log_n)
        return float(law.loss(n, compute_flops / (6 * n))) - target

    lo = math.log(n_opt) - 1
    while gap(lo) <= 0:
        lo -= 1
    return math.exp(brentq(gap, lo, math.log(n_opt), xtol=1e-12))


def plan_smallest_under_compute(law: Law, target: float, compute_flops: float, **kw) -> Plan:
    """The smallest model that reaches ``target`` within ``compute_flops`` (it trains longest)."""
    infeasible = plan_for_loss(law, target)
    if infeasible.status != "ok":
        return infeasible
    try:
        n = smallest_n_under_compute(law, target, compute_flops)
    except Infeasible as e:
        return _infeasible(law, "target_loss_compute_cap", str(e))
    return _finish(
        law,
        "target_loss_compute_cap",
        n,
        compute_flops / (6 * n),
        notes=["smallest N reaching the target within the compute budget"],
        **kw,
    )


def preset_law(spec: str) -> Law:
    """A preset law by name (``kaplan2020``, ``chinchilla2022``, ``epoch2024``); a fitted one comes
    from :func:`edgescale.results.points.resolve_law`, which also reads ``fit:FILE|RUN_DIR``."""
    if spec not in PRESETS:
        raise UserError(f"unknown law {spec!r}; allowed: {', '.join(PRESETS)} or fit:FILE", field="--law")
    return PRESETS[spec]
