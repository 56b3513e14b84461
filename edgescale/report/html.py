"""``report.html``: one self-contained page (inline CSS, plots as data URIs, no scripts).

Built from ``results.json`` alone, so it can be rebuilt for old runs. Every piece of text
from the results goes through ``html.escape``; missing optional parts show as "–".
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from html import escape
from typing import Any

from edgescale.progress import loss_text
from edgescale.report import device_tables, sections, time_profile
from edgescale.report.frontier import frontier
from edgescale.report.html_parts import _e, _fmt, _table, _td
from edgescale.results.analysis_schema import Analysis
from edgescale.results.schema import HostLatency, PlanForTarget, Results, Size, Variant

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.flag{color:#a60;font-weight:600}.bad{color:#b00;font-weight:600}.ok{color:#070}
.note{color:#555;font-size:13px}img{max-width:100%;display:block;margin:.8em 0}code{font-size:12px}
h3{font-size:1.02em;margin-top:1.4em}td.wrap{white-space:normal;text-align:left;min-width:16em;max-width:48em}
.answer{background:#f3f8f3;border:1px solid #bcd9bc;border-radius:6px;padding:.2em 1.2em .6em;margin:1em 0}
.answer h2{border:none;margin-top:.6em}.answer table{font-size:14px}.answer td{background:#fff}
nav{margin:1em 0;font-size:13px}nav a{color:#246;text-decoration:none}nav a:hover{text-decoration:underline}
"""
_SPEEDUP = "decode_speedup_vs_"


def _host(variant: Variant) -> HostLatency | None:
    host = variant.latency.get("host")
    return host if isinstance(host, HostLatency) else None


def _baseline(variants: list[Variant]) -> str | None:
    """The recipe speed-ups are measured against, named by the ``decode_speedup_vs_<recipe>`` key."""
    for v in variants:
        host = _host(v)
        for base in host.speedups("decode") if host else ():
            return base
    return None


def _speedup(host: HostLatency | None) -> str:
    if not host:
        return "<td>–</td>"
    sp = next(iter(host.speedups("decode").values()), None)
    if not sp:
        return "<td>baseline</td>"
    text = _e(f"{sp.speedup:.2f}× [{sp.low:.2f}, {sp.high:.2f}]")
    if sp.slower:
        return f'<td>{text} <span class="bad">slower</span></td>'
    if sp.within_noise:
        return f'<td>{text} <span class="flag">within noise</span></td>'
    return f"<td>{text}</td>"


def _yes_no(value: bool | None) -> str:
    return {True: '<span class="ok">yes</span>', False: '<span class="bad">no</span>'}.get(value, "not known")


def _shape(s: Size) -> str:
    if not s.n_layer:
        return s.model or "?"
    return f"{s.n_layer} × {_or_q(s.n_embd)} ({_or_q(s.n_head)} heads)"


def _or_q(x: Any) -> Any:
    return "?" if x is None else x


def _sizes(results: Results) -> str:
    sizes, variants = results.sizes, results.variants
    base = _baseline(variants) or (variants[0].recipe if variants else None)
    own = {v.size: _loss(v, "validation") for v in variants if v.recipe == base}
    eq = next((s.equal_tokens for s in sizes if s.equal_tokens), None)
    rows = [
        "<tr>"
        + _td(s.size)
        + _td(_shape(s))
        + _td(s.params_non_embedding, "{:,}")
        + _td(s.params_total, "{:,}")
        + _td(s.train_tokens, "{:,}")
        + _td(s.tokens_rule)
        + _td(own.get(s.size))
        + _td(s.val_bpb_at_equal_tokens, "{:.4f}")
        + "</tr>"
        for s in sizes
    ]
    headers = ["size", "layers × width (heads)", "N (non-emb.)", "params total", "train tokens", "token rule"]
    headers += [f"val bpb ± SE, own budget ({base})", f"val bpb @ {eq:,} tokens" if eq else "val bpb @ equal tokens"]
    falls = results.loss_falls_with_size
    verdict = (
        f"<p>Loss falls strictly with size at each size's own training budget: {_yes_no(falls.at_own_budget)}; "
        f"at equal training tokens: {_yes_no(falls.at_equal_tokens)}.</p>"
        if falls
        else ""
    )
    note = (
        '<p class="note">Two comparisons: at each size\'s own training budget (the '
        f"{_e(base)} variant's validation loss, measured on its ONNX file) and at an equal number of training "
        "tokens (from the validation curve during training, all sizes at the same learning rate).</p>"
    )
    return note + _table(headers, rows) + verdict


def _loss(v: Variant, split: str) -> str:
    """``split``'s loss with its standard error, "–" where the split was not scored."""
    s = v.loss.get(split)
    return loss_text(None, None) if s is None else loss_text(s.bits_per_byte, s.se_bpb)


