"""What to train when no variant of a run meets the target: law + recipe + device.

For every recipe of the run: the scaling law fitted to the run (``results.scaling``,
bits per byte, N = total parameters; a published preset only when the fit failed, said
so) plans the model — :func:`edgescale.scaling.plan.plan_for_loss`, inference-aware for
the served tokens (Sardana et al. 2024) — for the target *minus* the recipe's predicted
degradation at that model's (N, D) (:mod:`edgescale.report.degradation`; iterated, since
δ depends on N and D), so the model meets the target *after* the recipe. Its latency on
the device is predicted by the analytic roofline (:func:`edgescale.bench.predict.predict`)
at the recipe's bits per weight: weight bytes a decoded token streams over total
parameters, on the run's largest size (float embedding tables included, so on small
models a quantizing recipe's figure sits above its nominal bits). Structured pruning keeps the parent's
(N, D) in the law and deploys ``params_ratio`` of it. On the host, which has no device
profile, decode time is the affine fit ``t0 + bytes/BW`` of the recipe's measured variants.

When the planned model breaks a latency or memory limit, the largest model inside the
limits is trained longer (``plan_for_loss`` with a token cap); if even infinite data
cannot bring that model to the target, the option is infeasible. The best option is the
cheapest on the pick's cost axis.

When the run's own fit leaves E, α or β unidentified, its reduced form (``results.scaling.reduced``,
:mod:`edgescale.scaling.identify`) plans if that is identified, labelled with its form; if neither
is, there is no numeric plan (it would be an artefact of the optimiser): ``status: unidentified``
with the sizes and token budgets that would identify the law
(:func:`edgescale.scaling.identify.data_to_identify`). Every plan's tokens are capped by the run's
train split (``results.scaling.train_tokens_available``) under the epoch rule of
:mod:`edgescale.scaling.plan`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from edgescale.bench.devices import get_device
from edgescale.bench.predict import predict
from edgescale.report.degradation import baseline_recipe, fit_recipes
from edgescale.results.schema import Results
from edgescale.scaling.identify import data_to_identify
from edgescale.scaling.laws import EPOCH2024, Chinchilla
from edgescale.scaling.plan import plan_for_loss, shape_for_total

LN2 = math.log(2)
KV_BITS = 32  # the exported graphs keep the KV cache float32
MAX_PARAMS = 5e11  # the planner's shapes (at most 160 layers, d/L <= 128) end near 8e11


@dataclass(frozen=True)
class RecipeScale:
    """What a recipe does to a model's deployment, read from the run's largest size."""

    recipe: str
    bits_per_weight: float  # 8 · weight bytes streamed per decoded token / deployed total parameters
    params_ratio: float  # deployed / parent total parameters
    recovery_fraction: float | None  # recovery tokens / parent's training tokens; None: those are unknown
    from_variant: str


def recipe_scales(results: Results) -> dict[str, RecipeScale]:
    ladder = {s.size: s for s in results.sizes if not s.distilled_from}
    out: dict[str, RecipeScale] = {}
    for v in sorted(results.variants, key=lambda v: ladder[v.size].params_total if v.size in ladder else -1):
        parent = ladder.get(v.size)
        streamed = v.cost.weight_bytes  # not the file: node metadata inflates small files
        if parent is None or not streamed:
            continue
        recovered = max(0, v.train_tokens - parent.train_tokens)
        # a pretrained checkpoint's training tokens may be unknown (0): a recipe that recovers on
        # top of it cannot be scaled to a new model's tokens, one without recovery can
        fraction = recovered / parent.train_tokens if parent.train_tokens else (None if recovered else 0.0)
        out[v.recipe] = RecipeScale(
            v.recipe, 8 * streamed / v.params_total, v.params_total / parent.params_total, fraction, v.variant_id
        )
    return out


def _weak(law) -> list[str]:
    return sorted(k for k in ("E", "alpha", "beta") if k in law.unidentified)


def fitted_law(sc):
    """The run's law a plan may come from: the full form if identified, else an identified reduced
    form, else the full form (whose ``unidentified`` says so). None when the fit failed."""
    if sc.status != "fitted":
        return None
    if _weak(sc.law) and sc.reduced is not None and not _weak(sc.reduced):
        return sc.reduced
    return sc.law


def run_law(results: Results):
    """(law, what it is, loss-unit factor: law units per bit per byte)."""
    sc = results.scaling
    if sc.status == "fitted":
        f = fitted_law(sc)
        ci = {k: (-math.inf if v[0] is None else v[0], math.inf if v[1] is None else v[1]) for k, v in f.ci.items()}
        form = f.form or "L = E + A/N^α + B/D^β"
        law = Chinchilla(
            E=f.E, A=f.A, B=f.B, alpha=f.alpha, beta=f.beta, name=f"fit (this run; {form})",
            source="results.scaling: Chinchilla approach 3 on the ladder's cooled checkpoints",
            n_convention="total", loss_unit="bits/byte", ci=ci, form=form,
        )  # fmt: skip
        weak = _weak(f)
        info = {"law": law.name, "source": law.source, "unit": "bits_per_byte", "reliable": not weak}
        if weak:
            info["caveat"] = f"{', '.join(weak)} not identified by the run's points: no plan from it"
        return law, info, 1.0
    info = {
        "law": EPOCH2024.name,
        "source": EPOCH2024.source,
        "unit": "nats/token of its own corpus (the target is converted at ln 2 nats per bit of a byte token)",
        "reliable": False,
        "caveat": f"the run's fit failed ({sc.reason or sc.status}): a published "
        "preset stands in; its absolute losses belong to MassiveText's tokens, not this corpus's bytes, "
        "so read the plan as an allocation guide, not a prediction",
    }
    return EPOCH2024, info, LN2


@functools.cache
def profile(device: str):
    """The device profile with fitted efficiencies (loaded and calibrated once per process)."""
    return get_device(device)


def _host_line(results: Results, recipe: str) -> tuple[float, float] | None:
    """(t0 ms, ms per byte) of measured host decode against bytes per decoded token, or None."""
    pts = [
        (v.cost.bytes_per_decoded_token, getattr(v.latency.get("host"), "decode_ms_p50", None))
        for v in results.variants
        if v.recipe == recipe
    ]
    pts = [(b, t) for b, t in pts if b is not None and t is not None]
    if len({b for b, _ in pts}) < 2:
        return None
    slope, t0 = np.polyfit([b for b, _ in pts], [t for _, t in pts], 1)
    return (float(t0), float(slope)) if slope > 0 else None


def device_cost(device: str, params: float, bits: float, results: Results, recipe: str) -> dict:
    """Predicted decode/prefill latency, energy and memory of a ``params`` model at ``bits`` on ``device``."""
    ctx, prompt = results.measurement.decode_context, results.measurement.prompt_len
    shape = shape_for_total(params, block_size=max(ctx, 8))
    kv = 2 * shape.n_layer * shape.n_embd * KV_BITS / 8 * ctx
    weights = params * bits / 8
    base = {
        "params": params,
        "bits_per_weight": bits,
        "bytes_per_decoded_token": weights + kv,
        "flops_per_token": 2 * params,
    }
    if device != "host":
        p = predict(profile(device), params, bits, context=ctx, kv_bits=KV_BITS, prompt_len=prompt)
        return base | {
            "source": "predicted (analytic roofline, edgescale.bench.predict)",
            "decode_ms": p.decode_ms,
            "prefill_ms": p.prefill_ms,
            "energy_mj_per_token": p.energy_mj_per_token,
            "memory_bytes": p.memory_bytes,
            "fits_device": p.fits,
            "assumptions": p.assumptions,
        }
    line = _host_line(results, recipe)
    return base | {
        "source": "extrapolated: affine fit of measured host decode ms on bytes per decoded token"
        if line
        else "not predicted: the host has no device profile and too few measured sizes for this recipe",
        "decode_ms": line[0] + line[1] * (weights + kv) if line else None,
        "prefill_ms": None,
        "energy_mj_per_token": None,
        "memory_bytes": weights + kv,
        "fits_device": None,
    }


_OPTION_COST = {  # pick cost axis suffix → the option's predicted figure
    "decode_ms": "decode_ms",
    "prefill_ms": "prefill_ms",
    "energy_mj": "energy_mj_per_token",
    "bytes_per_decoded_token": "bytes_per_decoded_token",
    "peak_memory_bytes": "memory_bytes",
    "flops_per_token": "flops_per_token",
    "file_bytes": "bytes_per_decoded_token",
}


def _cost_key(axis: str) -> str:
    return next((v for k, v in _OPTION_COST.items() if axis.endswith(k)), "decode_ms")


def _within(cost: dict, max_latency_ms: float | None, cap: float | None) -> str | None:
    if max_latency_ms is not None and (cost["decode_ms"] is None or cost["decode_ms"] > max_latency_ms):
        return f"predicted decode {cost['decode_ms'] or math.nan:.3g} ms > {max_latency_ms:g} ms"
    if cap is not None and cost["memory_bytes"] > cap:
        return f"predicted memory {cost['memory_bytes'] / 1e6:.3g} MB > {cap / 1e6:.3g} MB"
    if cost.get("fits_device") is False:
        return "does not fit the device's usable memory"
    return None


def _largest_within(device, scale, results, max_latency_ms, cap) -> float | None:
    """Largest parent N whose deployed model meets the limits (bisection in log N), or None."""

    def slack(log_n: float) -> float:
        c = device_cost(device, math.exp(log_n) * scale.params_ratio, scale.bits_per_weight, results, scale.recipe)
        worst = -math.inf
        if max_latency_ms is not None and c["decode_ms"] is not None:
            worst = max(worst, math.log(c["decode_ms"] / max_latency_ms))
        if cap is not None:
            worst = max(worst, math.log(c["memory_bytes"] / cap))
        return worst

    lo, hi = math.log(1e3), math.log(MAX_PARAMS)
    if slack(lo) > 0:
        return None
    return math.exp(brentq(slack, lo, hi, xtol=1e-6)) if slack(hi) > 0 else math.exp(hi)


def _plan(law, target_law: float, fit, unit: float, served: float, max_tokens: float | None = None, unique=None):
    """The plan for the target after the recipe's δ (fixed point: δ depends on the plan's N, D),
    with at most the ``unique`` training tokens that exist (None: unknown)."""
    t, delta = target_law, (0.0, 0.0, 0.0)
    for _ in range(20):
        plan = plan_for_loss(law, t, inference_tokens=served, max_tokens=max_tokens, unique_tokens=unique)
        if plan.status != "ok" or fit is None:
            return plan, delta
        delta = fit.predict(plan.n_params, plan.n_tokens)
        if math.isnan(delta[0]):  # outside the law's sampled (N, D/N), or no law: option says why
            return plan, delta
        t_next = target_law - delta[0] * unit
        if abs(t_next - t) <= 1e-9 * abs(target_law):
            break
        t = t_next
    return plan, delta


def option(law, info, unit, scale, fit, target, device, results, limits, cap, served) -> dict:
    """One recipe's answer: the model to train, its loss after the recipe and its device cost."""
    out = {"recipe": scale.recipe}
    if scale.recovery_fraction is None:
        why = f"its recovery tokens cannot be scaled: {scale.from_variant}'s parent's training tokens are unknown"
        return out | {"status": "infeasible", "reason": why}
    unique = results.scaling.train_tokens_available
    plan, delta = _plan(law, target * unit, fit, unit, served, unique=unique)
    out["status"] = plan.status
    if plan.status != "ok":
        return out | {"reason": plan.reason}
    if math.isnan(delta[0]):
        return out | _no_law(fit, plan)
    if plan.n_params > MAX_PARAMS:
        why = f"the law needs {plan.n_params:.3g} parameters, beyond the planner's shapes (<= {MAX_PARAMS:.0e})"
        return out | {"status": "infeasible", "reason": why}
    cost = device_cost(device, plan.n_params * scale.params_ratio, scale.bits_per_weight, results, scale.recipe)
    broken = _within(cost, limits.max_latency_ms, cap)
    if broken:
        n_max = _largest_within(device, scale, results, limits.max_latency_ms, cap)
        d = math.inf if n_max is None else law.d_for_loss(target * unit - delta[0] * unit, n_max)
        if not math.isfinite(d):
            return out | {"status": "infeasible", "reason": f"the planned model breaks the limits ({broken}) and the "
                          "largest model inside them cannot reach the target even with unlimited tokens"}  # fmt: skip
        plan, delta = _plan(law, target * unit, fit, unit, served, max_tokens=d * (1 + 1e-9), unique=unique)
        if plan.status != "ok":
            return out | {"status": plan.status, "reason": plan.reason}
        if math.isnan(delta[0]):
            return out | _no_law(fit, plan)
        cost = device_cost(device, plan.n_params * scale.params_ratio, scale.bits_per_weight, results, scale.recipe)
        out["note"] = f"compute-optimal model broke the limits ({broken}): the largest inside them, trained longer"
    loss = plan.predicted_loss / unit
    recovery = scale.recovery_fraction * plan.n_tokens
    return out | {
        "plan": plan.to_dict(),
        "degradation_bpb": {"delta": delta[0], "low": delta[1], "high": delta[2], "form": fit.form if fit else "none"},
        "predicted_loss_bpb": loss + delta[0],
        "predicted_loss_bpb_interval": [loss + delta[1], loss + delta[2]],
        "recovery_tokens": recovery,
        "training_flops": plan.compute_flops + recovery * (6 * plan.n_params * scale.params_ratio + 2 * plan.n_params),
        "deployed_params": plan.n_params * scale.params_ratio,
        "recipe_scale": scale.__dict__,
        "device": cost,
        "meets_limits": _within(cost, limits.max_latency_ms, cap) is None,
    }


