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

Training tokens are capped by the data that exists (``unique_tokens``, None when unknown) under
Muennighoff et al. 2023's epoch rule (:data:`DATA_RULE`): a plan within 4 epochs is ``ok`` with its
epochs; beyond, the law is evaluated at the effective tokens D' and the plan is ``data_limited``
with the unique tokens it would need (a loss target first tries the smallest N at 4 epochs).

A target at or below the law's irreducible loss E is answered with
``status: "infeasible"`` and the reason, never an exception. A law whose E, α or β the
data cannot pin gives no numbers: :func:`edgescale.scaling.identify.data_to_identify` says which sizes and token
budgets to train so that it would (``status: "unidentified"``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from scipy.optimize import brentq, minimize_scalar

from edgescale.errors import UserError
from edgescale.models.shape import Shape, shape_for_params
from edgescale.scaling.identify import (
    MAX_EPOCHS,
    data_to_identify,  # noqa: F401  (re-exported: its old home)
)
from edgescale.scaling.laws import KAPLAN2020, PF_DAY, PRESETS, Chinchilla, Kaplan

Law = Chinchilla | Kaplan

# Cost defaults: NVIDIA A100 SXM, 312 TFLOP/s dense BF16 and 400 W TDP (NVIDIA A100
# datasheet, 2020); 40% model-FLOPs utilisation is an assumption, stated in every plan.
DEFAULT_PEAK_FLOPS = 312e12
DEFAULT_MFU = 0.40
DEFAULT_POWER_W = 400.0

# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (arXiv:2305.16264), §3: up to
# about 4 epochs repeated tokens are worth almost as much as unique ones; their fitted decay of the
# value of repeats is D' = U + U·R*·(1 − exp(−R/R*)), R = epochs − 1, R*_D ≈ 15.4 (the paper's fit,
# 15.39; quoted from /work/shared/reference/scaling.md §6). MAX_EPOCHS (4) lives in scaling.identify,
# whose suggestions of data to add keep to the same rule.
R_STAR_D = 15.4
DATA_RULE = (
    "Muennighoff et al. 2023 (arXiv:2305.16264): up to 4 epochs over the unique training tokens U count as "
    "unique; beyond, tokens are worth D' = U + U·R*·(1 − exp(−R/R*)), R = epochs − 1, R* = 15.4"
)


@dataclass(frozen=True)
class Cost:
    compute_flops: float
    pf_days: float
    accelerator_hours: float
    energy_kwh: float
    assumptions: dict


@dataclass(frozen=True)
class Plan:
    status: str  # "ok" | "infeasible" | "unidentified" | "data_limited"
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
    form: str | None = None  # the law's form (a reduced one says so)
    unique_tokens: float | None = None  # the training data that exists (None: unknown, D uncapped)
    epochs: float | None = None  # D / unique_tokens
    effective_tokens: float | None = None  # D' under DATA_RULE
    unique_tokens_needed: float | None = None  # data_limited: unique tokens for D within MAX_EPOCHS
    data_rule: str | None = None
    unidentified: list[str] | None = None
    identify_with: dict | None = None

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
    unique_tokens: float | None = None,
    **cost_kw,
) -> Plan:
    loss = float(law.loss(n, d))
    data = _data_terms(d, unique_tokens)
    status = "ok"
    if data.get("epochs") is not None and data["epochs"] > MAX_EPOCHS:
        status, loss_unique = "data_limited", loss
        loss = float(law.loss(n, data["effective_tokens"]))
        data["unique_tokens_needed"] = d / MAX_EPOCHS
        data["reason"] = (
            f"D = {d:.3g} tokens is {data['epochs']:.3g} epochs of the {unique_tokens:.3g} unique training tokens: "
            f"past {MAX_EPOCHS:g} epochs repeats are worth D' = {data['effective_tokens']:.3g} tokens, where the law "
            f"predicts {loss:.4g} (not {loss_unique:.4g}); {d / MAX_EPOCHS:.3g} unique tokens would keep it within "
            f"{MAX_EPOCHS:g} epochs"
        )
    c = 6 * n * d
    try:
        shape = shape_for_law(law, n, vocab_size)
    except ValueError:  # past the largest GPT shape the planner builds: the law's N and D still stand
        shape = None
        notes = [*(notes or []), f"no GPT shape (up to 160 layers, width 16-128 x depth) has N = {n:.3g}"]
    built = shape and (shape.params_total if law.n_convention == "total" else shape.params_non_embedding)
    if built and abs(math.log(built / n)) > math.log(1.25):
        notes = [*(notes or []), f"the nearest buildable shape has N = {built:,} ({law.n_convention}), not {n:,.0f}"]
    return Plan(
        status=status,
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
        form=getattr(law, "form", None),
        **data,
    )


def effective_tokens(d: float, unique_tokens: float) -> float:
    """D' of :data:`DATA_RULE`: ``d`` tokens drawn from ``unique_tokens``, repeats discounted."""
    repeats = max(d / unique_tokens - 1, 0.0)
    return unique_tokens * (1 + R_STAR_D * (1 - math.exp(-repeats / R_STAR_D)))


def _data_terms(d: float, unique_tokens: float | None) -> dict:
    if unique_tokens is None:
        return {}
    return {
        "unique_tokens": unique_tokens,
        "epochs": d / unique_tokens,
        "effective_tokens": effective_tokens(d, unique_tokens),
        "data_rule": DATA_RULE,
    }


def _unidentified(law: Law, objective: str) -> Plan | None:
    """No plan from a law whose E, α or β the data do not pin (its numbers would be the optimiser's)."""
    weak = list(getattr(law, "unidentified", ()))
    if not weak:
        return None
    add = law.identify_with or {}
    why = add.get("summary") or f"{', '.join(weak)} not identified by the data the law was fitted to"
    return Plan(
        status="unidentified",
        objective=objective,
        law=law.name,
        reason=f"no plan: {why}",
        form=law.form,
        unidentified=weak,
        identify_with=add or None,
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


def plan_for_compute(law: Law, compute_flops: float, **kw) -> Plan:
    if not compute_flops > 0:
        raise ValueError("compute must be positive")
    if (none := _unidentified(law, "compute_optimal")) is not None:
        return none
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
    unique_tokens: float | None = None,
    **kw,
) -> Plan:
    """The cheapest (N, D) reaching ``target``; see the module docstring for the objectives. With
    ``unique_tokens``, a plan past :data:`MAX_EPOCHS` falls back to the smallest N reaching the target
    at that many epochs, or answers ``data_limited``."""
    if (none := _unidentified(law, "target_loss")) is not None:
        return none
    plan = _plan_for_loss(law, target, inference_tokens, max_tokens, unique_tokens=unique_tokens, **kw)
    if plan.status != "data_limited":
        return plan
    cap = MAX_EPOCHS * unique_tokens
    if max_tokens is not None and max_tokens <= cap:
        return plan
    capped = _plan_for_loss(law, target, inference_tokens, cap, unique_tokens=unique_tokens, **kw)
    if capped.status != "ok":
        return plan
    note = f"the cheapest plan needs {plan.epochs:.3g} epochs of the data: the smallest N at {MAX_EPOCHS:g} epochs"
    return replace(capped, objective="target_loss_data_cap", notes=[*capped.notes, note])


def _plan_for_loss(law: Law, target: float, inference_tokens: float, max_tokens: float | None, **kw) -> Plan:
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
    n_min = max(law.n_min_for_loss(target), 1.0)  # reaches the target only with infinite data; >= 1 parameter

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
    if infeasible.status in ("infeasible", "unidentified"):
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
