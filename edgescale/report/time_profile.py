"""Where each variant's host time goes: the op types' shares of one profiled decode and prefill
step, the node count, and the decode step against the bandwidth limit (``latency.host.profile``
and ``latency.host.decode_limit``, :mod:`edgescale.bench.profile`), in HTML and markdown.
"""

from __future__ import annotations

from edgescale.report.html_parts import _e, _fmt, _table, _td
from edgescale.results.profile_schema import DecodeLimit, HostProfile, ProfilePhase
from edgescale.results.schema import Results, Variant

NOTE = (
    '<p class="note">Shares of kernel time per op type in one decode step (at the decode context) and one '
    "prefill, profiled with onnxruntime's profiler on a second session after the timed loop. The profiler "
    "adds a cost per node, so the shares are the headline, not its times. Nodes: nodes of the optimized "
    "graph (execution providers that ran them). Decode efficiency = (weight + KV bytes) / bandwidth over the "
    "measured decode p50 (1 = at the bandwidth limit); non-weight µs/layer = (p50 − bytes / bandwidth) / "
    "layers: the time per layer that is not streaming weights (dispatch, attention, quantizing activations, "
    "KV copies).</p>"
)


def _parts(v: Variant) -> tuple[HostProfile | None, DecodeLimit | None]:
    host = v.latency.get("host")
    return getattr(host, "profile", None), getattr(host, "decode_limit", None)


def shares_text(phase: ProfilePhase | None, n: int = 3) -> str:
    """The top ``n`` op types by share of kernel time: "MatMulNBits 46% · Concat 13% · Transpose 13%"."""
    if phase is None:
        return "–"
    return " · ".join(f"{op} {share:.0%}" for op, share in list(phase.share_by_op.items())[:n]) or "–"


def efficiency_text(lim: DecodeLimit | None) -> str:
    return "–" if lim is None else f"{lim.efficiency:.2f} of the limit ({lim.bandwidth_gbps:.1f} GB/s)"


def _providers(prof: HostProfile) -> str:
    return ", ".join(f"{ep.removesuffix('ExecutionProvider')} {n}" for ep, n in prof.decode.nodes_by_provider.items())


def _row(v: Variant) -> str:
    prof, lim = _parts(v)
    cells = [
        _td(v.variant_id),
        _td(v.recipe),
        _td(shares_text(prof.decode if prof else None)),
        _td(shares_text(prof.prefill if prof else None)),
        _td(f"{prof.graph_nodes} ({_providers(prof)})" if prof else None),
        _td(efficiency_text(lim)),
        _td(lim.non_weight_us_per_layer if lim else None, "{:.0f}"),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def table(results: Results) -> str:
    """The HTML table, one row per variant; "" when no variant was profiled (older results)."""
    if not any(_parts(v)[0] for v in results.variants):
        return ""
    sources = sorted({lim.bandwidth_source for v in results.variants if (lim := _parts(v)[1])})
    headers = ["variant", "recipe", "decode: time share by op", "prefill: time share by op", "nodes"]
    headers += ["decode efficiency", "non-weight µs/layer"]
    source = f'<p class="note">Bandwidth: {_e("; ".join(sources))}.</p>' if sources else ""
    return "<h3>Where the time goes</h3>" + _table(headers, map(_row, results.variants)) + NOTE + source


def lines(results: Results) -> list[str]:
    """The markdown section of ``summary.md``; [] when no variant was profiled."""
    rows = [(v, *_parts(v)) for v in results.variants]
    if not any(p for _, p, _ in rows):
        return []
    out = ["", "## Where the time goes (decode step, host)", ""]
    out += [
        "| variant | time share by op | nodes | decode efficiency | non-weight µs/layer |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for v, prof, lim in rows:
        per_layer = _fmt(lim.non_weight_us_per_layer if lim else None, "{:.0f}")
        nodes = prof.graph_nodes if prof else "–"
        cells = [v.variant_id, shares_text(prof.decode if prof else None), nodes, efficiency_text(lim), per_layer]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    sources = sorted({lim.bandwidth_source for _, _, lim in rows if lim})
    return out + (
        ["", f"Bandwidth: {'; '.join(sources)}. Shares, not times: the profiler adds a cost per node."]
        if sources
        else []
    )
