"""The latency harness: real onnxruntime timings in a clean subprocess, honest ratios."""

import numpy as np
import pytest

from edgescale.bench.measure import (
    WORKER,
    MeasurementError,
    MeasureSpec,
    bootstrap_ratio_ci,
    measure_variants,
    ratio,
    run_worker,
    split_repeats,
)

SPEC = MeasureSpec(prompt_len=16, decode_context=32, repeats=8, warmup=2, threads=1)


def test_bootstrap_flags_noise_and_real_differences():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 0.5, 40), rng.normal(10, 0.5, 40)
    same = ratio(a, b)
    assert same.within_noise and not same.slower
    slow = ratio(a, 2 * rng.normal(10, 0.5, 40))
    assert slow.high < 1.0 and slow.slower and not slow.within_noise
    point, low, high = bootstrap_ratio_ci(a, a / 1.5)
    assert point == pytest.approx(1.5) and low == pytest.approx(1.5) and high == pytest.approx(1.5)


def test_bootstrap_needs_paired_series():
    with pytest.raises(ValueError, match="paired"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0])


def test_measures_real_latencies_interleaved(tiny_onnx):
    rep = measure_variants({"a": tiny_onnx, "b": tiny_onnx}, SPEC, baseline="a")
    for v in rep.variants.values():
        assert v.n_samples == 8 and len(v.decode_samples_ms) == 8
        assert 0 < v.decode_ms_p50 <= v.decode_ms_p90 and 0 < v.prefill_ms_p50 <= v.prefill_ms_p90
        assert np.isfinite(v.decode_tokens_per_s)
    # One decode step at context 32 is cheaper than a 16-token prefill: it is not a re-run of the prompt.
    assert rep.variants["a"].decode_ms_p50 < rep.variants["a"].prefill_ms_p50
    r = rep.ratios["b"]["decode"]
    assert r.low <= r.speedup <= r.high and 0.5 < r.speedup < 2.0  # same file against itself
    assert rep.machine["cpu_model"] and rep.machine["threads"] == 1 and len(rep.machine["load_avg_end"]) == 3
    assert rep.to_dict()["variants"]["a"]["decode_samples_ms"]


def test_worker_imports_only_onnxruntime_and_numpy(tiny_onnx):
    source = WORKER.read_text()
    assert "import torch" not in source and "edgescale" not in source.split('"""', 2)[2]
    reply = run_worker({"variants": {"a": str(tiny_onnx)}, **SPEC.model_dump(exclude={"timeout_s"})}, 120)
    assert "onnxruntime" in reply["modules"]
    assert "torch" not in reply["modules"] and "edgescale" not in reply["modules"]


def test_not_a_causal_lm_is_a_clear_error(relu_onnx):
    path = relu_onnx
    with pytest.raises(MeasurementError, match="relu.onnx: not a causal LM"):
        measure_variants({"relu": path}, SPEC)


def test_unknown_baseline_is_refused(tiny_onnx):
    with pytest.raises(ValueError, match="baseline"):
        measure_variants({"a": tiny_onnx}, SPEC, baseline="zzz")


def test_repeats_are_split_over_processes_at_least_three_each():
    assert split_repeats(30, 3) == [10, 10, 10]
    assert split_repeats(31, 3) == [11, 10, 10]
    assert split_repeats(8, 3) == [4, 4]  # two processes rather than fewer than 3 repeats in one
    assert split_repeats(5, 3) == [5] and split_repeats(30, 1) == [30]


def test_one_process_is_the_paired_bootstrap_over_repeats():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 0.5, 30), rng.normal(10.2, 0.5, 30)
    assert bootstrap_ratio_ci(a, b, groups=[0] * 30) == bootstrap_ratio_ci(a, b)
    with pytest.raises(ValueError, match="process index per sample"):
        bootstrap_ratio_ci(a, b, groups=[0, 1])


def test_the_spread_between_processes_widens_the_interval():
    # each process lands its sessions differently: the variant is 5% slower in one, 5% faster in another
    rng = np.random.default_rng(2)
    groups = np.repeat([0, 1, 2], 10)
    base = rng.normal(10, 0.1, 30)
    other = base * np.array([1.0, 1.05, 0.95])[groups] * rng.normal(1, 0.005, 30)
    _, flat_lo, flat_hi = bootstrap_ratio_ci(base, other)
    point, lo, hi = bootstrap_ratio_ci(base, other, groups=groups)
    assert lo <= point <= hi and hi - lo > 1.5 * (flat_hi - flat_lo)
    # a process where it is 5% slower alone can be drawn three times: the interval reaches it
    assert lo < 1 / 1.04 and hi > 1 / 0.96
    # the same difference in every process stays tight: only the process spread widens it
    steady = base * 1.05 * rng.normal(1, 0.005, 30)
    _, lo2, hi2 = bootstrap_ratio_ci(base, steady, groups=groups)
    assert hi2 < 1.0 and hi2 - lo2 < 0.03
