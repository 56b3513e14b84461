"""Train small, or train big and compress? Both routes priced over a model's lifetime.

Training compute, C ≈ 6·N·D (Kaplan et al. 2020 §2.1; N counted as *total* parameters,
the convention of the run's fitted law, Hoffmann et al. 2022):

- a ladder size: 6·N·D;
- a distilled size adds its teacher's own training (6·N_t·D_t, all of it: the route needs
  the teacher) and the teacher's forward passes on the student's tokens (2·N_t·D);
- recovery after pruning (``distill.recover``, T tokens): 6·N_pruned·T for the student and
  2·N_parent·T for the parent's forward passes;
- quantization calibration (a few forward passes) is left out.

Inference costs 2·N FLOPs per served token (N = the deployed model's total parameters;
attention over the context left out), and on a device with a power figure
``energy_mj_per_token`` (predicted) per token. Training energy is the planner's
``plan_cost`` under its stated accelerator assumptions.

"Same inference cost" maps a variant to a model trained from scratch with the variant's
deployed parameter count, shipped at the same precision (so the same bytes and FLOPs per
token, up to the KV cache): the law gives its loss at the variant's training compute, and
the tokens and compute it needs to reach the target. Structurally pruned variants also
carry a measured twin: that shape trained from scratch on the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from edgescale.bench.predict import predict
from edgescale.report.degradation import baseline_recipe
from edgescale.report.extrapolate import profile, run_law
from edgescale.report.frontier import device_axis, frontier
from edgescale.results.schema import Results, Size, Variant
from edgescale.scaling.plan import plan_cost, plan_for_loss

J_PER_KWH = 3.6e6


def training_flops(v: Variant, sizes: Mapping[str, Size]) -> dict:
    """The training compute that produced variant ``v``, by part (FLOPs)."""
    size = sizes[v.size]
    n, d = size.params_total, size.train_tokens
    out = {"pretrain": 6.0 * n * d, "teacher": 0.0, "teacher_forward": 0.0, "recovery": 0.0}
    teacher = sizes.get(size.distilled_from or "")
    if teacher:
        out["teacher"] = 6.0 * teacher.params_total * teacher.train_tokens
        out["teacher_forward"] = 2.0 * teacher.params_total * d
    recovered = sum(s.metrics.get("tokens", 0) for s in v.steps if s.op == "distill.recover")
    out["recovery"] = recovered * (6.0 * v.params_total + 2.0 * n)
    out["total"] = sum(out.values())
    return out


def _lifetime(train: float, n_deployed: float, served: float, energy_mj: float | None) -> dict:
    inference = 2.0 * n_deployed * served
    out = {"training_flops": train, "inference_flops": inference, "lifetime_flops": train + inference}
    if energy_mj is not None:
        train_kwh = plan_cost(train).energy_kwh
        serve_kwh = energy_mj * 1e-3 * served / J_PER_KWH
        out |= {"training_kwh": train_kwh, "inference_kwh": serve_kwh, "lifetime_kwh": train_kwh + serve_kwh}
    return out


def _scratch_equivalent(law, unit: float, n: float, compute: float, target: float | None) -> dict:
    """The law's from-scratch model with ``n`` total parameters: its loss at ``compute``, and
    what it needs to reach ``target``."""
    d_same = compute / (6 * n)
    out = {
        "params_total": n,
        "tokens_at_same_compute": d_same,
        # no training compute on record (a pretrained checkpoint): no loss at equal compute
        "loss_bpb_at_same_compute": float(law.loss(n, d_same)) / unit if d_same > 0 else None,
    }
    if target is not None:
        d = law.d_for_loss(target * unit, n)
        out |= {
            "tokens_to_target": d if math.isfinite(d) else None,
            "compute_to_target": 6 * n * d if math.isfinite(d) else None,
        }
    return out


def point(v: Variant, sizes: Mapping[str, Size], law, unit: float, target: float | None) -> dict:
    """One variant's training compute, and the law's scratch model at the same inference cost."""
    train = training_flops(v, sizes)
    twin = v.scratch_twin
    return {
        "variant_id": v.variant_id,
        "validation_bpb": v.bpb("validation"),
        "params_total": v.params_total,
        "training_flops": train,
        "scratch_same_inference_cost": _scratch_equivalent(law, unit, v.params_total, train["total"], target),
        "scratch_twin_measured": None
        if not twin
        else {
            "validation_bpb": twin.bpb("validation"),
            "training_flops": 6.0 * v.params_total * twin.train_tokens,
        },
    }


def _route(v: Variant, sizes: Mapping[str, Size], device: str, served: float) -> dict:
    energy = getattr(v.latency.get(device), "energy_mj_per_token", None)  # predicted devices only
    return {
        "variant_id": v.variant_id,
        "validation_bpb": v.bpb("validation"),
        **_lifetime(training_flops(v, sizes)["total"], v.params_total, served, energy),
    }


def _law_route(law, info, unit: float, target: float, device: str, served: float) -> dict:
    """The inference-aware plan (Sardana et al. 2024) for the target, shipped at fp32."""
    plan = plan_for_loss(law, target * unit, inference_tokens=served)
    if plan.status != "ok":
        return {"status": plan.status, "reason": plan.reason}
    energy = None
    if device != "host":
        energy = predict(profile(device), plan.n_params, 32, kv_bits=32).energy_mj_per_token
    return {
        "status": "ok",
        "law": info["law"],
        "reliable": info["reliable"],
        "params_total": plan.n_params,
        "tokens": plan.n_tokens,
        **_lifetime(plan.compute_flops, plan.n_params, served, energy),
    }


TIE = 0.01  # routes closer than this in lifetime cost are a tie, not a verdict


def _verdict(device: str, small: dict | None, big: dict | None, served: float) -> dict:
    if not (small and big):
        missing = "train small (a baseline-recipe ladder size)" if not small else "train big and compress"
        return {"cheaper": None, "statement": f"{device}: no {missing} variant meets the target; no comparison"}
    by = "lifetime_kwh" if "lifetime_kwh" in small and "lifetime_kwh" in big else "lifetime_flops"
    unit = "kWh" if by == "lifetime_kwh" else "FLOPs"
    cheaper, dearer = (small, big) if small[by] <= big[by] else (big, small)
    name = "train small" if cheaper is small else "train big and compress"
    what = "energy (training on the planner's accelerator + predicted device inference)" if unit == "kWh" else "FLOPs"
    if dearer[by] <= cheaper[by] * (1 + TIE):
        return {
            "cheaper": None,
            "by": by,
            "ratio": 1.0,
            "statement": f"{device}, {served:.3g} served tokens: a tie within {TIE:.0%} in lifetime {what} "
            f"({small['variant_id']} {small[by]:.3g} {unit}, {big['variant_id']} {big[by]:.3g} {unit})",
        }
    return {
        "cheaper": name,
        "by": by,
        "ratio": dearer[by] / cheaper[by] if cheaper[by] > 0 else None,
        "statement": f"{device}, {served:.3g} served tokens: {name} ({cheaper['variant_id']}, "
        f"{cheaper[by]:.3g} {unit}) beats {dearer['variant_id']} ({dearer[by]:.3g} {unit}) "
        f"by {dearer[by] / cheaper[by]:.2f}x in lifetime {what}",
    }


def routes(
    results: Results, devices: Sequence[str], *, served_tokens: float = 1e9, target: float | None = None
) -> dict:
    """Per frontier variant its training compute and scratch equivalent; per device the cheaper route."""
    target = results.loss_target_bpb if target is None else target
    variants = results.variants
    sizes = {s.size: s for s in results.sizes}
    law, info, unit = run_law(results)
    axes = [device_axis(d, "decode_ms") for d in devices] + ["bytes_per_decoded_token"]
    on_front = {p.variant_id for a in axes for p in frontier(variants, a) if p.on_front}
    out = {
        "served_tokens": served_tokens,
        "loss_target_bpb": target,
        "law": info,
        "rules": {
            "training": "6·N·D (N total params) + teacher 6·N_t·D_t + 2·N_t·D + recovery 6·N_pruned·T + 2·N_parent·T",
            "inference": "2·N_total FLOPs per served token; device energy = predicted mJ/token × served tokens",
            "same_inference_cost": "a from-scratch model with the variant's deployed total parameters at its precision",
            "train_small": "a ladder size shipped as trained (the baseline recipe)",
            "train_big_and_compress": "a variant made by a compression recipe (pruning, quantization) or distillation",
        },
        "points": [point(v, sizes, law, unit, target) for v in variants if v.variant_id in on_front],
        "per_device": {},
    }
    if target is None:
        out["note"] = "no loss target: routes are not compared"
        return out
    base = baseline_recipe(results)
    meets = [v for v in variants if (v.bpb("validation") or math.inf) <= target]
    for dev in devices:
        rs = [(v, _route(v, sizes, dev, served_tokens)) for v in meets]
        key = "lifetime_kwh" if rs and all("lifetime_kwh" in r for _, r in rs) else "lifetime_flops"
        scratch = [r for v, r in rs if v.recipe == base and not sizes[v.size].distilled_from]
        compressed = [r for v, r in rs if v.recipe != base or sizes[v.size].distilled_from]
        small = min(scratch, key=lambda r: r[key], default=None)
        big = min(compressed, key=lambda r: r[key], default=None)
        out["per_device"][dev] = {
            "train_small": small,
            "train_big_and_compress": big,
            "law_scratch_plan": _law_route(law, info, unit, target, dev, served_tokens),
            **_verdict(dev, small, big, served_tokens),
        }
    return out
