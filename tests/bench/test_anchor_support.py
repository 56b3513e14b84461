"""Anchor support of a device prediction: counts, the nearest anchor, and the interval's widening
outside the anchors' range (issue 19: an interval must widen outside it)."""

import math
from pathlib import Path

import pytest

from edgescale.bench.anchor_fit import anchor_interval
from edgescale.bench.anchor_support import support
from edgescale.bench.graph_predict import predict_on_device
from edgescale.bench.nodes import decode_graph
from edgescale.profiles import Anchor, load_device_file
from edgescale.results.schema import PredictedLatency

RPI5 = Path(__file__).resolve().parents[2] / "devices" / "rpi5-8gb.yaml"


def _anchor(workload: str, params: float, bits: float, model: str) -> Anchor:
    return Anchor(
        workload=workload,
        model=model,
        params=params,
        bits_per_weight=bits,
        tokens_per_s=5.0,
        prompt_len=64 if workload == "prefill" else None,
        runtime="test",
        source="made up for this test",
    )


@pytest.fixture(scope="module")
def device():
    """rpi5 with two calibration anchors (1e9 at 4.5 bits, 1e10 at 8.5 bits) and no validation
    anchors, so the base interval is the assumed ±50% (f = 1.5)."""
    cal = [_anchor("decode", 1e9, 4.5, "A 1B Q4"), _anchor("prefill", 1e10, 8.5, "B 10B Q8")]
    return load_device_file(RPI5).model_copy(update={"calibration": cal, "validation": []})


def test_inside_the_range_the_interval_is_the_base_one(device):
    s = support(device, 3e9, 6.0)
    assert (s.count, s.calibration, s.validation, s.decode, s.prefill) == (2, 2, 0, 1, 1)
    assert not s.extrapolated and s.factor == pytest.approx(1.5) and s.bounds(10.0) == pytest.approx((10 / 1.5, 15))
    # distance to A: log10(3) + 1.5/4 = 0.852; to B: log10(1/0.3) + 2.5/4 = 1.148
    assert s.nearest_model == "A 1B Q4" and s.nearest_decades == pytest.approx(math.log10(3)) and s.nearest_bits == 1.5
    assert s.nearest_text() == "A 1B Q4, +0.48 dec, +1.5 bits" and "not widened" in s.why()


def test_outside_the_range_the_factor_compounds_per_decade_and_per_4_bits(device):
    s = support(device, 1e7, 4.5)  # 2 decades below, bits inside
    assert s.extrapolated and s.outside_decades == pytest.approx(2) and s.factor == pytest.approx(1.5**3)
    assert s.bounds(6.75) == pytest.approx((2.0, 6.75 * 3.375))
    s = support(device, 1e7, 32.0)  # and 23.5 bits above 8.5: 5.875 "decades"
    assert s.factor == pytest.approx(1.5 ** (1 + 2 + 5.875)) and s.nearest_model == "A 1B Q4"  # 2 + 27.5/4
    assert s.nearest_decades == pytest.approx(-2) and s.nearest_bits == pytest.approx(27.5)
    assert "extrapolated 2.00 decade(s)" in s.why() and "23.5 bits" in s.why()
    s = support(device, 1e11, 32.0)  # B: 1 + 23.5/4 = 6.875, A: 2 + 27.5/4 = 8.875
    assert s.nearest_model == "B 10B Q8" and s.nearest_decades == pytest.approx(1) and s.nearest_bits == 23.5
    assert s.factor == pytest.approx(1.5 ** (1 + 1 + 5.875))
    assert support(device, 1e11, 6.0).factor == pytest.approx(1.5**2)  # above the range too


def test_the_interval_strictly_widens_further_outside_and_never_goes_negative(device):
    by_size = [support(device, n, 6.0).factor for n in (1e9, 1e8, 1e7, 1e6, 1e5)]
    by_bits = [support(device, 3e9, b).factor for b in (8.5, 12.0, 16.0, 32.0)]
    below_bits = [support(device, 3e9, b).factor for b in (4.5, 3.0, 2.0)]
    for seq in (by_size, by_bits, below_bits):
        assert seq[0] == pytest.approx(1.5)  # at the range's edge: the base
        assert all(b > a for a, b in zip(seq, seq[1:], strict=False))
    lo, hi = support(device, 1e5, 32.0).bounds(1.0)
    assert 0 < lo < 1 < hi


def test_a_device_without_anchors_is_extrapolated_at_the_assumed_50_percent(device):
    bare = device.model_copy(update={"calibration": [], "validation": []})
    s = support(bare, 1e9, 4.5)
    assert s.count == 0 and s.extrapolated and s.factor == pytest.approx(1.5) and s.nearest_text() == "none"
    assert "no anchors on this device" in s.why() and "assumed ±50%" in s.why()


def test_validation_anchors_set_the_base_and_count(device):
    real = load_device_file(RPI5)
    a = real.validation[0]
    rel, why = anchor_interval(real)
    s = support(real, a.params, a.bits_per_weight)  # on an anchor: inside
    assert s.validation == len(real.validation) and s.count == len(real.calibration) + len(real.validation)
    assert not s.extrapolated and s.factor == pytest.approx(1 + rel) and s.base_why == why
    assert s.nearest_decades == 0 and s.nearest_bits == 0


def test_device_prediction_widens_decode_and_prefill_for_a_tiny_variant(device, tiny_onnx):
    r = predict_on_device(tiny_onnx, device, 32, 16)
    gemvs = decode_graph(tiny_onnx, 32).gemvs
    n = sum(g.k * g.n for g in gemvs)
    bits = 8 * sum(g.weight_bytes for g in gemvs) / n
    d_p = math.log10(1e9 / n)  # far below the 1e9 anchor
    d_b = max(0.0, bits - 8.5) / 4
    factor = 1.5 ** (1 + d_p + d_b)
    assert r["extrapolated"] is True and r["anchors"] == 2 and r["nearest_anchor"].startswith("A 1B Q4, -")
    assert r["decode_ms_high"] / r["decode_ms"] == pytest.approx(factor)
    assert r["decode_ms"] / r["decode_ms_low"] == pytest.approx(factor)
    assert r["prefill_ms_high"] / r["prefill_ms"] == pytest.approx(factor)
    assert r["prefill_ms"] / r["prefill_ms_low"] == pytest.approx(factor)
    assert "assumed ±50%" in r["interval"] and "extrapolated" in r["interval"]
    typed = PredictedLatency.model_validate(r)  # results.json carries every new field (extra=forbid)
    assert typed.extrapolated and typed.anchors == 2 and typed.prefill_ms_high == r["prefill_ms_high"]
