"""A device profile's efficiencies fitted to its calibration anchors, and its anchors checked.

The forward model is :mod:`edgescale.bench.predict`'s; this module fits its efficiencies (bandwidth,
compute, dequantization ops, a GPU's launch floor) as a maximum a-posteriori fit on a profile's
calibration anchors, and compares predictions with the anchors (validation anchors are only checked).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from edgescale.bench.architectures import get_architecture
from edgescale.bench.predict import (
    DEQUANT_OPS_PRIOR,
    _arch_load,
    _efficiencies,
    _pass_cost,
    _PassCost,
    _planner_load,
)
from edgescale.profiles import DeviceProfile, Quantity

# The efficiencies a profile's calibration anchors fit, each in a physically plausible range, with the
# width of its log-normal prior (a maximum a-posteriori fit: a term no anchor informs stays at its prior).
# Bandwidth: no runtime streams above peak, and none below a tenth of it on a working build. Compute: a
# working kernel reaches at least 1% of the SIMD peak and at most all of it. Dequantization: 0.5-64 ops per
# sub-8-bit weight (one unpack op, up to scalar code). The launch floor: 0-100 ms a pass, GPU profiles only.
FIT_RANGES = {"bw": (0.1, 1.0), "compute": (0.01, 1.0), "dequant_ops": (0.5, 64.0)}
FLOOR_RANGE_MS = (0.0, 100.0)
PRIOR_LOG_SD = {"bw": 0.3, "compute": 1.0, "dequant_ops": 1.0}
FLOOR_PRIOR_SD_MS = 10.0
ANCHOR_LOG_SD = 0.1  # a published throughput's own scatter (runs, builds, thermal state): about 10%


def _anchor_cost(device: DeviceProfile, a) -> _PassCost:
    n = a.prompt_len or 128  # a decode anchor's context: its prompt, or 128 tokens
    if a.arch is None:
        load = _planner_load(a.params, a.bits_per_weight, n, 16)
    else:
        load = _arch_load(get_architecture(a.arch), a.bits_per_weight, 16, a.embed_bits, None)
    return _pass_cost(device, load, a.bits_per_weight, n, n, a.compute)


def _predicted_rate(cost: _PassCost, workload: str, bw: float, compute: float, q: float, floor_ms: float) -> float:
    decode, prefill, *_ = cost.times(bw, compute, q, floor_ms)
    return 1 / decode if workload == "decode" else cost.n / prefill


def _anchor_rows(device: DeviceProfile, anchors) -> list[dict]:
    rows = []
    for a in anchors:
        predicted = _predicted_rate(_anchor_cost(device, a), a.workload, *_efficiencies(device))
        rows.append(
            {
                "device": device.id,
                "workload": a.workload,
                "model": a.model,
                "measured_tokens_per_s": a.tokens_per_s,
                "predicted_tokens_per_s": predicted,
                "ratio": predicted / a.tokens_per_s,
                "source": a.source,
            }
        )
    return rows


def _with(device: DeviceProfile, values: dict[str, float], formula: str = "", source: str = "") -> DeviceProfile:
    eff = device.efficiency
    update = {}
    for name, value in values.items():
        prior = getattr(eff, name) or _default_prior(name)
        changes = {"value": value} if not formula else {"value": value, "kind": "derived", "formula": formula}
        update[name] = prior.model_copy(update={**changes, **({"source": source} if source else {})})
    return device.model_copy(update={"efficiency": eff.model_copy(update=update)})


def _default_prior(name: str) -> Quantity:
    assert name == "dequant_ops", name
    why = "mask, shift, offset and scale per 4-bit weight lane, at the SIMD rate (edgescale assumption)"
    return Quantity(value=DEQUANT_OPS_PRIOR, kind="assumed", formula=why, source="edgescale.bench.predict")


@functools.cache
def _fit(device_json: str) -> str:
    from scipy.optimize import least_squares  # 0.4 s to import: only where a profile has anchors to fit

    device = DeviceProfile.model_validate_json(device_json)
    anchors = device.calibration
    eff = device.efficiency
    names = list(FIT_RANGES)
    prior = [math.log((getattr(eff, k) or _default_prior(k)).value) for k in names]
    lo = [math.log(FIT_RANGES[k][0]) for k in names]
    hi = [math.log(FIT_RANGES[k][1]) for k in names]
    floor = eff.overhead_ms_per_token is not None
    if floor:  # the launch floor is fitted in ms, linearly (it can be zero)
        prior.append(eff.overhead_ms_per_token.value)
        lo.append(FLOOR_RANGE_MS[0])
        hi.append(FLOOR_RANGE_MS[1])
    x0 = np.clip(prior, lo, hi)
    sd = [PRIOR_LOG_SD[k] for k in names] + ([FLOOR_PRIOR_SD_MS] if floor else [])

    def values(x) -> dict[str, float]:
        fitted = {k: math.exp(v) for k, v in zip(names, x, strict=False)}
        return fitted | ({"overhead_ms_per_token": float(x[-1])} if floor else {})

    costs = [(_anchor_cost(device, a), a.workload, math.log(a.tokens_per_s)) for a in anchors]

    def residuals(x):
        trial = values(x)
        trial = (trial["bw"], trial["compute"], trial["dequant_ops"], trial.get("overhead_ms_per_token", 0.0))
        fit = [(math.log(_predicted_rate(c, w, *trial)) - m) / ANCHOR_LOG_SD for c, w, m in costs]
        return np.array(fit + [(v - p) / s for v, p, s in zip(x, x0, sd, strict=True)])

    # max() makes the fit non-convex: a term far from binding has no gradient. Start from the prior and from
    # each efficiency moved two prior sds either way, and keep the best optimum.
    starts = [x0] + [np.clip(x0 + np.eye(len(x0))[i] * k * sd[i], lo, hi) for i in range(len(x0)) for k in (-2, 2)]
    fits = [least_squares(residuals, s, bounds=(lo, hi), x_scale=sd) for s in starts]
    best = min(fits, key=lambda f: f.cost)
    # A term no anchor's prediction depends on (e.g. compute when every anchor is bandwidth-bound) keeps its prior
    # as written: it was not fitted.
    informed = np.abs(best.jac[: len(anchors)]).max(axis=0) > 1e-9
    fitted = {k: v for (k, v), used in zip(values(best.x).items(), informed, strict=True) if used}
    n_dec = sum(a.workload == "decode" for a in anchors)
    priors = ", ".join(f"{k} {PRIOR_LOG_SD[k]} in {FIT_RANGES[k]}" for k in names)
    formula = (
        f"fitted: maximum a-posteriori over {len(anchors)} calibration anchor(s) ({n_dec} decode, "
        f"{len(anchors) - n_dec} prefill; log sd {ANCHOR_LOG_SD} each), log-normal priors around the stated "
        f"values (log sd {priors}" + (f"; floor sd {FLOOR_PRIOR_SD_MS} ms in {FLOOR_RANGE_MS}" if floor else "") + ")"
    )
    sources = "; ".join(dict.fromkeys(a.source for a in anchors))
    return _with(device, fitted, formula, sources).model_dump_json(by_alias=True)


def calibrated(device: DeviceProfile) -> DeviceProfile:
    """The profile with its efficiencies (bandwidth, compute, dequantization ops, and a GPU's launch floor)
    fitted to its calibration anchors: the maximum a-posteriori values under log-normal priors around the
    profile's stated priors, within :data:`FIT_RANGES`. A term no anchor informs stays at its prior. Each
    fitted number is recorded as ``derived`` with the fit in its formula and the anchors' sources;
    validation anchors are never used."""
    eff = device.efficiency
    terms = (getattr(eff, k) for k in ("bw", "compute", "dequant_ops", "overhead_ms_per_token"))
    if not device.calibration or any(q is not None and (q.formula or "").startswith("fitted:") for q in terms):
        return device
    return DeviceProfile.model_validate_json(_fit(device.model_dump_json(by_alias=True)))


def check_anchors(device: DeviceProfile, which: str = "validation") -> list[dict]:
    """Predicted against published throughput for a profile's anchors (ratio = predicted / measured),
    with the efficiencies fitted to its calibration anchors."""
    return _anchor_rows(calibrated(device), getattr(device, which))


def anchor_interval(device: DeviceProfile) -> tuple[float, str]:
    """Relative half-width of a decode prediction's interval on ``device``: twice the RMS
    log error over its validation decode anchors, or an assumed ±50% without any."""
    ratios = [r["ratio"] for r in check_anchors(device) if r["workload"] == "decode"]
    if not ratios:
        return 0.5, "assumed ±50%: no validation anchors on this device"
    rms = math.sqrt(sum(math.log(r) ** 2 for r in ratios) / len(ratios))
    return min(0.9, 2 * rms), f"2 x RMS log error over {len(ratios)} validation decode anchor(s)"
