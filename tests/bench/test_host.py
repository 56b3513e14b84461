"""Host calibration end to end, and the graph predictor built from it (a quick calibration)."""

import pytest
import yaml

from edgescale.bench.calibrate import HostCalibration, load_calibration


@pytest.fixture(scope="module")
def quick_calibration(tmp_path_factory):
    from edgescale.bench.host import calibrate_host

    cal, report, graphs = calibrate_host(threads=1, quick=True, repeats=5)
    path = tmp_path_factory.mktemp("cal") / "host.yaml"
    path.write_text(yaml.safe_dump(cal.to_dict(), sort_keys=False))
    return cal, report, graphs, path


@pytest.mark.slow
def test_quick_calibration_measures_every_class_and_fits_factors(quick_calibration):
    cal, report, graphs, path = quick_calibration
    assert set(cal.gemv) == {"fp32", "int8", "int4", "int4_acc4"} and cal.run_ms > 0
    assert all(v > 0 for v in cal.matmul_gops.values())
    # a wider kernel in the same regime takes longer
    assert cal.gemv_ms("fp32", 1024, 4096, 64e6) > cal.gemv_ms("fp32", 64, 256, 64e6)
    assert cal.op_ms("LayerNormalization", 65536) > cal.op_ms("LayerNormalization", 16)
    assert cal.op_ms("Reshape", 10**6) < cal.op_ms("Add", 16)  # a view copies nothing
    # a fused attention node is priced as the attention probe's two MatMuls over its cache, not as an Add
    assert cal.op_ms("GroupQueryAttention", 49152) == pytest.approx(2 * cal.op_ms("MatMul", 49152))
    assert cal.op_ms("GroupQueryAttention", 49152) != pytest.approx(cal.op_ms("Add", 49152))
    stream = cal.streaming_gbps()
    assert len(stream) >= 2 and stream[0][0] < stream[-1][0] and all(r > 0 for _, r in stream)
    for name in ("tables", "roofline"):
        assert cal.fits[name]["n_points"] == 8 and cal.fits[name]["scales"]
    assert load_calibration(path) == HostCalibration.from_dict(yaml.safe_load(path.read_text()))


@pytest.mark.slow
def test_host_prediction_of_a_model_is_in_the_right_range(quick_calibration, tiny_onnx):
    from edgescale.bench.host import predict_host
    from edgescale.bench.measure import MeasureSpec, measure_variants

    cal = quick_calibration[0]
    p = predict_host(tiny_onnx, cal, context=32)
    measured = measure_variants({"t": tiny_onnx}, MeasureSpec(decode_context=32, prompt_len=8, repeats=15, threads=1))
    ms = measured.variants["t"].decode_ms_p50
    assert p["latency_source"] == "predicted" and p["decode_ms_low"] < p["decode_ms"] < p["decode_ms_high"]
    assert 0.33 < p["decode_ms"] / ms < 3  # a smoke bound on a shared CI machine; accuracy is benchmarks/latency.py


def test_a_file_that_is_not_a_calibration_is_refused(tmp_path):
    from edgescale.errors import UserError

    bad = tmp_path / "c.yaml"
    bad.write_text("cpu_model: x\n")
    with pytest.raises(UserError, match="not an edgescale host calibration"):
        load_calibration(bad)


@pytest.mark.slow
def test_the_host_profile_validates_and_predicts_like_a_shipped_one(quick_calibration, tiny_onnx, tmp_path):
    from edgescale.bench.devices import get_device
    from edgescale.bench.graph_predict import predict_on_device
    from edgescale.bench.host import host_profile
    from edgescale.profiles import load_device_file

    cal = quick_calibration[0]
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(host_profile(cal, 1), sort_keys=False))
    prof = load_device_file(path)
    assert prof.peak_gops.fp32.kind == "measured" and prof.memory.effective_gbps.value > 0
    assert "power_w" in prof.assumed_fields()
    r = predict_on_device(tiny_onnx, get_device(str(path)), 32, 16)
    assert r["decode_ms"] > 0 and r["latency_source"] == "predicted"
