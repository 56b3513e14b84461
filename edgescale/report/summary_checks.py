"""The lines of ``summary.md`` that say how far to trust the answer: the routes' matched-cost
pairs, the distillation seed deltas, the scaling fit's status and the timing's A/A control.

Plain strings (markdown that reads as text); :mod:`edgescale.report.summary` places them.
"""

from __future__ import annotations

from edgescale.results.analysis_schema import Analysis
from edgescale.results.schema import Distillation, DistillationDelta, Measurement, Results, Scaling
from edgescale.scaling.identify import data_to_identify

PAIR_AXIS = "bytes_per_decoded_token"
TWINS = {"equal_tokens": "equal tokens", "equal_compute": "equal compute"}


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.4f}"


def pair_lines(analysis: Analysis) -> list[str]:
    """Every compressed variant against the uncompressed frontier at equal bytes per decoded token."""
    ps = [p for p in (analysis.routes.pairs or []) if p.axis == PAIR_AXIS] if analysis.routes else []
    ok = [p for p in ps if p.status == "ok"]
    if not ps:
        return []
    out = ["", "At equal bytes per decoded token (the fp32 frontier interpolated in log cost; Δ = variant − "
           "frontier, validation bpb, 95% interval):", "",
           "| variant | matched baseline | Δ bpb [low, high] | verdict |", "| --- | --- | ---: | --- |"]  # fmt: skip
    for p in ok:
        base = p.lower if p.lower == p.upper else f"{p.weight_lower:.2f}·{p.lower} + {1 - p.weight_lower:.2f}·{p.upper}"
        ci = f" [{_signed(p.delta_low)}, {_signed(p.delta_high)}]" if p.delta_low is not None else " (no interval)"
        out.append(f"| {p.variant_id} | {base} | {_signed(p.delta_bpb)}{ci} | {p.verdict} |")
    rest = [p.variant_id for p in ps if p.status != "ok"]
    if rest:
        out += ["", f"- outside the fp32 frontier's range (no number, nothing extrapolated): {', '.join(rest)}"]
    return out


def _delta(d: DistillationDelta) -> str:
    ci = f" [{_signed(d.lo)}, {_signed(d.hi)}]" if d.lo is not None and d.hi is not None else " (no interval)"
    return f"{d.split} {_signed(d.mean)}{ci}"


def distillation_lines(dist: Distillation | None) -> list[str]:
    """KD − scratch per student and twin, with the 95% Welch interval over seeds and the seed counts."""
    if dist is None or not dist.pairs:
        return []
    out = ["", f"## Distillation (teacher {dist.teacher}; KD − scratch in bpb, negative: KD helps, 95% interval)", ""]
    for p in dist.pairs:
        if not p.deltas:  # an older run: one seed, no interval
            d = p.val_bpb_distilled - p.val_bpb_scratch
            out.append(f"- {p.student} − {p.scratch}: validation {d:+.4f}, one seed: no interval")
            continue
        for twin, label in TWINS.items():
            ds = [d for d in p.deltas if d.twin == twin]
            if ds:
                n = f"n = {ds[0].n_distilled} KD vs {ds[0].n_scratch} scratch seeds"
                out.append(f"- {p.student} − {p.scratch} ({label}), {n}: {'; '.join(_delta(d) for d in ds)}")
    return out


def _what_to_add(sc: Scaling, weak: list[str]) -> str:
    """The run's own answer (its plan's ``identify_with``), else the rule applied to its points."""
    plan = sc.plan_for_target
    if plan is not None and plan.identify_with and plan.identify_with.get("summary"):
        return plan.identify_with["summary"]
    if not sc.points:
        return ""
    add = data_to_identify([p.N for p in sc.points], [p.D for p in sc.points], weak, sc.train_tokens_available)
    return add["summary"]


def scaling_line(sc: Scaling) -> str:
    """The fit's form, whether it is identified (else what to add), and its bootstrap draws."""
    if sc.status != "fitted" or sc.law is None:
        return f"- Scaling fit: not fitted ({sc.reason or 'no reason recorded'})"
    law = sc.law
    form = law.form or "full: L = E + A/N^α + B/D^β"
    weak = sorted(law.unidentified)
    if weak:
        add = _what_to_add(sc, weak)
        status = f"unidentified ({add})" if add else f"unidentified: {', '.join(weak)}"
    else:
        status = "identified"
    boot = (
        f"bootstrap {law.boot_n} refits over whole {law.boot_unit or 'point'}s, {law.boot_dropped or 0} dropped"
        if law.boot_n
        else "no bootstrap"
    )
    line = f"- Scaling fit: form {form}; {status}; {boot}"
    if sc.reduced is not None:
        r = sc.reduced
        rweak = ", ".join(sorted(r.unidentified)) or "none"
        line += f". Reduced form ({r.form or 'reduced'}): unidentified {rweak}; bootstrap {r.boot_n} refits, "
        line += f"{r.boot_dropped or 0} dropped"
    return line


def timing_line(m: Measurement) -> str:
    """The A/A control (the baseline timed twice), its noise floor, and whether the machine was loaded."""
    if m.aa is None:
        head = "- Timing: no A/A control recorded (ties are judged by whether an interval holds 1)"
    else:
        d, f = m.aa.decode, m.aa.noise_floor
        head = (
            f"- Timing: A/A ({m.aa.variant} timed twice) decode {d.speedup:.3f}× [{d.low:.3f}, {d.high:.3f}], "
            f"noise floor decode ±{f['decode']:.1%}, prefill ±{f['prefill']:.1%} (speed-ups reaching into it are ties)"
        )
    load = {True: "loaded: other work competed for the worker's cores, timings are suspect",
            False: "not loaded", None: "load not counted"}[m.loaded]  # fmt: skip
    return f"{head}; machine {load}"


def trust_lines(results: Results) -> list[str]:
    return ["", "## How far to trust it", "", scaling_line(results.scaling), timing_line(results.measurement)]
