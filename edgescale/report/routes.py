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

The measured answer sits in ``pairs`` (:mod:`edgescale.report.route_pairs`): each compressed
variant against the fp32 frontier interpolated at its own deployed cost, Δloss with a 95%
interval. Per device, "train big and compress" must come from a larger model than "train
small" (a model against its own compression is not a route), and an energy verdict carries the
predicted decode interval: a ratio interval that contains 1 is a tie. On a measured device (the
host) the counted-FLOP verdict is joined by the measured time verdict
(:mod:`edgescale.report.route_time`): the decode p50 ratio small/big with its interval, a tie
when it reaches into the A/A noise band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgescale.bench.predict import predict
from edgescale.report.degradation import baseline_recipe
from edgescale.report.extrapolate import profile, run_law
from edgescale.report.frontier import device_axis, frontier
from edgescale.report.route_pairs import is_compressed, pairs
from edgescale.report.route_time import time_verdict
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
        "validation_se_bpb": v.se("validation"),
        "params_total": v.params_total,
        "training_flops": train,
        "scratch_same_inference_cost": _scratch_equivalent(law, unit, v.params_total, train["total"], target),
        "scratch_twin_measured": None
        if not twin
        else {
            "validation_bpb": twin.bpb("validation"),
            "validation_se_bpb": twin.se("validation"),
            "training_flops": 6.0 * v.params_total * twin.train_tokens,
        },
    }


def _parent_n(v: Variant, sizes: Mapping[str, Size]) -> int:
    """The total parameters of the model trained before compressing (the teacher, for a distilled size)."""
    size = sizes.get(v.size)
    if size is None:  # not a ladder size: its parent is unknown, so no route from it
        return 0
    return (sizes.get(size.distilled_from or "") or size).params_total


def _route(v: Variant, sizes: Mapping[str, Size], device: str, served: float) -> dict:
    lat = v.latency.get(device)
    energy = getattr(lat, "energy_mj_per_token", None)  # predicted devices only
    out = {
        "variant_id": v.variant_id,
        "validation_bpb": v.bpb("validation"),
        "validation_se_bpb": v.se("validation"),
        **_lifetime(training_flops(v, sizes)["total"], v.params_total, served, energy),
    }
    ms, lo, hi = (getattr(lat, k, None) for k in ("decode_ms", "decode_ms_low", "decode_ms_high"))
    if energy is not None and ms and lo is not None and hi is not None:  # energy = power × decode time
        out["lifetime_kwh_low"] = out["training_kwh"] + out["inference_kwh"] * lo / ms
        out["lifetime_kwh_high"] = out["training_kwh"] + out["inference_kwh"] * hi / ms
        out["interval"] = getattr(lat, "interval", None) or "the prediction's decode interval"
    return out


def _law_route(law, info, unit: float, target: float, device: str, served: float) -> dict:
    """The inference-aware plan (Sardana et al. 2024) for the target, shipped at fp32."""
    if not info.get("reliable", False):  # an unidentified law gives no numeric plan; its reason passes through
        return {"status": "unreliable", "reason": info.get("caveat") or "the law is not reliable: no plan from it"}
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


TIE = 0.01  # counted FLOPs closer than this are a tie, not a verdict


def _kwh_verdict(device: str, small: dict, big: dict, served: float) -> dict:
    """Lifetime energy, with the predictions' decode intervals carried through (taken as
    independent: conservative, since two predictions on one profile share most of their error)."""
    ratio = small["lifetime_kwh"] / big["lifetime_kwh"]
    bounds = all(k in r for r in (small, big) for k in ("lifetime_kwh_low", "lifetime_kwh_high"))
    low = small["lifetime_kwh_low"] / big["lifetime_kwh_high"] if bounds else None
    high = small["lifetime_kwh_high"] / big["lifetime_kwh_low"] if bounds else None
    how = big.get("interval") or "none stated"
    head = f"{device}, {served:.3g} served tokens, lifetime energy (training + predicted device inference): "
    pair = f"{small['variant_id']} {small['lifetime_kwh']:.3g} kWh vs {big['variant_id']} {big['lifetime_kwh']:.3g} kWh"
    out = {"by": "lifetime_kwh", "ratio": ratio, "ratio_low": low, "ratio_high": high, "uncertainty": how}
    if low is None:
        return out | {
            "cheaper": None,
            "statement": head + f"{pair}; cannot be known: the prediction states no interval",
        }
    if low <= 1 <= high:
        return out | {"cheaper": None, "statement": head + f"a tie within the predictions' uncertainty ({pair}, "
                      f"small/big {ratio:.2f}× [{low:.2f}, {high:.2f}]; {how})"}  # fmt: skip
    name = "train small" if ratio < 1 else "train big and compress"
    return out | {"cheaper": name, "statement": head + f"{name} is cheaper ({pair}, small/big {ratio:.2f}× "
                  f"[{low:.2f}, {high:.2f}]; {how})"}  # fmt: skip


