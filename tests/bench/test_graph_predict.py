"""Per-node prediction: the efficiency fit, the roofline's regimes, device predictions."""

import numpy as np
import pytest

from edgescale.bench.devices import get_device
from edgescale.bench.graph_predict import (
    EfficiencyFit,
    RooflineParams,
    fit_efficiency,
    predict_on_device,
    roofline_components,
)
from edgescale.bench.nodes import DecodeGraph, DecodeNode


def test_fit_efficiency_recovers_known_scales_and_leaves_one_out():
    rng = np.random.default_rng(0)
    true = {"fp32": 1.2, "int8": 0.8, "other": 1.7, "run": 1.0}
    comps = [{k: float(rng.uniform(0.01, 1.0)) for k in true} for _ in range(12)]
    measured = [sum(true[k] * c[k] for k in true) for c in comps]
    fit = fit_efficiency(comps, measured)
    assert fit.scales == pytest.approx(true, rel=0.05)  # the weak prior toward 1 moves them a little
    assert fit.residual_rel_sd < 0.03 and len(fit.loo_rel_errors) == 12 and max(map(abs, fit.loo_rel_errors)) < 0.05
    assert set(fit.defaulted) == {"int4", "int4_acc4", "dispatch", "attn"}
    p = fit.predict({"fp32": 1.0, "int4": 2.0})  # an unfitted class takes the mean GEMV scale
    assert p["ms"] == pytest.approx(1.0 * fit.scales["fp32"] + 2.0 * (fit.scales["fp32"] + fit.scales["int8"]) / 2)


def test_a_scale_the_points_cannot_pin_down_stays_near_the_prior():
    # "other" and "run" move together in every point: without the prior, one of them
    # collapses to 0 and the other absorbs both (what a quick calibration did)
    comps = [{"fp32": x, "other": 0.5, "run": 0.5} for x in (0.1, 0.2, 0.4, 0.8)]
    fit = fit_efficiency(comps, [c["fp32"] + 1.0 for c in comps])
    assert fit.scales["other"] == pytest.approx(1.0, abs=0.05) and fit.scales["run"] == pytest.approx(1.0, abs=0.05)


def test_interval_comes_from_leave_one_out_residuals():
    rng = np.random.default_rng(1)
    comps = [{"fp32": float(x), "run": 1.0} for x in rng.uniform(1, 10, 20)]
    noisy = [(2 * c["fp32"] + 1) * (1 + 0.05 * rng.standard_normal()) for c in comps]
    fit = EfficiencyFit(**fit_efficiency(comps, noisy).to_dict())  # survives a round trip
    p = fit.predict({"fp32": 5.0, "run": 1.0})
    assert 0.02 < fit.interval_sd < 0.15 and p["low_ms"] < p["ms"] < p["high_ms"]


def _graph(weight_bytes: float, k: int, n: int, cls: str = "fp32") -> DecodeGraph:
    node = DecodeNode("MatMul", "gemv", cls, k, n, weight_bytes)
    return DecodeGraph([node], 1, 0.0, True, weight_bytes)


def test_roofline_is_memory_bound_from_dram_and_compute_bound_when_compute_is_scarce():
    p = RooflineParams("x", {"fp32": 1000.0}, bw_dram_gbps=10, bw_cache_gbps=40, cache_bytes=1e6, node_us=0, run_us=0)
    big = _graph(4 * 4096 * 4096, 4096, 4096)  # 64 MiB >> cache: h = 1e6/67e6
    h = 1e6 / big.working_set_bytes
    expect = big.working_set_bytes * (h / 40e9 + (1 - h) / 10e9) * 1000
    assert roofline_components(big, p)["fp32"] == pytest.approx(expect)
    small = _graph(4 * 256 * 256, 256, 256)  # in cache: streams at the cache rate
    assert roofline_components(small, p)["fp32"] == pytest.approx(small.working_set_bytes / 40e9 * 1000)
    slow = RooflineParams("x", {"fp32": 0.001}, 10, 40, 1e6, 0, 0)
    assert roofline_components(small, slow)["fp32"] == pytest.approx(2 * 256 * 256 / 1e6 * 1000)


def test_int8_kernels_use_the_dot_product_peak_only_where_the_isa_has_it():
    pi5, pi4 = RooflineParams.from_profile(get_device("rpi5-8gb")), RooflineParams.from_profile(get_device("rpi4-4gb"))
    d5 = get_device("rpi5-8gb")
    assert pi5.gops["int8"] == pytest.approx(d5.peak_gops.int8.value * d5.efficiency.compute.value)
    assert pi4.gops["int8"] == pytest.approx(2 * pi4.gops["fp32"])  # A72: no dot product
    assert pi4.gops["int4"] < pi4.gops["fp32"]  # dequantisation on the fp32 path
    assert any("dot-product" in a for a in pi4.assumed) and not any("dot-product" in a for a in pi5.assumed)


def test_device_prediction_carries_source_interval_energy_and_assumptions(tiny_onnx):
    r = predict_on_device(tiny_onnx, get_device("rpi5-8gb"), 32, 16)
    assert r["latency_source"] == "predicted" and r["decode_ms_low"] < r["decode_ms"] < r["decode_ms_high"]
    assert r["energy_mj_per_token"] == pytest.approx(get_device("rpi5-8gb").power_w.value * r["decode_ms"])
    assert "estimate" in r["energy_note"] and r["assumed"] and "validation" in r["interval"]
    slow = predict_on_device(tiny_onnx, get_device("a55-phone"), 32, 16)
    assert slow["decode_ms"] > r["decode_ms"] and "assumed" in slow["interval"]


