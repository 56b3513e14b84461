"""The report shows, for every profiled variant, its time share by op type and its decode efficiency."""

from __future__ import annotations

import handmade_results as handmade

from edgescale.report.analysis import analyse
from edgescale.report.html import render
from edgescale.report.summary import summary_text


def _phase(ops: dict[str, float]) -> dict:
    total = sum(ops.values())
    return {
        "share_by_op": {k: v / total for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
        "kernel_us_by_op": ops,
        "nodes_by_provider": {"CPUExecutionProvider": 40},
        "nodes_run": 40,
        "run_us": 1.5 * total,
    }


def _profiled(vid: str, ops: dict[str, float], efficiency: float, ms: float) -> dict:
    v = handmade.variant(vid, n=20_000, val=2.0, decode={"host": ms})
    v["latency"]["host"] |= {
        "profile": {"prefill": _phase(ops), "decode": _phase(ops), "graph_nodes": 40},
        "decode_limit": {
            "weight_bytes": 1e6, "kv_bytes": 0, "bandwidth_gbps": 25.0, "bandwidth_source": "probe: numpy copy",
            "limit_ms": efficiency * ms, "decode_ms_p50": ms, "efficiency": efficiency,
            "non_weight_us_per_layer": 123.0,
        },
    }  # fmt: skip
    return v


def test_every_variant_shows_its_shares_and_efficiency():
    variants = [
        _profiled("s/fp32", {"MatMul": 70.0, "Add": 20.0, "Concat": 10.0}, 0.87, 1.0),
        _profiled("s/int4", {"MatMulNBits": 46.0, "Concat": 13.0, "Transpose": 41.0}, 0.31, 0.5),
    ]
    res = handmade.typed(handmade.results(variants))
    html, md = render(res, analyse(res), {}), summary_text(res, analyse(res))
    for text in (html, md):
        assert "MatMul 70% · Add 20% · Concat 10%" in text
        assert "MatMulNBits 46% · Transpose 41% · Concat 13%" in text
        assert "0.87 of the limit (25.0 GB/s)" in text and "0.31 of the limit (25.0 GB/s)" in text
        assert "probe: numpy copy" in text
    assert "<h3>Where the time goes</h3>" in html and "40 (CPU 40)" in html


def test_results_without_a_profile_show_no_table():
    res = handmade.typed(handmade.results([handmade.variant("s/fp32", n=20_000, val=2.0, decode={"host": 1.0})]))
    assert "Where the time goes" not in render(res, analyse(res), {})
    assert "Where the time goes" not in summary_text(res, analyse(res))
