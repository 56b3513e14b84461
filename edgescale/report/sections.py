"""HTML sections of ``report.html`` built from the typed ``results.analysis``: the answer, the
frontiers, the recipe comparison, the degradation law, the two training routes.

Every value from the results goes through ``html.escape`` (via the helpers of
:mod:`edgescale.report.html`); missing parts show as "–".
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from edgescale.progress import loss_text
from edgescale.report.html_parts import _e, _fmt, _table, _td
from edgescale.results.analysis_schema import (
    Analysis,
    Comparison,
    DegradationLaw,
    DeviceLatency,
    Pick,
    Routes,
    RouteVariant,
    VariantPick,
)
from edgescale.results.base import Speedup
from edgescale.results.schema import Results


def _ms(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}"


def _interval(lat: DeviceLatency | None) -> str:
    lo, hi = (None, None) if lat is None else (lat.decode_ms_low, lat.decode_ms_high)
    return "" if lo is None or hi is None else f" [{lo:.3g}, {hi:.3g}]"


def _source(source: Any) -> str:
    text = escape(str(source or "?"))
    return f"<b>{text}</b>" if source == "measured" else f"<i>{text}</i>"


def _meets(flag: Any) -> str:
    return {True: ' <span class="ok">meets</span>', False: ' <span class="bad">misses</span>'}.get(flag, "")


def _answer_row(device: str, p: Pick) -> str:
    if isinstance(p, VariantPick):
        v, loss = p.variant, p.variant.loss
        lat = v.latency
        return (
            f"<tr>{_td(device)}<td class='ok'><b>use {_e(v.variant_id)}</b></td>"
            + _td(v.params_total, "{:,}")
            + _td(None if v.file_bytes is None else v.file_bytes / 1024, "{:,.1f}")
            + _td(loss_text(loss.validation_bpb, loss.validation_se_bpb))
            + f"<td>{_e(loss_text(loss.test_bpb, loss.test_se_bpb))}{_meets(loss.test_meets_target)}</td>"
            + f"<td>{escape(_ms(lat and lat.decode_ms) + _interval(lat))}</td><td>{_source(lat and lat.source)}</td>"
            + "</tr>"
        )
    if p.status == "plan" and p.best is not None:
        b = p.best
        plan, dev = b.plan, b.device
        lo, hi = b.predicted_loss_bpb_interval or (None, None)
        what = (
            f"no variant meets it: train N = {plan.n_params:.3g} params on D = {plan.n_tokens:.3g} tokens "
            f"(C = {plan.compute_flops:.3g} FLOPs), then {b.recipe}; predicted loss "
            f"{b.predicted_loss_bpb:.4f} [{_num(lo)}, {_num(hi)}] ({p.law.law}"
            f"{'' if p.law.reliable else ', not reliable'})"
        )
        return (
            f"<tr>{_td(device)}<td class='flag'><b>train a new model</b></td>"
            f"<td colspan='4' class='wrap'>{escape(what)}</td>"
            f"<td>{escape(_ms(dev and dev.decode_ms))}</td><td>{_source(dev and dev.source)}</td></tr>"
        )
    return (
        f"<tr>{_td(device)}<td class='bad'><b>{_e(p.status)}</b></td>"
        f"<td colspan='6' class='wrap'>{_e(p.reason or 'no answer')}</td></tr>"
    )


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.4f}"


def answer(results: Results, analysis: Analysis) -> str:
    """The top of the page: per device, the pick for the study's loss target."""
    target = analysis.loss_target_bpb
    if not target:
        return (
            '<section class="answer" id="answer"><h2>The answer</h2><p>The study sets no <code>loss_target_bpb</code>: '
            "no pick. Run <code>edgescale pick RUN_DIR --loss-target-bpb L --device NAME</code>.</p></section>"
        )
    picks = analysis.picks or {}
    rows = [_answer_row(d, p) for d, p in picks.items()]
    headers = ["device", "answer", "params", "file KiB", "val bpb ± SE", "test bpb ± SE", "decode ms/token", "latency"]
    notes = [p.memory_note for p in picks.values() if not isinstance(p, VariantPick) and p.memory_note]
    memory = "".join(f'<p class="flag">{_e(n)}</p>' for n in notes)
    axes = sorted({p.cost_label for p in picks.values() if p.cost_label})
    per_device = analysis.routes.per_device if analysis.routes else {}
    verdicts = [f"<li>{_e(r.statement)}</li>" for r in per_device.values() if r.statement]
    return f"""<section class="answer" id="answer">
<h2>The answer: the smallest model that meets {_e(f"{target:g}")} bits/byte, per device</h2>
{_table(headers, rows)}
{memory}
<p class="note">Chosen on the <b>validation</b> split (cheapest by {_e("; ".join(axes)) or "–"}), reported with
its <b>test</b> loss, which nothing was selected on. Latency <b>measured</b> = timed on this host with onnxruntime;
<i>predicted</i> = the device profile's roofline, with its interval in brackets.</p>
{"<ul>" + "".join(verdicts) + "</ul>" if verdicts else ""}
</section>"""