def _no_law(fit, plan) -> dict:
    """A recipe whose degradation law gives no δ at the plan's (N, D): its loss there is unknown."""
    why = fit.refusal(plan.n_params, plan.n_tokens)
    return {"status": "unknown", "reason": f"at N = {plan.n_params:.3g}, D = {plan.n_tokens:.3g}: {why}"}


def law_check(results: Results, law, unit: float) -> list[dict]:
    """The law against the baseline variants' ONNX validation loss at each ladder size's (N, D):
    the law is fitted to training-time evaluations, the target is met on the ONNX evaluation."""
    base = baseline_recipe(results)
    measured = {v.size: v.bpb("validation") for v in results.variants if v.recipe == base}
    return [
        {
            "size": s.size,  # a checkpoint's unknown training tokens (0) give no point to check
            "law_bpb": float(law.loss(s.params_total, s.train_tokens)) / unit if s.train_tokens else None,
            "onnx_validation_bpb": measured.get(s.size),
        }  # fmt: skip
        for s in results.sizes
        if not s.distilled_from
    ]


def new_model(results: Results, target: float, device: str, axis: str, limits, cap, served: float) -> dict:
    """``status: plan`` with the best recipe's option, ``status: infeasible`` with the reason, or
    ``status: unidentified`` with the data that would identify the run's law."""
    law, info, unit = run_law(results)
    info = info | {"check": law_check(results, law, unit)}
    sc = results.scaling
    weak = _weak(fitted_law(sc)) if sc.status == "fitted" else []
    if weak:
        add = data_to_identify([p.N for p in sc.points], [p.D for p in sc.points], weak, sc.train_tokens_available)
        return {
            "status": "unidentified",
            "law": info,
            "options": [],
            "served_tokens": served,
            "best_by": _cost_key(axis),
            "identify_with": add,
            "reason": f"no variant meets the target, and the run's law cannot say which model would: {add['summary']}",
        }
    fits = fit_recipes(results)
    base = baseline_recipe(results)
    options = [
        option(law, info, unit, s, fits.get(r), target, device, results, limits, cap, served)
        for r, s in recipe_scales(results).items()
        # a recipe without a law at the plan's (N, D) is listed with the reason (option says why)
        if r == base or r in fits
    ]
    key = _cost_key(axis)
    good = [o for o in options if o["status"] == "ok" and o["meets_limits"]]
    out = {"law": info, "options": options, "served_tokens": served, "best_by": key}
    if good:
        if all(o["device"].get(key) is None for o in good):  # e.g. no host latency model: rank by bytes
            key = out["best_by"] = "bytes_per_decoded_token"
        best = min(good, key=lambda o: math.inf if o["device"].get(key) is None else o["device"][key])
        return {"status": "plan", **out, "best": best, "reason": "no variant meets the target within the limits"}
    why: dict[str, list[str]] = {}
    for o in options:
        why.setdefault(o.get("reason") or "breaks the limits", []).append(o["recipe"])
    reasons = "; ".join(r if len(why) == 1 else f"{', '.join(names)}: {r}" for r, names in why.items())
    return {"status": "infeasible", **out, "reason": f"no variant qualifies, and no new model would: {reasons}"}
