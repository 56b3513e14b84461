"""One prediction table per device profile, for ``report.html`` and ``summary.md``.

Per variant: decode and prefill ms with their intervals, the anchors behind them (how many
the device has, and how far the nearest lies in size and bits) and an "extrapolated" label
where the variant lies outside every anchor's range
(:mod:`edgescale.bench.anchor_support`). Results written before these fields show "–".
"""

from __future__ import annotations

from html import escape

from edgescale.report.html_parts import _e, _table, _td
from edgescale.results.schema import PredictedLatency, Results, Variant

HEADERS = ["variant", "recipe", "decode ms [low, high]", "prefill ms [low, high]", "anchors", "nearest anchor", "range"]


def _ms(ms: float | None, lo: float | None, hi: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.3g}" + ("" if lo is None or hi is None else f" [{lo:.3g}, {hi:.3g}]")


def _range(lat: PredictedLatency) -> str:
    """The label: extrapolated (×F, the interval factor high / ms), or inside anchors."""
    if lat.extrapolated is None:
        return "–"
    if not lat.extrapolated:
        return "inside anchors"
    factor = lat.decode_ms_high / lat.decode_ms if lat.decode_ms_high and lat.decode_ms else None
    return "extrapolated" + ("" if factor is None else f" (×{factor:.3g})")


def _cells(v: Variant, lat: PredictedLatency) -> list[str]:
    return [
        v.variant_id,
        v.recipe,
        _ms(lat.decode_ms, lat.decode_ms_low, lat.decode_ms_high),
        _ms(lat.prefill_ms, lat.prefill_ms_low, lat.prefill_ms_high),
        "–" if lat.anchors is None else str(lat.anchors),
        lat.nearest_anchor or "–",
        _range(lat),
    ]


def rows_by_device(results: Results) -> dict[str, list[tuple[Variant, PredictedLatency]]]:
    """Device → its predicted variants, in the results' order; devices sorted by name."""
    out: dict[str, list[tuple[Variant, PredictedLatency]]] = {}
    for v in results.variants:
        for name, lat in v.latency.items():
            if isinstance(lat, PredictedLatency):
                out.setdefault(name, []).append((v, lat))
    return dict(sorted(out.items()))


def _interval_notes(rows: list[tuple[Variant, PredictedLatency]]) -> list[str]:
    """The intervals' bases, once per device (each row's widening is its "range" cell)."""
    return sorted({lat.interval.split("; ")[0] for _, lat in rows if lat.interval})


def html(results: Results) -> str:
    """The "Predicted on devices" part of the latency section: one table per device."""
    by_device = rows_by_device(results)
    if not by_device:
        return ""
    assumed = sorted({a for rows in by_device.values() for _, lat in rows for a in lat.assumed or []})
    parts = [
        '<h3>Predicted on devices</h3><p class="note">Latency <b>predicted</b> (not measured) from each '
        "ONNX graph's nodes with the device profile's roofline; the interval is the device's validation "
        "anchors', widened multiplicatively for each decade of size and each 4 bits per weight outside its "
        "anchors' range. Assumed inputs: "
        f"{_e(', '.join(assumed)) or 'none'}.</p>"
    ]
    for device, rows in by_device.items():
        body = []
        for v, lat in rows:
            cells = _cells(v, lat)
            flag = f'<td class="flag">{_e(cells[-1])}</td>' if lat.extrapolated else _td(cells[-1])
            body.append("<tr>" + "".join(_td(c) for c in cells[:-1]) + flag + "</tr>")
        notes = "".join(f"<li>{escape(n)}</li>" for n in _interval_notes(rows))
        parts.append(f"<h4>{_e(device)}</h4>" + _table(HEADERS, body) + f'<ul class="note">interval base: {notes}</ul>')
    return "".join(parts)


def _md(x: str) -> str:
    return x.replace("|", "\\|").replace("\n", " ")


def md_lines(results: Results) -> list[str]:
    """The same tables for ``summary.md``; empty where nothing was predicted."""
    by_device = rows_by_device(results)
    if not by_device:
        return []
    lines = ["", "## Predicted on devices (one table per device)"]
    for device, rows in by_device.items():
        lines += [
            "",
            f"### {device}",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |",
        ]
        lines += ["| " + " | ".join(_md(c) for c in _cells(v, lat)) + " |" for v, lat in rows]
        lines += ["", *(f"- interval base: {n}" for n in _interval_notes(rows))]
    return lines