def frontier_table(analysis: Analysis) -> str:
    """Every cost axis with its source and its front (variant ids, cheapest first)."""
    rows = []
    for f in (analysis.frontiers or {}).values():
        front = " → ".join(p.variant_id for p in f.front)
        excluded = f" (no figure: {', '.join(f.excluded)})" if f.excluded else ""
        rows.append(f"<tr>{_td(f.label)}{_td(f.source)}<td class='wrap'>{_e(front + excluded)}</td></tr>")
    return _table(["cost axis", "source", "Pareto front, cheapest first (loss: validation bits/byte)"], rows)


def _speedup_cell(s: Speedup | None) -> str:
    if s is None:
        return "<td>–</td>"
    text = _e(f"{s.speedup:.2f}× [{s.low:.2f}, {s.high:.2f}]")
    if s.slower:
        return f'<td>{text} <span class="bad">slower</span></td>'
    if s.within_noise:
        return f'<td>{text} <span class="flag">within noise</span></td>'
    return f"<td>{text}</td>"


def compare(cmp: Comparison | None) -> str:
    """The recipe comparison on every size (from :func:`edgescale.report.compare.compare`)."""
    if cmp is None or not cmp.sizes:
        return "<p>No comparison: no size has the baseline recipe.</p>"
    dev = cmp.device
    rows = []
    for t in cmp.sizes:
        for r in t.rows:
            lat = r.device_latency
            twin = r.scratch_twin and r.scratch_twin.verdict
            notes = "; ".join([*r.flags, *([twin] if twin else [])])
            rows.append(
                "<tr>"
                + _td(r.variant_id)
                + _td(r.delta_validation_bpb, "{:+.4f}")
                + _td(r.delta_test_bpb, "{:+.4f}")
                + _speedup_cell(r.host_decode_speedup)
                + _speedup_cell(r.host_prefill_speedup)
                + f"<td>{escape(_ms(lat and lat.decode_ms))} {_source(lat.source) if lat else ''}</td>"
                + _td(r.file_ratio, "{:.2f}×")
                + _td(r.bytes_ratio, "{:.2f}×")
                + ('<td class="ok">✓</td>' if r.on_frontier else "<td></td>")
                + f"<td class='wrap'>{_e(notes)}</td></tr>"
            )
    headers = ["variant", "Δ val bpb", "Δ test bpb", "decode speed-up (host, 95% CI)", "prefill speed-up"]
    headers += [f"{dev} decode ms", "file ×", "bytes/token ×", "front", "flags"]
    return (
        f'<p class="note">Against {_e(cmp.baseline)} of the same size. {_e(cmp.speedup)}. '
        f"Front ✓: on {_e(cmp.frontier_label)}.</p>" + _table(headers, rows)
    )