def _flops_verdict(device: str, small: dict, big: dict, served: float) -> dict:
    """Counted lifetime FLOPs: exact counts, no interval (the 2·N inference rule is the assumption)."""
    s, b = small["lifetime_flops"], big["lifetime_flops"]
    ratio = s / b if b > 0 else None
    head = f"{device}, {served:.3g} served tokens, lifetime FLOPs (counted, 2·N per served token; not a time): "
    pair = f"{small['variant_id']} {s:.3g}, {big['variant_id']} {b:.3g}"
    out = {"by": "lifetime_flops", "ratio": ratio, "uncertainty": "counted FLOPs, no measurement noise"}
    if max(s, b) <= min(s, b) * (1 + TIE):
        return out | {"cheaper": None, "statement": head + f"a tie within {TIE:.0%} ({pair})"}
    name = "train small" if s < b else "train big and compress"
    return out | {"cheaper": name, "statement": head + f"{name} is cheaper ({pair}, {max(s, b) / min(s, b):.2f}×)"}


def _verdict(device: str, small: dict | None, big: dict | None, served: float, same: str | None) -> dict:
    if not (small and big):
        missing = "train small (a baseline-recipe ladder size)" if not small else "train big and compress"
        if small and same:
            missing += f" variant of a larger model (compressing {small['variant_id']} itself, as {same}, is not a "
            missing += "route: the same N, so 2·N FLOPs per token either way by construction)"
        return {"cheaper": None, "statement": f"{device}: no {missing} variant meets the target; no comparison"}
    if "lifetime_kwh" in small and "lifetime_kwh" in big:
        return _kwh_verdict(device, small, big, served)
    return _flops_verdict(device, small, big, served)


def routes(
    results: Results,
    devices: Sequence[str],
    *,
    served_tokens: float = 1e9,
    target: float | None = None,
    root: Path | None = None,
) -> dict:
    """Per frontier variant its training compute and scratch equivalent; every compressed variant
    against the uncompressed frontier at equal cost (``root``: the run directory, for the
    per-window losses that pair the Δloss intervals); per device the cheaper route."""
    target = results.loss_target_bpb if target is None else target
    variants = results.variants
    sizes = {s.size: s for s in results.sizes}
    law, info, unit = run_law(results)
    axes = [device_axis(d, "decode_ms") for d in devices] + ["bytes_per_decoded_token"]
    on_front = {p.variant_id for a in axes for p in frontier(variants, a) if p.on_front}
    base = baseline_recipe(results) if variants else ""
    out = {
        "served_tokens": served_tokens,
        "loss_target_bpb": target,
        "law": info,
        "rules": RULES,
        "points": [point(v, sizes, law, unit, target) for v in variants if v.variant_id in on_front],
        "pairs": pairs(results, devices, base, lambda v: training_flops(v, sizes)["total"], root),
        "per_device": {},
    }
    if target is None:
        out["note"] = "no loss target: routes are not compared"
        return out
    meets = [v for v in variants if (v.bpb("validation") or math.inf) <= target]
    for dev in devices:
        rs = [(v, _route(v, sizes, dev, served_tokens)) for v in meets]
        key = "lifetime_kwh" if rs and all("lifetime_kwh" in r for _, r in rs) else "lifetime_flops"
        scratch = [(v, r) for v, r in rs if not is_compressed(v, base, sizes)]
        small_v, small = min(scratch, key=lambda x: x[1][key], default=(None, None))
        n_small = small_v.params_total if small_v else math.inf
        # "big": the model trained before compressing is larger than the small one (else it is the same model)
        compressed = [(v, r) for v, r in rs if is_compressed(v, base, sizes)]
        bigger = [(v, r) for v, r in compressed if _parent_n(v, sizes) > n_small]
        same = [v.variant_id for v, _ in compressed if _parent_n(v, sizes) == n_small]
        big_v, big = min(bigger, key=lambda x: x[1][key], default=(None, None))
        verdict = _verdict(dev, small, big, served_tokens, same[0] if same else None)
        time = time_verdict(small_v, big_v, dev, results.measurement) if small_v and big_v else None
        if time is not None:
            verdict["statement"] += f". Measured: {time['statement']}"
        out["per_device"][dev] = {
            "train_small": small,
            "train_big_and_compress": big,
            "law_scratch_plan": _law_route(law, info, unit, target, dev, served_tokens),
            **verdict,
            **({"time": time} if time is not None else {}),
        }
    return out


RULES = {
    "training": "6·N·D (N total params) + teacher 6·N_t·D_t + 2·N_t·D + recovery 6·N_pruned·T + 2·N_parent·T",
    "inference": "2·N_total FLOPs per served token; device energy = predicted mJ/token × served tokens",
    "same_inference_cost": "a from-scratch model with the variant's deployed total parameters at its precision",
    "train_small": "a ladder size shipped as trained (the baseline recipe)",
    "train_big_and_compress": "a variant made by a compression recipe (pruning, quantization) or distillation, "
    "from a larger model than the train-small one",
    "pairs": "each compressed variant against the baseline frontier interpolated linearly in log cost (loss "
    "linear, training FLOPs log-linear), no extrapolation; Δloss 95% interval paired over windows where "
    "per-window losses were recorded",
}
