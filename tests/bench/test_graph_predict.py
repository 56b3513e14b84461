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
    assert set(fit.defaulted) == {"int4", "int4_acc4"}
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