def _variant_row(v: Variant, on_front: bool) -> str:
    host, cost = _host(v), v.cost
    cells = [
        _td(v.variant_id),
        _td(v.recipe),
        _td(v.params_non_embedding, "{:,}"),
        _td(v.file_bytes / 1024, "{:,.1f}"),
        _td(cost.weight_bytes, "{:,}"),
        _td(cost.bytes_per_decoded_token, "{:,}"),
        _td(cost.flops_per_token, "{:,.0f}"),
        _td(_loss(v, "validation")),
        _td(_loss(v, "test")),
        *(_td(getattr(host, f"{k}_ms_{q}", None), "{:.3f}") for k in ("prefill", "decode") for q in ("p50", "p90")),
        _speedup(host),
        '<td class="ok">✓</td>' if on_front else "<td></td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _variants(results: Results) -> str:
    variants = results.variants
    on_bytes = [p.on_front for p in frontier(variants, "bytes_per_decoded_token")]
    ctx = next((v.cost.decode_context for v in variants if v.cost.decode_context), "?")
    headers = ["variant", "recipe", "N (non-emb.)", "file KiB", "weight bytes", f"bytes/decoded tok @ ctx {ctx}"]
    headers += ["FLOPs/tok", "val bpb ± SE", "test bpb ± SE", "prefill p50 ms", "p90", "decode p50 ms", "p90"]
    headers += [f"decode speed-up vs {_baseline(variants) or 'baseline'} (95% CI)", "front"]
    return _table(headers, (_variant_row(v, f) for v, f in zip(variants, on_bytes, strict=True)))


def _failed(results: Results) -> str:
    """The variants that failed a step or a check, with their reasons: left out of everything above."""
    note = (
        '<p class="note">These variants have no results: each failed at the stage named, and is left out '
        "of the frontiers, picks, comparisons, degradation laws and routes. A rerun of the study retries them.</p>"
    )
    rows = (
        f'<tr>{_td(f.variant_id)}{_td(f.failed_stage)}{_td(f.error_type)}<td class="wrap bad">{_e(f.reason)}</td></tr>'
        for f in results.failed_variants
    )
    return note + _table(["variant", "failed at", "error", "reason"], rows)


def _latency_note(results: Results) -> str:
    m = results.measurement
    hosts = [h for h in map(_host, results.variants) if h]
    how = ", ".join(sorted({h.latency_source for h in hosts})) or "none recorded"
    return (
        '<p class="note">Every loss is computed by running the variant\'s ONNX file with onnxruntime on held-out '
        f"text (bits per byte). Host latencies are <b>measured on this host</b> ({_e(how)}; prefill at "
        f"{_fmt(m.prompt_len)} tokens, one decode step at context {_fmt(m.decode_context)}, "
        f"{_fmt(m.threads)} threads, {_fmt(m.repeats)} interleaved repeats); every other device's "
        "latency is <i>predicted</i> from its profile, never measured.</p>"
    )


def _plan(plan: PlanForTarget) -> str:
    if plan.status != "ok":
        head = f"<p><b>Plan for the target {plan.loss_target_bpb:g} bpb:</b> "
        return head + f'<span class="bad">{escape(plan.status)}</span> — {escape(plan.reason or "")}</p>'
    sh = plan.shape
    return (
        f"<p><b>Plan for the target {plan.loss_target_bpb:g} bpb</b> (fitted law, minimum training compute): "
        f"N = {plan.n_params:,.0f} total parameters ({sh.n_layer}×{sh.n_embd}, {sh.n_head} heads), "
        f"D = {plan.n_tokens:,.0f} tokens ({plan.tokens_per_param:.1f} per parameter), "
        f"C = {plan.compute_flops:.3g} FLOPs, predicted {plan.predicted_loss_bpb:.4f} bpb"
        + (f" from the law {escape(plan.law or '')}" if plan.form else "")
        + (f"; {plan.epochs:.3g} epochs of the train split ({escape(plan.data_rule or '')})" if plan.epochs else "")
        + ". "
        "An extrapolation: trust it only as far as the intervals above allow.</p>"
        + (f'<p class="bad">Not reliable: {escape(plan.caveat or "")}</p>' if plan.reliable is False else "")
    )


def _num(x: float | None) -> str:
    return "∞" if x is None else f"{x:.4g}"


def _scaling(results: Results, images: Mapping[str, bytes | None]) -> str:
    sc = results.scaling
    if sc.status != "fitted":
        return f"<h3>Scaling fit</h3><p>{escape(sc.reason or 'not fitted')}</p>"
    law = sc.law
    rows = []
    for k in ("E", "A", "B", "alpha", "beta", "a"):
        value = getattr(law, k)
        if value is None:
            continue
        lo, hi = law.ci.get(k, (None, None))
        flag = law.unidentified.get(k)
        status = f'<span class="flag">not identified: {escape(flag)}</span>' if flag else '<span class="ok">ok</span>'
        interval = f"[{_num(lo)}, {_num(hi)}]"
        rows.append(f"<tr>{_td(k)}{_td(value, '{:.4g}')}{_td(interval)}<td>{status}</td></tr>")
    warn = "".join(f'<p class="flag">{escape(w)}</p>' for w in law.warnings)
    warn += (  # the bootstrap behind the intervals, dropped refits included (they would narrow them)
        f"<p>Form {escape(law.form or 'full')}; bootstrap {law.boot_n} refits resampling whole "
        f"{escape(law.boot_unit or 'point')}s, {law.boot_dropped} dropped.</p>"
        if law.boot_n
        else ""
    )
    if sc.reduced is not None:
        r, weak = sc.reduced, ", ".join(sorted(sc.reduced.unidentified)) or "none"
        warn += (
            f"<p>Reduced form refitted ({escape(r.form or '')}): α = β = {r.alpha:.3g} "
            f"[{_num(r.ci['alpha'][0])}, {_num(r.ci['alpha'][1])}], E = {r.E:.4g} bpb; unidentified: {escape(weak)}; "
            f"bootstrap {r.boot_n} refits, {r.boot_dropped} dropped.</p>"
        )
    plan = _plan(sc.plan_for_target) if sc.plan_for_target else ""
    return f"""<h3>Scaling law fitted to the family</h3>
<p class="note">L(N, D) = E + A/N^α + B/D^β fitted (Chinchilla approach 3: Huber δ=1e-3 on log residuals, L-BFGS
from a grid, {len(sc.points)} cooled checkpoints of warmup-stable-decay runs, N = total parameters) with
bootstrap 95% intervals; a = β/(α+β) is the allocation exponent (N_opt ∝ C^a). Loss in bits per byte.</p>
{_table(["constant", "value", "95% interval", "identified"], rows)}
{warn}{plan}
{_figure(images, "scaling", "scaling law fit with its 95% band")}"""


def _distillation(results: Results) -> str:
    kd = results.distillation
    if not kd:
        return ""
    rows = [
        "<tr>"
        + _td(p.student)
        + _td(p.scratch)
        + _td(p.tokens, "{:,}")
        + _td(p.val_bpb_distilled, "{:.4f}")
        + _td(p.val_bpb_scratch, "{:.4f}")
        + _td(p.val_bpb_distilled - p.val_bpb_scratch, "{:+.4f}")
        + _td(p.test_bpb_distilled, "{:.4f}")
        + _td(p.test_bpb_scratch, "{:.4f}")
        + "</tr>"
        for p in kd.pairs
    ]
    headers = [
        "student",
        "scratch twin",
        "tokens",
        "val bpb (distilled)",
        "val bpb (scratch)",
        "Δ val",
        "test bpb (distilled)",
        "test bpb (scratch)",
    ]
    return (
        f'<p class="note">Students distilled from {_e(kd.teacher)} '
        f"(val {kd.teacher_val_bpb:.4f} bpb; α = {kd.alpha:g}, T = {kd.temperature:g}) and the same "
        "shapes trained from scratch for the same tokens; both losses measured on their ONNX files (seed "
        "0; a difference from one seed is not an effect).</p>" + _table(headers, rows) + _distillation_seeds(kd)
    )


def _distillation_seeds(kd) -> str:
    """distilled − scratch over seeds, per twin and split, with the 95% Welch interval."""
    rows = [
        "<tr>"
        + _td(p.student)
        + _td(d.twin.replace("_", " "))
        + _td(d.split)
        + _td(f"{d.mean:+.4f}" + (f" [{d.lo:+.4f}, {d.hi:+.4f}]" if d.lo is not None else " (no interval)"))
        + _td(f"{d.n_distilled} / {d.n_scratch}")
        + _td(p.equal_compute_tokens if d.twin == "equal_compute" else p.tokens, "{:,}")
        + "</tr>"
        for p in kd.pairs
        for d in p.deltas
    ]
    if not rows:
        return ""
    notes = [f"{_e(p.student)}: {_e(p.equal_compute_note)}" for p in kd.pairs if p.equal_compute_note]
    scorer = next((p.scorer for p in kd.pairs if p.scorer), "")
    return (
        '<p class="note">Distilled − scratch in bits per byte over seeds (negative: distillation helps), '
        "mean with a 95% Welch interval (mean ± t·SE); the equal-compute twin trains on the KD run's FLOPs "
        f"(6·N<sub>s</sub>·D + 2·N<sub>t</sub>·D). Scored by the {_e(scorer)}. {'; '.join(notes)}</p>"
        + _table(["student", "scratch twin", "split", "Δ bpb [95%]", "seeds (KD / scratch)", "twin tokens"], rows)
    )


def _load(start: Any, end: Any) -> str:
    """Load averages (1/5/15 min) at the start of measuring and, where recorded, at its end."""
    if not start:
        return "load average not recorded"
    text = "load average " + " / ".join(f"{x:.2f}" for x in start)
    if end:
        text += " → " + " / ".join(f"{x:.2f}" for x in end) + " (1/5/15 min, start → end)"
    else:
        text += " (1/5/15 min, at start)"
    return escape(text)


def _header(results: Results) -> str:
    p, mach = results.protocol, results.machine
    protocol = (
        f"split <b>{_fmt(p.split)}</b> (sha256 <code>{_fmt(p.split_sha256)}</code>), "
        f"context {_fmt(p.context_length)}, stride {_fmt(p.stride)}, "
        f"{_fmt(p.max_bytes, '{:,}')} text bytes, batch {_fmt(p.batch_size)}; "
        f"final answer on <b>{_fmt(p.final_split or 'test')}</b>"
    )
    machine = (
        f"{_fmt(mach.get('cpu_model', '?'))}, {_fmt(mach.get('threads', '?'))} threads, "
        f"{_load(mach.get('load_avg_start'), mach.get('load_avg_end'))}"
    )
    if mach.get("onnxruntime"):
        machine += f", onnxruntime {_e(mach['onnxruntime'])}"
    return f"{_latency_note(results)}\n<p>Evaluation protocol: {protocol}.</p>\n<p>Machine: {machine}.</p>"


_NOTE_VARIANTS = """<p class="note">Speed-up = baseline p50 / variant p50 of the same size, paired bootstrap 95%
interval over interleaved repeats; "within noise" when the interval reaches into the noise floor that the
measurement's A/A control (the baseline timed twice) sets, "slower" when all of it lies below that band.
Front ✓: on the Pareto front of validation loss vs bytes moved per decoded token.</p>"""


def _figure(images: Mapping[str, bytes | None], name: str, alt: str) -> str:
    data = images.get(name)
    if not data:
        return f'<p class="note">No {escape(alt)} figure: the run has nothing to draw for it.</p>'
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def render(
    results: Results,
    analysis: Analysis,
    images: Mapping[str, bytes | None],
    extra: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """The whole page as a string: the answer first, then the evidence behind it.

    ``analysis`` is :func:`edgescale.report.analysis.analyse` of ``results``; ``images`` maps
    figure names (``edgescale.report.build._figures``) to PNG bytes, embedded as data URIs.
    ``extra``: more (id, title, body html) sections, placed before the protocol.
    """
    name = _e(results.study)
    parts = [
        ("frontier", "Frontier per device: loss vs inference cost",
         _figure(images, "frontier_devices", "loss versus decode latency per device")
         + _figure(images, "frontier", "loss versus device-independent costs")
         + sections.frontier_table(analysis)),
        ("compare", "Recipes compared on the same model",
         _figure(images, "compare", "recipe comparison") + sections.compare(analysis.compare)),
        ("degradation", "Compression degradation law",
         _figure(images, "degradation", "degradation law") + sections.degradation(analysis.degradation or {})),
        ("routes", "Train small, or train big and compress?", sections.routes(analysis.routes)),
        ("latency", "Latency: measured on this host, predicted on devices",
         _latency_note(results) + _figure(images, "latency", "latency measured versus predicted")
         + device_tables.html(results) + time_profile.table(results)),
        ("plan", "Training plan",
         _figure(images, "plan", "training plan") + _sizes(results) + _scaling(results, images)),
        ("curves", "Training loss curves", _figure(images, "loss_curves", "training loss curves")),
        ("variants", "Every variant", _variants(results) + _NOTE_VARIANTS),
    ]  # fmt: skip
    if results.failed_variants:  # first: a reader must know what is missing before reading the rest
        parts.insert(0, ("failed", f"Failed variants: {len(results.failed_variants)}", _failed(results)))
    kd = _distillation(results)
    if kd:
        parts.append(("distillation", "Distillation", kd))
    parts += extra  # (id, title, html) sections from outside results.json (edgescale.report.overtrained)
    parts.append(("protocol", "How it was measured", _header(results)))
    nav = " · ".join(f'<a href="#{i}">{escape(t.split(":")[0])}</a>' for i, t, _ in parts)
    body = "\n".join(_section(*p) for p in parts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgescale · {name}</title><style>{_CSS}</style></head>
<body>
<h1>edgescale · {name}</h1>
{sections.answer(results, analysis)}
<nav>{nav}</nav>
{body}
</body></html>
"""
