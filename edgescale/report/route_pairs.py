"""Every compressed variant against the uncompressed frontier at the same deployed cost.

"Train big and compress" is worth it only if the compressed model beats what training the
smaller model directly buys at the same cost of serving. The uncompressed frontier is the
baseline recipe's ladder (not distilled): on each cost axis its Pareto points, joined
linearly in log cost. A compressed variant at cost c between two of them, c_a ≤ c ≤ c_b, is
matched with the weight w = (log c_b − log c) / (log c_b − log c_a) on a, and

    Δloss = L_v − (w·L_a + (1 − w)·L_b)            (validation bits per byte)

with a 95% interval: paired over the same evaluation windows when all three variants
recorded their per-window losses (``edgescale.results.nll``), else from the records'
standard errors as independent, else none (and said). Training compute is matched the same
way, in log FLOPs. A cost outside the frontier's range gets no number: nothing is
extrapolated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgescale.report.frontier import AXES
from edgescale.results import nll
from edgescale.results.pareto import pareto_front
from edgescale.results.schema import HostLatency, PredictedLatency, Results, Size, Variant

SPLIT = "validation"
NO_INTERVAL = "no interval: per-window losses not recorded"


@dataclass(frozen=True)
class CostAxis:
    name: str
    label: str
    source: str  # computed | measured | predicted
    get: Callable[[Variant], float | None]


def _decode_ms(device: str) -> Callable[[Variant], float | None]:
    def get(v: Variant) -> float | None:
        lat = v.latency.get(device)
        if isinstance(lat, HostLatency):
            return lat.decode_ms_p50
        return lat.decode_ms if isinstance(lat, PredictedLatency) else None

    return get


def cost_axes(results: Results, devices: Sequence[str]) -> list[CostAxis]:
    """Bytes per decoded token always; decode latency on the host (measured) and each predicted device."""
    out = [CostAxis("bytes_per_decoded_token", AXES["bytes_per_decoded_token"].label, "computed", AXES[
        "bytes_per_decoded_token"].get)]  # fmt: skip
    for dev in devices:
        kinds = {type(v.latency.get(dev)) for v in results.variants} - {type(None)}
        source = "measured" if kinds == {HostLatency} else "predicted"
        out.append(CostAxis(f"{dev}_decode_ms", f"{dev} decode ms/token ({source})", source, _decode_ms(dev)))
    return out


def is_compressed(v: Variant, base: str, sizes: Mapping[str, Size]) -> bool:
    """Made by a compression recipe, or distilled (the teacher is the "big" model)."""
    size = sizes.get(v.size)
    return v.recipe != base or bool(size and size.distilled_from)


def _front(base_variants: Sequence[Variant], axis: CostAxis) -> list[tuple[float, Variant]]:
    """The baseline frontier on ``axis``: (cost, variant), cheapest first, positive costs only."""
    pts = [(axis.get(v), v.bpb(SPLIT)) for v in base_variants]
    pts = [(c, loss) if c and c > 0 and loss is not None else (math.nan, math.nan) for c, loss in pts]
    return [(pts[i][0], base_variants[i]) for i in pareto_front(pts)]


def bracket(front: Sequence[tuple[float, Variant]], c: float) -> tuple[Variant, Variant, float] | None:
    """The frontier points either side of cost ``c`` and the log-cost weight on the cheaper one;
    None outside the frontier's range."""
    for (ca, a), (cb, b) in zip(front, front[1:], strict=False):
        if ca <= c <= cb:
            return (a, b, 1.0 if cb == ca else (math.log(cb) - math.log(c)) / (math.log(cb) - math.log(ca)))
    if front and c == front[0][0]:
        return front[0][1], front[0][1], 1.0
    return None


def _terms(v: Variant, a: Variant, b: Variant, w: float) -> list[tuple[float, Variant]]:
    terms = [(1.0, v), (-w, a), (-(1.0 - w), b)] if a is not b else [(1.0, v), (-1.0, a)]
    return [(k, x) for k, x in terms if k != 0.0]


