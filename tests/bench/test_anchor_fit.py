"""The analytic predictor's terms and its fit (issue 19): the dequantization term on little cores, the GPU launch
floor, the short-prompt regime, and a calibration fit that never sees validation anchors."""

import pytest

from edgescale.bench.anchor_fit import FIT_RANGES, FLOOR_RANGE_MS, calibrated
from edgescale.bench.architectures import ANCHOR_LAYOUTS, get_architecture
from edgescale.bench.devices import get_device
from edgescale.bench.predict import predict_architecture
from edgescale.profiles import load_devices

# Total parameters on each model card (huggingface.co/<org>/<model>): the hand-typed layouts must reproduce them.
PUBLISHED_PARAMS = {
    "llama-3.2-3b": 3.21e9,
    "llama-3.1-8b": 8.03e9,
    "llama-2-7b": 6.74e9,
    "qwen2.5-7b": 7.61e9,
    "phi-3.5-mini": 3.82e9,
    "gemma-2-2b": 2.61e9,
    "gemma-2-9b": 9.24e9,
}


@pytest.mark.parametrize("name", sorted(ANCHOR_LAYOUTS))
def test_anchor_layouts_reproduce_the_published_parameter_counts(name):
    total = sum(get_architecture(name).params_by_class().values())
    assert total == pytest.approx(PUBLISHED_PARAMS[name], rel=0.005)


def test_every_anchor_names_a_known_layout_with_its_parameter_count():
    for d in load_devices().values():
        for a in d.calibration + d.validation:
            assert a.source and len(a.source) > 10, (d.id, a.model)
            if a.arch is not None:
                total = sum(get_architecture(a.arch).params_by_class().values())
                assert a.params == pytest.approx(total, rel=0.01), (d.id, a.model)


def test_validation_anchors_never_move_the_fit():
    raw = load_devices()["galaxy-s24"]
    moved = [a.model_copy(update={"tokens_per_s": a.tokens_per_s * 3}) for a in raw.validation]
    other = raw.model_copy(update={"validation": moved})
    assert calibrated(other).efficiency == calibrated(raw).efficiency
    nudged = [raw.calibration[0].model_copy(update={"tokens_per_s": raw.calibration[0].tokens_per_s * 1.5})]
    changed = raw.model_copy(update={"calibration": nudged + raw.calibration[1:]})
    assert calibrated(changed).efficiency != calibrated(raw).efficiency  # and calibration anchors do


def test_fitted_efficiencies_stay_in_their_physical_ranges():
    fitted = 0
    for d in load_devices().values():
        eff = calibrated(d).efficiency
        for name, (lo, hi) in FIT_RANGES.items():
            q = getattr(eff, name)
            if q is not None and (q.formula or "").startswith("fitted:"):
                fitted += 1
                assert lo <= q.value <= hi, (d.id, name, q.value)
        if eff.overhead_ms_per_token is not None:
            assert FLOOR_RANGE_MS[0] <= eff.overhead_ms_per_token.value <= FLOOR_RANGE_MS[1]
    assert fitted >= 10


def _achieved_bandwidth(device, arch: str) -> float:
    p = predict_architecture(device, get_architecture(arch), 4.5, context=128)
    return (p.streamed_bytes_per_token + p.kv_bytes_per_token * 128) / (p.decode_ms / 1000) / 1e9


def test_a_gpu_launch_floor_keeps_small_models_far_below_bandwidth():
    gpu = get_device("jetson-orin-nano-gpu")
    floor = gpu.efficiency.overhead_ms_per_token
    assert floor.kind == "derived" and floor.value > 1  # fitted on the two calibration anchors
    peak = gpu.memory.peak_gbps.value
    assert _achieved_bandwidth(gpu, "smollm2-135m") / peak < 0.3
    assert _achieved_bandwidth(gpu, "llama-3.1-8b") / peak > 0.75
    tiny = predict_architecture(gpu, get_architecture("smollm2-135m"), 4.5, context=128)
    assert tiny.decode_ms >= floor.value and tiny.decode_bound == "launch floor"
    assert predict_architecture(gpu, get_architecture("llama-3.1-8b"), 4.5, context=128).decode_bound == "memory"


def test_little_cores_are_compute_bound_on_dequantization_where_big_cores_are_not():
    llama = get_architecture("llama-3.2-1b")
    little, big = get_device("rk3566-board"), get_device("rpi5-8gb")
    assert predict_architecture(little, llama, 4.85).decode_bound == "compute"
    assert predict_architecture(big, llama, 4.85).decode_bound == "memory"
    more = little.model_copy(
        update={
            "efficiency": little.efficiency.model_copy(
                update={"dequant_ops": little.efficiency.dequant_ops.model_copy(update={"value": 8.0})}
            )
        }
    )
    # the dequantization term prices sub-8-bit weights only: 8-bit weights are not slower for it
    assert predict_architecture(more, llama, 4.85).decode_ms > 2 * predict_architecture(little, llama, 4.85).decode_ms
    assert predict_architecture(more, llama, 8.5).decode_ms == pytest.approx(
        predict_architecture(little, llama, 8.5).decode_ms
    )


def test_short_prompts_fall_toward_gemv_efficiency():
    phone, llama = get_device("galaxy-s24"), get_architecture("llama-3.2-1b")
    rate = {
        n: predict_architecture(phone, llama, 5.0, context=n, prompt_len=n).prefill_tokens_per_s for n in (1, 4, 16, 64)
    }
    assert rate[1] < rate[4] < rate[16] < rate[64]  # GEMM efficiency rises with the prompt
    assert rate[64] / rate[1] > 4
    one = predict_architecture(phone, llama, 5.0, context=1, prompt_len=1)
    assert one.prefill_ms == pytest.approx(one.decode_ms, rel=0.2)  # one prompt token costs about one decode step
