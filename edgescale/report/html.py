"""``report.html``: one self-contained page (inline CSS, the plot as a data URI, no scripts).

Built from ``results.json`` alone, so it can be rebuilt for old runs.
"""

from __future__ import annotations

import base64
import tempfile
from html import escape
from pathlib import Path

from edgescale.atomic import write_bytes
from edgescale.report.frontier import frontier

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.flag{color:#a60;font-weight:600}.bad{color:#b00;font-weight:600}.ok{color:#070}
.note{color:#555;font-size:13px}img{max-width:100%}
"""


def _td(value, fmt: str = "{}") -> str:
    if value is None:
        return "<td>–</td>"
    return f"<td>{escape(fmt.format(value))}</td>"


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _speedup(host: dict) -> str:
    sp = next((v for k, v in host.items() if k.startswith("decode_speedup_vs_")), None)
    if not sp:
        return "<td>baseline</td>"
    text = f"{sp['speedup']:.2f}× [{sp['low']:.2f}, {sp['high']:.2f}]"
    if sp["slower"]:
        return f'<td>{escape(text)} <span class="bad">slower</span></td>'
    if sp["within_noise"]:
        return f'<td>{escape(text)} <span class="flag">within noise</span></td>'
    return f"<td>{escape(text)}</td>"


def _sizes(results: dict) -> str:
    rows = []
    for s in results["sizes"]:
        rows.append(
            "<tr>"
            + _td(s["size"])
            + _td(f"{s['n_layer']}×{s['n_embd']}, {s['n_head']} heads")
            + _td(s["params_non_embedding"], "{:,}")
            + _td(s["params_total"], "{:,}")
            + _td(s["train_tokens"], "{:,}")
            + _td(s.get("tokens_rule"))
            + _td(s.get("val_bpb_at_equal_tokens"), "{:.4f}")
            + "</tr>"
        )
    eq = results["sizes"][0].get("equal_tokens", 0) if results["sizes"] else 0
    headers = ["size", "shape", "N (non-emb.)", "params total", "train tokens", "token rule", f"val bpb @ {eq:,} tok"]
    return _table(headers, rows)


def _variants(results: dict) -> str:
    on_bytes = {p.variant_id for p in frontier(results["variants"], "bytes_per_decoded_token") if p.on_front}
    rows = []
    for v in results["variants"]:
        host = v.get("latency", {}).get("host", {})
        c = v["cost"]
        rows.append(
            "<tr>"
            + _td(v["variant_id"])
            + _td(v["params_non_embedding"], "{:,}")
            + _td(v["file_bytes"] / 1024, "{:,.0f}")
            + _td(c["weight_bytes"], "{:,}")
            + _td(c["bytes_per_decoded_token"], "{:,}")
            + _td(c["flops_per_token"], "{:,.0f}")
            + _td(v["loss"]["validation"]["bits_per_byte"], "{:.4f}")
            + _td(v["loss"].get("test", {}).get("bits_per_byte"), "{:.4f}")
            + _td(host.get("prefill_ms_p50"), "{:.3f}")
            + _td(host.get("prefill_ms_p90"), "{:.3f}")
            + _td(host.get("decode_ms_p50"), "{:.3f}")
            + _td(host.get("decode_ms_p90"), "{:.3f}")
            + _speedup(host)
            + ('<td class="ok">✓</td>' if v["variant_id"] in on_bytes else "<td></td>")
            + "</tr>"
        )
    headers = [
        "variant",
        "N",
        "file KiB",
        "weight bytes",
        "bytes/decoded tok",
        "FLOPs/tok",
        "val bpb",
        "test bpb",
        "prefill p50 ms",
        "p90",
        "decode p50 ms",
        "p90",
        "decode speed-up vs fp32 (95% CI)",
        "front",
    ]
    return _table(headers, rows)


def _png(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _plan(plan: dict) -> str:
    if plan["status"] != "ok":
        head = f"<p><b>Plan for the target {plan['target_bpb']:g} bpb:</b> "
        return head + f'<span class="bad">infeasible</span> — {escape(plan["reason"])}</p>'
    sh = plan["shape"]
    return (
        f"<p><b>Plan for the target {plan['target_bpb']:g} bpb</b> (fitted law, minimum training compute): "
        f"N = {plan['n_params']:,.0f} total parameters ({sh['n_layer']}×{sh['d_model']}, {sh['n_head']} heads), "
        f"D = {plan['n_tokens']:,.0f} tokens ({plan['tokens_per_param']:.1f} per parameter), "
        f"C = {plan['compute_flops']:.3g} FLOPs, predicted {plan['predicted_loss_bpb']:.4f} bpb. "
        "An extrapolation: trust it only as far as the intervals above allow.</p>"
        + (f'<p class="bad">Not reliable: {escape(plan["caveat"])}</p>' if not plan.get("reliable", True) else "")
    )


def _num(x: float | None) -> str:
    return "∞" if x is None else f"{x:.4g}"


def _scaling(results: dict, run_dir: Path) -> str:
    sc = results.get("scaling")
    if not sc:
        return ""
    if sc.get("status") != "fitted":
        return f"<h2>Scaling fit</h2><p>{escape(sc.get('reason', 'not fitted'))}</p>"
    law = sc["law"]
    rows = []
    for k in ("E", "A", "B", "alpha", "beta", "a"):
        lo, hi = law["ci"][k]
        flag = law["unidentified"].get(k)
        status = f'<span class="flag">not identified: {escape(flag)}</span>' if flag else '<span class="ok">ok</span>'
        interval = f"[{_num(lo)}, {_num(hi)}]"
        rows.append(f"<tr>{_td(k)}{_td(law[k], '{:.4g}')}{_td(interval)}<td>{status}</td></tr>")
    warn = "".join(f'<p class="flag">{escape(w)}</p>' for w in law.get("warnings", []))
    plan = _plan(sc["plan_for_target"]) if sc.get("plan_for_target") else ""
    return f"""<h2>Scaling fit (training side)</h2>
<p class="note">L(N, D) = E + A/N^α + B/D^β fitted (Chinchilla approach 3: Huber δ=1e-3 on log residuals, L-BFGS
from a grid, {len(sc["points"])} cooled checkpoints of warmup-stable-decay runs, N = total parameters) with
bootstrap 95% intervals; a = β/(α+β) is the allocation exponent (N_opt ∝ C^a). Loss in bits per byte.</p>
{_table(["constant", "value", "95% interval", "identified"], rows)}
{warn}{plan}
{_png(Path(run_dir) / "scaling.png", "scaling fit")}"""


def _image(results: dict, run_dir: Path) -> str:
    png = Path(run_dir) / "frontier.png"
    if not png.exists():
        from edgescale.report.plots import plot_frontier

        with tempfile.TemporaryDirectory() as d:
            data = plot_frontier(results, Path(d) / "frontier.png").read_bytes()
    else:
        data = png.read_bytes()
    return f'<img alt="loss versus inference cost" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _load(values) -> str:
    return escape(" / ".join(f"{x:.2f}" for x in values)) if values else "?"


def render(results: dict, run_dir: Path) -> str:
    p, m, mach = results.get("protocol", {}), results.get("measurement", {}), results.get("machine", {})
    name = escape(str(results["study"]))
    protocol = (
        f"split <b>{escape(str(p.get('split')))}</b> (sha256 {escape(str(p.get('split_sha256', ''))[:16])}…), "
        f"context {p.get('context_length')}, stride {p.get('stride')}, {p.get('max_tokens'):,} tokens, "
        f"batch {p.get('batch_size')}; final answer on <b>{escape(str(p.get('final_split', 'test')))}</b>"
    )
    machine = (
        f"{escape(str(mach.get('cpu_model', '?')))}, {mach.get('threads', '?')} threads, "
        f"load average {_load(mach.get('load_avg_start'))} → {_load(mach.get('load_avg_end'))} (1/5/15 min), "
        f"onnxruntime {escape(str(mach.get('onnxruntime', '?')))}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgescale · {name}</title><style>{_CSS}</style></head>
<body>
<h1>edgescale · {name}</h1>
<p class="note">Every loss is measured by running the variant's ONNX file through onnxruntime on held-out text
(bits per byte). Latencies are <b>measured on this host</b> (prefill at {m.get("prompt_len")} tokens, one decode
step at context {m.get("decode_context")}, {m.get("repeats")} interleaved repeats).</p>
<p>Evaluation protocol: {protocol}.</p>
<p>Machine: {machine}.</p>
{_image(results, run_dir)}
<h2>Sizes</h2>
<p class="note">Loss should fall with size both at each size's own training budget (variants below) and at equal
training tokens (last column, from the validation curve during training).</p>
{_sizes(results)}
<h2>Variants</h2>
{_variants(results)}
<p class="note">Speed-up = fp32 p50 / variant p50 of the same size, paired bootstrap 95% interval over
interleaved repeats; "within noise" when the interval contains 1. Front ✓: on the Pareto front of validation loss
vs bytes per decoded token.</p>
{_scaling(results, run_dir)}
</body></html>
"""


def write_report(results: dict, run_dir: Path, path: Path) -> Path:
    return write_bytes(path, render(results, run_dir).encode("utf-8"))