def delta_interval(terms: Sequence[tuple[float, Variant]], root: Path | None) -> tuple[nll.Contrast | None, str]:
    """The contrast Σ k·L of ``terms`` with its 95% interval, and how the interval was made."""
    splits = [x.loss[SPLIT] for _, x in terms]
    files = [getattr(s, "nll_file", None) for s in splits]
    if root is not None and all(files):
        loaded = [nll.load(root, f) for f in files]
        if all(n is not None for n in loaded):
            c = nll.contrast([(k, n) for (k, _), n in zip(terms, loaded, strict=True)])
            if c is not None:
                return c, f"paired over {c.windows} evaluation windows (per-window losses)"
    ses = [getattr(s, "se_bpb", None) for s in splits]
    if all(se is not None for se in ses):
        c = nll.unpaired([(k, s.bits_per_byte, se) for (k, _), s, se in zip(terms, splits, ses, strict=True)])
        return c, "unpaired: the variants' standard errors, taken as independent"
    return None, NO_INTERVAL


def _verdict(low: float | None, high: float | None) -> tuple[str, str]:
    if low is None or high is None:
        return "unknown", "no verdict: " + NO_INTERVAL
    if high < 0:
        return "better", "big-then-compress is better at equal cost"
    if low > 0:
        return "worse", "big-then-compress is worse at equal cost"
    return "tie", "a tie: the Δloss interval contains 0 (within noise)"


def pair(
    v: Variant, axis: CostAxis, front: Sequence[tuple[float, Variant]], flops: Callable[[Variant], float],
    root: Path | None,
) -> dict:  # fmt: skip
    """One compressed variant against the baseline frontier on one cost axis."""
    c = axis.get(v)
    out = {"variant_id": v.variant_id, "axis": axis.name, "axis_label": axis.label, "source": axis.source, "cost": c}
    where = bracket(front, c) if c and c > 0 else None
    if where is None:
        if not c:
            reason = "no cost figure"
        elif not front:
            reason = "no uncompressed frontier on this axis"
        else:
            reason = f"outside the uncompressed frontier's range [{front[0][0]:.4g}, {front[-1][0]:.4g}]"
        text = f"{v.variant_id} at equal {axis.label}: {reason}: no number"
        return out | {"status": "out_of_range", "verdict": "out_of_range", "statement": text}
    a, b, w = where
    base_loss = w * a.bpb(SPLIT) + (1 - w) * b.bpb(SPLIT)
    base_flops = math.exp(w * math.log(flops(a)) + (1 - w) * math.log(flops(b)))
    c95, how = delta_interval(_terms(v, a, b, w), root)
    delta = c95.bpb if c95 is not None else v.bpb(SPLIT) - base_loss
    low, high = (c95.low, c95.high) if c95 is not None else (None, None)
    verdict, text = _verdict(low, high)
    ci = f" [{low:+.4f}, {high:+.4f}]" if low is not None else f" ({NO_INTERVAL})"
    if axis.source == "measured":  # the matched cost rests on timings whose noise the interval leaves out
        how += "; cost matched on measured timings, whose noise is not in the interval"
    return out | {
        "status": "ok",
        "lower": a.variant_id,
        "upper": b.variant_id,
        "weight_lower": w,
        "baseline_bpb": base_loss,
        "variant_bpb": v.bpb(SPLIT),
        "delta_bpb": delta,
        "delta_low": low,
        "delta_high": high,
        "interval": how,
        "training_flops": flops(v),
        "baseline_training_flops": base_flops,
        "training_flops_ratio": flops(v) / base_flops,
        "verdict": verdict,
        "statement": f"{v.variant_id} vs {w:.2f}·{a.variant_id} + {1 - w:.2f}·{b.variant_id} at equal {axis.label}: "
        f"Δ {delta:+.4f} bpb{ci}, {flops(v) / base_flops:.2f}× the training compute; {text}",
    }


def pairs(results: Results, devices: Sequence[str], base: str, flops: Callable[[Variant], float],
          root: Path | None = None) -> list[dict]:  # fmt: skip
    """Every compressed variant paired on every cost axis with the baseline frontier."""
    sizes = {s.size: s for s in results.sizes}
    # a variant of no ladder size has no training compute on record: nothing to match it on
    scored = [v for v in results.variants if v.bpb(SPLIT) is not None and v.size in sizes]
    base_vs = [v for v in scored if not is_compressed(v, base, sizes) and flops(v) > 0]
    compressed = [v for v in scored if is_compressed(v, base, sizes) and flops(v) > 0]
    out = []
    for axis in cost_axes(results, devices):
        front = _front(base_vs, axis)
        out += [pair(v, axis, front, flops, root) for v in compressed]
    return out
