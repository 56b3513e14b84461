"""Recipes side by side on the same model: what each costs in loss and buys in speed and size.

Per size of the ladder (or one ``size``), every recipe against the run's baseline recipe:
validation and test loss change, the host's measured decode and prefill speed-ups with
their 95% paired-bootstrap intervals ("within noise" when the interval holds 1), the
chosen device's latency (measured or predicted, with the predicted ratio to the baseline
where it is not measured), file size and bytes per decoded token against the baseline,
whether the variant is on the loss-vs-decode-latency front of that device (over every
variant of the run), its flags, and for a structurally pruned variant the same shape
trained from scratch on the same tokens (its scratch twin).
"""

from __future__ import annotations

import math

from edgescale.errors import UserError
from edgescale.progress import loss_text
from edgescale.report.degradation import baseline_recipe
from edgescale.report.frontier import axes_for, device_axis, frontier
from edgescale.report.pick import latency_on
from edgescale.results.analysis_schema import Comparison
from edgescale.results.base import clean
from edgescale.results.schema import HostLatency, Results, Variant


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _delta(v: Variant, base: Variant, split: str) -> float | None:
    a, b = v.bpb(split), base.bpb(split)
    return None if a is None or b is None else a - b


def _speedup(v: Variant, phase: str, base: str) -> dict | None:
    host = v.latency.get("host")
    r = host.speedup(phase, base) if isinstance(host, HostLatency) else None
    return None if r is None else r.model_dump()


def _twin(v: Variant) -> dict | None:
    t = v.scratch_twin
    if not t:
        return None
    val, test = t.bpb("validation"), t.bpb("test")
    mine = v.bpb("validation")
    gap = None if val is None or mine is None else mine - val
    verdict = None
    if gap is not None:
        verdict = (
            f"pruned + recovered is {abs(gap):.4f} bits/byte {'better' if gap < 0 else 'worse'} than the same shape "
            f"trained from scratch on the same {t.train_tokens:,} tokens (validation)"
        )
    return {
        "size": t.size,
        "train_tokens": t.train_tokens,
        "validation_bpb": val,
        "test_bpb": test,
        "pruned_minus_scratch_val_bpb": gap,
        "verdict": verdict,
    }


def _row(v: Variant, base: Variant, base_recipe: str, device: str, on_front: bool) -> dict:
    lat, base_lat = latency_on(v, device), latency_on(base, device)
    predicted = lat is not None and lat["source"] != "measured"
    return {
        "recipe": v.recipe,
        "variant_id": v.variant_id,
        "params_total": v.params_total,
        "validation_bpb": v.bpb("validation"),
        "test_bpb": v.bpb("test"),
        "validation_se_bpb": v.se("validation"),
        "test_se_bpb": v.se("test"),
        "delta_validation_bpb": _delta(v, base, "validation"),
        "delta_test_bpb": _delta(v, base, "test"),
        "host_decode_speedup": _speedup(v, "decode", base_recipe),
        "host_prefill_speedup": _speedup(v, "prefill", base_recipe),
        "device_latency": lat,
        "device_decode_speedup_predicted": _ratio(base_lat and base_lat["decode_ms"], lat and lat["decode_ms"])
        if predicted
        else None,
        "file_bytes": v.file_bytes,
        "file_ratio": _ratio(v.file_bytes, base.file_bytes),
        "bytes_per_decoded_token": v.cost.bytes_per_decoded_token,
        "bytes_ratio": _ratio(v.cost.bytes_per_decoded_token, base.cost.bytes_per_decoded_token),
        "on_frontier": on_front,
        "flags": list(v.flags),
        "scratch_twin": _twin(v),
    }


def compare(results: Results, size: str | None = None, device: str = "host") -> Comparison:
    """The comparison table (see the module docstring), typed once here; raises UserError for an
    unknown size or device."""
    variants = results.variants
    sizes = list(dict.fromkeys(v.size for v in variants))
    if size is not None and size not in sizes:
        raise UserError(f"unknown size {size!r}; allowed: {', '.join(sizes)}", field="--size")
    devices = results.devices()
    if device not in devices:
        raise UserError(f"no latency for {device!r} in this run; allowed: {', '.join(devices)}", field="--device")
    base = baseline_recipe(results)
    axis = device_axis(device, "decode_ms")
    front = {p.variant_id for p in frontier(variants, axis) if p.on_front}
    tables = []
    for s in [size] if size else sizes:
        mine = [v for v in variants if v.size == s]
        ref = next((v for v in mine if v.recipe == base), None)
        if ref is None:
            continue
        rows = [_row(v, ref, base, device, v.variant_id in front) for v in mine]
        tables.append({"size": s, "params_total": ref.params_total, "rows": rows})
    out = {
        "baseline": base,
        "device": device,
        "frontier_axis": axis,
        "frontier_label": axes_for(variants)[axis].label,
        "speedup": "host p50 baseline / variant, 95% paired bootstrap CI; "
        "within_noise: the CI reaches into the A/A noise floor",
        "loss_unit": "bits_per_byte",
        "sizes": tables,
    }
    return Comparison.model_validate(clean(out))


def table_lines(cmp: Comparison) -> list[str]:
    """The comparison as fixed-width text lines for a terminal."""
    dev = cmp.device
    head = f"{'variant':<28}{'val bpb ± SE':>18}{'Δval':>9}{'Δtest':>9}{'decode×':>9}{'95% CI':>15}"
    head += f"{dev + ' ms':>14}{'file×':>7}{'front':>6}"
    out = [f"vs {cmp.baseline}; decode× measured on host; front: {cmp.frontier_label}", head + "  flags"]
    for t in cmp.sizes:
        for r in t.rows:
            s, lat = r.host_decode_speedup, r.device_latency
            ci = "" if s is None else f"[{s.low:.2f}, {s.high:.2f}]{'~' if s.within_noise else ''}"
            cells = (
                f"{r.variant_id:<28}{loss_text(r.validation_bpb, r.validation_se_bpb):>18}",
                f"{_num(r.delta_validation_bpb, '+.4f'):>9}{_num(r.delta_test_bpb, '+.4f'):>9}",
                f"{_num(s and s.speedup, '.2f'):>9}{ci:>15}{_num(lat and lat.decode_ms, '.4g'):>14}",
                f"{_num(r.file_ratio, '.2f'):>7}{'✓' if r.on_frontier else '':>6}  {'; '.join(r.flags)}",
            )
            out.append("".join(cells).rstrip())
            if r.scratch_twin and r.scratch_twin.verdict:
                out.append(f"{'':<28}scratch twin: {r.scratch_twin.verdict}")
    return out


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)