def _host_params(**kw) -> RooflineParams:
    base = dict(
        device="host",
        gops={"fp32": 1e6},  # never compute-bound here
        bw_dram_gbps=10,
        bw_cache_gbps=40,
        cache_bytes=1e6,
        node_us=2.0,
        run_us=10.0,
        stream=((1e6, 40.0), (1e8, 10.0)),
        gemv_us={"fp32": 3.0},
        op_us={"Add": 2.0, "Softmax": 5.0, "LayerNormalization": 4.0},
    )
    return RooflineParams(**{**base, **kw})


def test_host_roofline_prices_dispatch_attention_and_streaming_piece_by_piece():
    p = _host_params()
    nodes = [
        DecodeNode("MatMul", "gemv", "fp32", 256, 1024, 4 * 256 * 1024),
        DecodeNode("GroupQueryAttention", "other", elements=4096),  # one K cache: K and V read, fp32
        DecodeNode("SkipLayerNormalization", "other", elements=256),
        DecodeNode("Shape", "other", elements=128),  # a view: half an Add's dispatch, no data moved
    ]
    w = 1e7  # working set: half-way in log between the two streaming points -> 20 GB/s
    comp = roofline_components(DecodeGraph(nodes, 128, 8 * 4096, True, w), p)
    spb = 1 / 20e9
    assert p.seconds_per_byte(w) == pytest.approx(spb)
    assert comp["fp32"] == pytest.approx(4 * 256 * 1024 * spb * 1000)
    assert comp["attn"] == pytest.approx((5.0e-6 + 8 * 4096 * spb) * 1000)
    assert comp["dispatch"] == pytest.approx((3.0 + 4.0 + 0.5 * 2.0) / 1000)
    assert comp["other"] == pytest.approx(8 * 256 * spb * 1000)
    assert comp["run"] == pytest.approx(0.01)


def test_host_params_come_from_the_hosts_own_probes():
    from edgescale.bench.calibrate import HostCalibration

    # fp32 GEMVs at widths 64, 256 and 1024: the 256-wide one streams its 1 MiB at 52 GB/s, so the
    # 64-wide one's 64 KiB take 1.3 µs of its 5 µs: the rest is the fixed cost
    ws_small, ws_big = 8 * 64 * 64 * 4.0, 8 * 1024 * 1024 * 4.0 * 8
    gemv = {
        "fp32": {"64": [[ws_small, 0.005]], "256": [[ws_small, 0.02]], "1024": [[ws_big, 0.8]]},
        "int8": {"64": [[ws_small / 4, 0.009]], "1024": [[ws_big / 4, 0.3]]},
    }
    ops = {"Add": [[16, 0.0015], [65536, 0.02]], "Softmax": [[16, 0.004], [65536, 0.05]]}
    cal = HostCalibration("x", 2, "1", "now", 5, 0.01, 0.012, gemv, ops, {"fp32": 100.0, "int8": 200.0})
    p = RooflineParams.from_calibration(cal, 32e6)
    assert p.node_us == pytest.approx(1.5) and p.op_us["Softmax"] == pytest.approx(4.0) and p.run_us == 12.0
    assert p.stream == tuple(tuple(x) for x in cal.streaming_gbps("fp32"))
    work_us = 4 * 64 * 64 * 4.0 * p.seconds_per_byte(ws_small) * 1e6
    assert work_us == pytest.approx(4 * 64 * 64 * 4.0 / (4 * 256 * 256 * 4.0 / 20e-6) * 1e6)
    assert p.gemv_us["fp32"] == pytest.approx(5.0 - work_us) and p.gemv_us["int8"] > p.gemv_us["fp32"]
    assert p.fixed_us("GroupQueryAttention") == pytest.approx(4.0) and p.fixed_us("Reshape") == pytest.approx(0.75)


def test_fitted_scales_stay_inside_their_plausible_range():
    from edgescale.bench.graph_predict import PLAUSIBLE_SCALES

    comps = [{"fp32": x, "dispatch": 0.2, "run": 0.05} for x in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)]
    fit = fit_efficiency(comps, [5 * c["fp32"] + 0.01 for c in comps])  # the data want fp32 x5
    assert fit.scales["fp32"] == pytest.approx(PLAUSIBLE_SCALES["fp32"][1])  # held at its cap
    assert all(PLAUSIBLE_SCALES[k][0] - 1e-9 <= v <= PLAUSIBLE_SCALES[k][1] + 1e-9 for k, v in fit.scales.items())
    assert fit.bounds["fp32"] == list(PLAUSIBLE_SCALES["fp32"])
    free = fit_efficiency(comps, [5 * c["fp32"] + 0.01 for c in comps], bounds={})  # unbounded: what it wanted
    assert free.scales["fp32"] > 4.5


def test_interval_is_the_leave_one_out_error_quantile():
    fit = EfficiencyFit({"fp32": 1.0}, [], 0.01, [0.01 * i * (-1) ** i for i in range(1, 11)], 10)
    assert fit.interval_rel == pytest.approx(np.quantile(np.arange(1, 11) * 0.01, 0.9))
    p = fit.predict({"fp32": 2.0})
    assert p["high_ms"] == pytest.approx(2.0 * (1 + fit.interval_rel))
    assert p["low_ms"] == pytest.approx(2.0 * (1 - fit.interval_rel))
    few = EfficiencyFit({"fp32": 1.0}, [], 0.03, [], 3)  # no leave-one-out: 2 residual SDs
    assert few.interval_rel == pytest.approx(0.06) and few.predict({"fp32": 1.0})["high_ms"] == pytest.approx(1.06)