def degradation(fits: Mapping[str, DegradationLaw]) -> str:
    """One row per recipe: the fitted law's form, exponents, quality, and its notes."""
    if not fits:
        return "<p>No recipe besides the baseline: no degradation law.</p>"
    rows = []
    for recipe, f in fits.items():
        largest = max(f.points, key=lambda p: (p.n, p.d, -(p.seed or 0))) if f.points else None  # its final, seed 0
        rows.append(
            "<tr>"
            + _td(recipe)
            + _td(f.form)
            + _td(len(f.points))
            + _td(f.gamma_n, "{:.3f}")
            + _td(f.gamma_d, "{:.3f}")
            + _td(f.r2_log, "{:.3f}")
            + _td(f.dof)
            + _td(largest and largest.delta_bpb, "{:+.4f}")
            + f"<td class='wrap'>{_e('; '.join(f.notes))}</td></tr>"
        )
    headers = ["recipe", "form", "points", "γ_N", "γ_D", "R² (log)", "dof", "δ at the largest size", "notes"]
    return (
        '<p class="note">Per recipe, δ = L<sub>recipe</sub> − L<sub>baseline</sub> (validation bits/byte) across the '
        "family, fitted as δ ≈ C·D<sup>γ_D</sup>/N<sup>γ_N</sup> (after Kumar et al. 2024, “Scaling Laws for "
        "Precision”: larger models lose less, more data loses more), bootstrap 95% band. <code>pick</code> uses it "
        "to extrapolate to sizes that were not trained, inside the sampled N and D/N only; with fewer than 5 sizes "
        "over 1.5 decades no law is fitted (form <code>none</code>: per-size δ only).</p>" + _table(headers, rows)
    ) + _degradation_grid(fits)


def _degradation_grid(fits: Mapping[str, DegradationLaw]) -> str:
    """The degradation grid (points with a seed): per recipe, size and D/N, δ of each seed with its
    paired 95% interval, flagged where it is within noise."""
    rows = []
    for recipe, f in fits.items():
        cells: dict[tuple[str, float, float], list] = {}
        for p in f.points:
            if p.seed is not None:
                cells.setdefault((p.size, p.n, p.d), []).append(p)
        for (size, n, d), pts in sorted(cells.items(), key=lambda c: (c[0][1], c[0][2])):
            each = [
                f"seed {p.seed}: {p.delta_bpb:+.4f}"
                + (f" ± {1.96 * p.se_bpb:.4f}" if p.se_bpb is not None else "")
                + (" (within noise)" if p.within_noise else "")
                for p in sorted(pts, key=lambda p: p.seed)
            ]
            noisy = sum(bool(p.within_noise) for p in pts)
            flag = "<td class='flag'>within noise</td>" if noisy == len(pts) else _td(f"{noisy} of {len(pts)}")
            mean = sum(p.delta_bpb for p in pts) / len(pts)
            rows.append(
                f"<tr>{_td(recipe)}{_td(size)}{_td(d / n, '{:.3g}')}{_td(mean, '{:+.4f}')}"
                f"<td class='wrap'>{_e('; '.join(each))}</td>{flag}</tr>"
            )
    if not rows:
        return ""
    headers = ["recipe", "size", "D/N", "mean δ val bpb", "δ per seed ± 1.96·SE (paired)", "within noise"]
    return (
        '<p class="note">The degradation grid: each recipe at every cooled branch (several D/N per size) and '
        "every training seed, δ against the baseline scored on the same windows (paired error).</p>"
        + _table(headers, rows)
    )


def _twin_loss(t) -> str:
    return "–" if t is None else loss_text(t.validation_bpb, t.validation_se_bpb)


def _route_cells(r: RouteVariant | None) -> str:
    if r is None:
        return "<td>–</td>" * 5
    return (
        _td(r.variant_id)
        + _td(loss_text(r.validation_bpb, r.validation_se_bpb))
        + _td(r.training_flops, "{:.3g}")
        + _td(r.inference_flops, "{:.3g}")
        + (
            _td(r.lifetime_kwh, "{:.3g} kWh")
            if "lifetime_kwh" in r.model_fields_set
            else _td(r.lifetime_flops, "{:.3g} FLOPs")
        )
    )


