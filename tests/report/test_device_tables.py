"""One prediction table per device in report.html and summary.md: decode and prefill with their
intervals, the anchors behind them and an "extrapolated" label (issue 19, part 5)."""

from report_fixtures import full_results

from edgescale.report.analysis import analyse
from edgescale.report.html import render
from edgescale.report.summary import summary_text
from edgescale.results import parse_results

FAR = "Llama 3 8B Q4_0, -5.90 dec, +27.5 bits"


def _with_support(results: dict) -> dict:
    """The smallest fp32 variant extrapolated on rpi5-8gb (×8 interval), the others inside its anchors."""
    for v in results["variants"]:
        lat = v["latency"]["rpi5-8gb"]
        tiny = v["variant_id"] == "s0/fp32"
        ms, factor = lat["decode_ms"], 8.0 if tiny else 1.25
        lat |= {
            "decode_ms_low": ms / factor,
            "decode_ms_high": ms * factor,
            "prefill_ms_low": lat["prefill_ms"] / factor,
            "prefill_ms_high": lat["prefill_ms"] * factor,
            "anchors": 3,
            "nearest_anchor": FAR if tiny else "Llama 2 7B Q4_0, -0.10 dec, +0 bits",
            "extrapolated": tiny,
            "interval": "2 x RMS log error over 2 validation decode anchor(s); extrapolated ..."
            if tiny
            else "2 x RMS log error over 2 validation decode anchor(s); inside the range of 3 anchor(s): not widened",
        }
    return results


def _page(results: dict) -> tuple[str, str]:
    typed = parse_results(results)
    analysis = analyse(typed)
    return render(typed, analysis, {}), summary_text(typed, analysis)


def test_the_report_has_one_prediction_table_per_device_with_the_extrapolated_label():
    results = _with_support(full_results())
    text, summary = _page(results)
    latency = text[text.index('id="latency"') :]
    latency = latency[: latency.index("</section>")]
    assert latency.count("<h4>rpi5-8gb</h4>") == 1 and "anchors" in latency and "nearest anchor" in latency
    tiny = next(v for v in results["variants"] if v["variant_id"] == "s0/fp32")["latency"]["rpi5-8gb"]
    row = latency[latency.index("<td>s0/fp32</td>") :]
    row = row[: row.index("</tr>")]
    d, p = tiny["decode_ms"], tiny["prefill_ms"]
    assert f"{d:.3g} [{d / 8:.3g}, {d * 8:.3g}]" in row and f"{p:.3g} [{p / 8:.3g}, {p * 8:.3g}]" in row
    assert '<td class="flag">extrapolated (×8)</td>' in row and FAR in row
    assert latency.count("extrapolated (×") == 1 and "inside anchors" in latency
    assert "interval base: <li>2 x RMS log error over 2 validation decode anchor(s)</li>" in latency

    lines = summary.splitlines()
    start = lines.index("### rpi5-8gb")
    table = lines[start + 2 : lines.index("", start + 2)]
    assert table[0].startswith("| variant | recipe | decode ms [low, high] | prefill ms [low, high] | anchors")
    s0 = next(line for line in table if line.startswith("| s0/fp32 |"))
    assert s0.endswith("| 3 | Llama 3 8B Q4_0, -5.90 dec, +27.5 bits | extrapolated (×8) |")
    assert len(table) == 2 + len(results["variants"])  # header, rule, one row per variant
    assert "## Predicted on devices (one table per device)" in summary and "host" not in table[2]


def test_results_written_before_anchor_support_still_render():
    text, summary = _page(full_results())  # no anchors / extrapolated / prefill interval fields
    latency = text[text.index('id="latency"') :]
    assert "<h4>rpi5-8gb</h4>" in latency and "extrapolated" not in latency[: latency.index("</section>")]
    s0 = next(line for line in summary.splitlines() if line.startswith("| s0/fp32 |"))
    assert s0.endswith("| – | – | – |")
