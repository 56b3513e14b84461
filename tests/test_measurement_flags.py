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
