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
from collections.abc import Mapping

from edgescale.report.degradation import baseline_recipe
from edgescale.report.frontier import _dig, axes_for, device_axis, frontier
from edgescale.report.pick import latency_on


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _delta(v: Mapping, base: Mapping, split: str) -> float | None:
    a, b = _dig(v, "loss", split, "bits_per_byte"), _dig(base, "loss", split, "bits_per_byte")
    return None if a is None or b is None else a - b


def _speedup(v: Mapping, phase: str, base: str) -> dict | None:
    r = _dig(v, "latency", "host", f"{phase}_speedup_vs_{base}")
    return None if r is None else {k: r.get(k) for k in ("speedup", "low", "high", "within_noise", "slower")}


def _twin(v: Mapping) -> dict | None:
    t = v.get("scratch_twin")
    if not t:
        return None
    val, test = _dig(t, "loss", "validation", "bits_per_byte"), _dig(t, "loss", "test", "bits_per_byte")
    mine = _dig(v, "loss", "validation", "bits_per_byte")
    gap = None if val is None or mine is None else mine - val
    verdict = None
    if gap is not None:
        verdict = (
            f"pruned + recovered is {abs(gap):.4f} bits/byte {'better' if gap < 0 else 'worse'} than the same shape "
            f"trained from scratch on the same {t.get('train_tokens'):,} tokens (validation)"
        )
    return {
        "size": t.get("size"),
        "train_tokens": t.get("train_tokens"),
        "validation_bpb": val,
        "test_bpb": test,
        "pruned_minus_scratch_val_bpb": gap,
        "verdict": verdict,
    }


def _row(v: Mapping, base: Mapping, base_recipe: str, device: str, on_front: bool) -> dict:
    lat, base_lat = latency_on(v, device), latency_on(base, device)
    predicted = lat is not None and lat["source"] != "measured"
    return {
        "recipe": v["recipe"],
        "variant_id": v["variant_id"],
        "params_total": v.get("params_total"),
        "validation_bpb": _dig(v, "loss", "validation", "bits_per_byte"),
        "test_bpb": _dig(v, "loss", "test", "bits_per_byte"),
        "delta_validation_bpb": _delta(v, base, "validation"),
        "delta_test_bpb": _delta(v, base, "test"),
        "host_decode_speedup": _speedup(v, "decode", base_recipe),
        "host_prefill_speedup": _speedup(v, "prefill", base_recipe),
        "device_latency": lat,
        "device_decode_speedup_predicted": _ratio(base_lat and base_lat["decode_ms"], lat and lat["decode_ms"])
        if predicted
        else None,
        "file_bytes": v.get("file_bytes"),
        "file_ratio": _ratio(v.get("file_bytes"), base.get("file_bytes")),
        "bytes_per_decoded_token": _dig(v, "cost", "bytes_per_decoded_token"),
        "bytes_ratio": _ratio(
            _dig(v, "cost", "bytes_per_decoded_token"), _dig(base, "cost", "bytes_per_decoded_token")
        ),
        "on_frontier": on_front,
        "flags": list(v.get("flags", [])),
        "scratch_twin": _twin(v),
    }


def compare(results: Mapping, size: str | None = None, device: str = "host") -> dict:
    """The comparison table (see the module docstring); raises UserError for an unknown size or device."""
    from edgescale.errors import UserError

    variants = list(results.get("variants", []))
    sizes = list(dict.fromkeys(v["size"] for v in variants))
    if size is not None and size not in sizes:
        raise UserError(f"unknown size {size!r}; allowed: {', '.join(sizes)}", field="--size")
    devices = list(dict.fromkeys(d for v in variants for d in v.get("latency", {})))
    if device not in devices:
        raise UserError(f"no latency for {device!r} in this run; allowed: {', '.join(devices)}", field="--device")
    base = baseline_recipe(results)
    axis = device_axis(device, "decode_ms")
    front = {p.variant_id for p in frontier(variants, axis) if p.on_front}
    tables = []
    for s in [size] if size else sizes:
        mine = [v for v in variants if v["size"] == s]
        ref = next((v for v in mine if v["recipe"] == base), None)
        if ref is None:
            continue
        rows = [_row(v, ref, base, device, v["variant_id"] in front) for v in mine]
        tables.append({"size": s, "params_total": ref.get("params_total"), "rows": rows})
    return {
        "baseline": base,
        "device": device,
        "frontier_axis": axis,
        "frontier_label": axes_for(variants)[axis].label,
        "speedup": "host p50 baseline / variant, 95% paired bootstrap CI; within_noise: the CI holds 1",
        "loss_unit": "bits_per_byte",
        "sizes": tables,
    }


def table_lines(cmp: Mapping) -> list[str]:
    """The comparison as fixed-width text lines for a terminal."""
    dev = cmp["device"]
    head = (
        f"{'variant':<28}{'Δval':>9}{'Δtest':>9}{'decode×':>9}{'95% CI':>15}{dev + ' ms':>14}{'file×':>7}{'front':>6}"
    )
    out = [f"vs {cmp['baseline']}; decode× measured on host; front: {cmp['frontier_label']}", head + "  flags"]
    for t in cmp["sizes"]:
        for r in t["rows"]:
            s, lat = r["host_decode_speedup"], r["device_latency"] or {}
            ci = "" if s is None else f"[{s['low']:.2f}, {s['high']:.2f}]{'~' if s['within_noise'] else ''}"
            cells = (
                f"{r['variant_id']:<28}",
                f"{_num(r['delta_validation_bpb'], '+.4f'):>9}{_num(r['delta_test_bpb'], '+.4f'):>9}",
                f"{_num(s and s['speedup'], '.2f'):>9}{ci:>15}{_num(lat.get('decode_ms'), '.4g'):>14}",
                f"{_num(r['file_ratio'], '.2f'):>7}{'✓' if r['on_frontier'] else '':>6}  {'; '.join(r['flags'])}",
            )
            out.append("".join(cells).rstrip())
            if r["scratch_twin"] and r["scratch_twin"]["verdict"]:
                out.append(f"{'':<28}scratch twin: {r['scratch_twin']['verdict']}")
    return out


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)