def routes(rt: Routes | None) -> str:
    """Train small vs train big and compress: per device the cheapest variant of each route
    meeting the target, their lifetime cost, and the law's from-scratch plan."""
    if rt is None:
        return ""
    rows = []
    for dev, d in rt.per_device.items():
        law = d.law_scratch_plan
        plan = law.reason if "reason" in law.model_fields_set else "–"
        if law.status == "ok":
            kwh = "lifetime_kwh" in law.model_fields_set
            life = f"{_fmt(law.lifetime_kwh, '{:.3g}')} kWh" if kwh else f"{_fmt(law.lifetime_flops, '{:.3g}')} FLOPs"
            plan = f"N={_fmt(law.params_total, '{:.3g}')}, D={_fmt(law.tokens, '{:.3g}')}, lifetime {life}"  # NaN: null
        rows.append(
            f"<tr>{_td(dev)}{_route_cells(d.train_small)}{_route_cells(d.train_big_and_compress)}"
            f"<td class='wrap'>{_e(plan)}</td><td class='wrap'>{_e(d.statement)}</td></tr>"
        )
    cols = ("variant", "val bpb ± SE", "train FLOPs", "serve FLOPs", "lifetime")
    head = ["device", *(f"{w}: {c}" for w in ("small", "big+compress") for c in cols)]
    head += ["law: scratch model for the target", "verdict (uncertainty)"]
    points = [
        "<tr>"
        + _td(p.variant_id)
        + _td(loss_text(p.validation_bpb, p.validation_se_bpb))
        + _td(p.training_flops.total, "{:.3g}")
        + _td(p.scratch_same_inference_cost.loss_bpb_at_same_compute, "{:.4f}")
        + _td(p.scratch_same_inference_cost.compute_to_target, "{:.3g}")
        + _td(_twin_loss(p.scratch_twin_measured))
        + "</tr>"
        for p in rt.points
    ]
    p_head = ["frontier variant", "val bpb ± SE", "training FLOPs (all parts)", "law: scratch at same N and compute"]
    p_head += ["law: scratch compute to target", "measured scratch twin (val bpb ± SE)"]
    return (
        _route_pairs(rt)
        + f'<p class="note">Lifetime = training + serving {_fmt(rt.served_tokens, "{:.3g}")} tokens (2·N FLOPs per '
        "token; on a device with an energy figure, kWh: training on the planner's accelerator + predicted device "
        f"energy, its interval from the predicted decode interval). {_e(rt.rules.training)}.</p>"
        + _table(head, rows)
        + _table(p_head, points)
    )


def _route_pairs(rt: Routes) -> str:
    """Every compressed variant against the uncompressed frontier at equal cost, per cost axis."""
    rows = []
    for p in rt.pairs or []:
        matched = "–" if p.status != "ok" else f"{p.weight_lower:.2f}·{p.lower} + {1 - p.weight_lower:.2f}·{p.upper}"
        delta = "–"  # out of range, or no interval: the statement says why; never a bare point
        if p.delta_low is not None and p.delta_high is not None:
            delta = f"{p.delta_bpb:+.4f} [{p.delta_low:+.4f}, {p.delta_high:+.4f}]"
        rows.append(
            f"<tr>{_td(p.variant_id)}{_td(matched)}{_td(p.axis_label)}{_td(delta)}"
            + _td(p.training_flops_ratio, "{:.2f}×")
            + f"<td>{_e(p.verdict)}</td><td class='wrap'>{_e(p.statement)}</td></tr>"
        )
    head = ["compressed variant", "matched uncompressed (w·lower + (1−w)·upper)", "cost axis"]
    head += ["Δ val bpb [95%]", "Δ training compute (×)", "verdict", "statement"]
    return (
        '<p class="note">Train big and compress, against training the smaller model directly: each compressed or '
        "distilled variant beside the baseline-recipe frontier interpolated linearly in log cost, at its own cost "
        "(no extrapolation). Δ &lt; 0: the compressed route loses less; a verdict only when the interval excludes "
        "0. Between a variant and its own parent the FLOPs per token are equal by construction (2·N either way): "
        "no finding.</p>" + _table(head, rows)
    )
