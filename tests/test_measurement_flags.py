"""Honest measurements: slower-than-baseline variants are flagged in results, a speed-up whose
interval holds 1 is marked within noise, and the machine's state at measurement is recorded."""

from __future__ import annotations

import os

from edgescale.bench.measure import machine_info, ratio
from edgescale.results.assemble import variant_flags as _flags


def _variant(decode: dict, prefill: dict, sparse: bool = False) -> dict:
    host = {"decode_speedup_vs_fp32": decode, "prefill_speedup_vs_fp32": prefill}
    metrics = {"dense_kernel_speedup": False} if sparse else {}
    return {"latency": {"host": host}, "steps": [{"op": "x", "metrics": metrics}]}


def _ci(a, b) -> dict:
    r = ratio(a, b)
    return {"speedup": r.speedup, "low": r.low, "high": r.high, "within_noise": r.within_noise, "slower": r.slower}


BASE = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3, 10.1] * 4


def test_slower_than_the_baseline_is_flagged_per_phase():
    slower = _ci(BASE, [2 * x for x in BASE])
    same = _ci(BASE, [x * (1.01 if i % 2 else 0.99) for i, x in enumerate(BASE)])
    assert slower["slower"] and not slower["within_noise"]
    assert same["within_noise"] and not same["slower"]
    assert _flags(_variant(decode=slower, prefill=same)) == ["decode slower than the baseline (measured)"]
    assert _flags(_variant(decode=same, prefill=slower)) == ["prefill slower than the baseline (measured)"]
    assert _flags(_variant(decode=same, prefill=same)) == []


def test_sparsity_without_a_measured_speedup_is_flagged():
    faster = _ci(BASE, [x / 2 for x in BASE])
    noisy = _ci(BASE, BASE[::-1])
    assert _flags(_variant(decode=noisy, prefill=noisy, sparse=True)) == ["no dense-kernel speedup on this runtime"]
    assert _flags(_variant(decode=faster, prefill=faster, sparse=True)) == []


def test_machine_state_is_recorded():
    m = machine_info(3)
    assert m["cpu_model"] and m["hostname"] and m["threads"] == 3 and m["logical_cpus"] == os.cpu_count()
    assert len(m["load_avg_start"]) == 3 and all(x >= 0 for x in m["load_avg_start"])


def _latency_record(variant_scale: float, aa: bool = True) -> dict:
    """A hand-made latency record, as ``measure_variants(...).to_dict()`` writes it."""
    from dataclasses import asdict

    from edgescale.bench.measure import _summarise as summarise
    from edgescale.bench.measure import aa_control, machine_load

    base = summarise({"prefill": BASE, "decode": BASE}, "kv-cache")
    wobble = [x * (1.03 if i % 2 else 0.97) for i, x in enumerate(BASE)]
    copy = summarise({"prefill": wobble, "decode": wobble}, "kv-cache")
    slow = [variant_scale * x for x in BASE]
    machine = {"logical_cpus": 2, "threads": 2, "load_avg_start": [1.81, 1, 1], "load_avg_end": [1.9, 1, 1]}
    rec = {
        "variants": {
            "s0/fp32": asdict(base),
            "s0/int8": asdict(summarise({"prefill": slow, "decode": slow}, "kv-cache")),
        },
        "spec": {"seed": 0},
        "machine": machine,
        "load": machine_load(machine, 20.0, runnable=[4, 4, 3, 4]),  # one busy process beside the worker
    }
    if aa:
        rec["aa"] = asdict(aa_control(base, copy, "s0/fp32", "s0/fp32~aa", 0))
    return rec


class _M:
    prompt_len, decode_context, threads = 16, 32, 2


def test_assembled_speedups_use_the_a_a_noise_floor():
    from edgescale.results.assemble import _host_latency

    rec = _latency_record(1.02)  # 2% slower: outside the CI, inside the A/A's spread
    host = _host_latency(rec, "s0/int8", "s0/fp32", _M)
    floor = rec["aa"]["noise_floor"]["decode"]
    assert 0.02 < floor < 0.2
    d = host["decode_speedup_vs_fp32"]
    assert d["high"] < 1.0 and d["within_noise"] and not d["slower"]
    assert _flags(_variant(decode=d, prefill=host["prefill_speedup_vs_fp32"])) == []
    # without the control (an older record) the same numbers are "slower", as before
    old = _host_latency(_latency_record(1.02, aa=False), "s0/int8", "s0/fp32", _M)["decode_speedup_vs_fp32"]
    assert old["slower"] and not old["within_noise"]
    # a real slow-down clears the floor
    far = _host_latency(_latency_record(1.5), "s0/int8", "s0/fp32", _M)["decode_speedup_vs_fp32"]
    assert far["slower"] and not far["within_noise"]


def test_the_a_a_and_the_load_are_recorded_under_measurement():
    from edgescale.results.assemble import _measurement_checks
    from edgescale.results.schema import Measurement

    checks = _measurement_checks(_latency_record(1.0))
    m = Measurement.model_validate({"prompt_len": 16, "decode_context": 32, **checks})
    assert m.aa.variant == "s0/fp32" and m.aa.decode.within_noise and not m.aa.decode.slower
    assert set(m.aa.noise_floor) == {"prefill", "decode"} and m.aa.noise_floor["decode"] > 0
    assert m.loaded is True and m.load.load_avg_1min_start == 1.81 and m.load.limit == 0.5
    assert m.load.other_runnable_mean == 0.75 and m.load.runnable_samples == 4
    # the copy is no variant, and an older record without the checks still reads
    assert "s0/fp32~aa" not in _latency_record(1.0)["variants"]
    assert _measurement_checks({"variants": {}}) == {}
    assert Measurement.model_validate({"prompt_len": 16, "decode_context": 32}).aa is None


def test_assembled_speedups_are_two_level_over_worker_processes():
    """Samples from 3 worker processes: the record says how many, the p50 of each, and the interval
    resamples processes (a variant 4% slower in one process only is not called slower)."""
    from edgescale.results.assemble import _host_latency, _measurement_checks
    from edgescale.results.schema import HostLatency, Measurement

    rec = _latency_record(1.0)
    procs = [i * 3 // len(BASE) for i in range(len(BASE))]
    odd = [x * (1.04 if p == 1 else 1.0) for x, p in zip(BASE, procs, strict=True)]
    for vid, ms in (("s0/fp32", BASE), ("s0/int8", odd)):
        rec["variants"][vid].update(sample_process=procs, decode_samples_ms=ms)
    rec["processes"] = 3
    host = HostLatency.model_validate(_host_latency(rec, "s0/int8", "s0/fp32", _M))
    assert host.processes == 3 and len(host.decode_ms_p50_by_process) == 3
    assert host.decode_ms_p50_by_process[1] > host.decode_ms_p50_by_process[0]
    assert host.noise_floor == rec["aa"]["noise_floor"]
    two_level = host.speedup("decode", "fp32")
    flat = ratio(BASE, odd)
    assert two_level.high - two_level.low > flat.high - flat.low
    m = Measurement.model_validate({"prompt_len": 16, "decode_context": 32, **_measurement_checks(rec)})
    assert m.processes == 3
    # an older record (no process tags) reads as before
    assert HostLatency.model_validate(_host_latency(_latency_record(1.0), "s0/int8", "s0/fp32", _M)).processes is None
