"""The A/A control: every measurement times the baseline's file twice, and the noise floor taken
from that pair turns differences between identical graphs into ties."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from edgescale.bench.load import runnable_tasks
from edgescale.bench.measure import AA_SUFFIX, MeasureSpec, RatioCI, machine_load, measure_variants, noise_floor, ratio

SPEC = MeasureSpec(prompt_len=16, decode_context=32, repeats=12, warmup=2, threads=1)
BASE = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3, 10.1] * 4


def test_noise_floor_is_the_farthest_a_a_bound_from_one():
    assert noise_floor(RatioCI(1.010, 1.002, 1.020, False, False)) == pytest.approx(0.020)
    assert noise_floor(RatioCI(0.990, 0.970, 1.005, True, False)) == pytest.approx(1 / 0.97 - 1)
    assert noise_floor(RatioCI(1.0, 1.0, 1.0, True, False)) == 0.0
    # a ratio and its reciprocal are equally far from 1: a floor past 1 still leaves "slower" possible
    wide = noise_floor(RatioCI(0.5, 0.2, 1.1, True, False))
    assert wide == pytest.approx(4.0)
    assert ratio(BASE, [10 * x for x in BASE], noise_floor=wide).slower


def test_a_small_steady_difference_is_a_tie_within_the_floor():
    # the case: 1.010 [1.002, 1.020] between two graphs of one shape excludes 1 ...
    r = ratio([1.01 * x for x in BASE], BASE)
    assert r.low > 1.0 and not r.within_noise
    # ... and is a tie once the A/A shows identical graphs differ by 2%
    tie = ratio([1.01 * x for x in BASE], BASE, noise_floor=0.02)
    assert tie.within_noise and not tie.slower and tie.speedup == pytest.approx(1.01)
    slower = ratio(BASE, [1.05 * x for x in BASE], noise_floor=0.02)
    assert slower.slower and not slower.within_noise
    faster = ratio(BASE, [x / 1.5 for x in BASE], noise_floor=0.02)
    assert not faster.within_noise and not faster.slower
    # an interval that only straddles the band's edge is still compatible with an identical graph
    edge = ratio(BASE, [x / (1.02 + 0.01 * (i % 3)) for i, x in enumerate(BASE)], noise_floor=0.02)
    assert edge.low <= 1.02 < edge.high and edge.within_noise
    with pytest.raises(ValueError, match="noise floor"):
        ratio(BASE, BASE, noise_floor=float("nan"))


def _assert_tie(rep, other: str) -> None:
    aa = rep.aa
    assert aa is not None and aa.variant == "a" and aa.copy == "a" + AA_SUFFIX
    for phase in ("prefill", "decode"):
        a_a, floor = getattr(aa, phase), aa.noise_floor[phase]
        assert all(math.isfinite(x) for x in (a_a.speedup, a_a.low, a_a.high, floor)) and floor >= 0
        assert a_a.within_noise and not a_a.slower  # the A/A is a tie against its own floor
        r = rep.ratios[other][phase]
        assert r.within_noise and not r.slower, (phase, r, floor)
        assert r.low <= 1 + floor and r.high >= 1 / (1 + floor)
    # the copy is a control, not a variant
    assert set(rep.variants) == {"a", other} and set(rep.ratios) == {other}
    assert aa.copy_latency.n_samples == SPEC.repeats
    # timed in 3 worker processes of 4 repeats each, and the intervals are two-level over them
    assert rep.processes == 3 and aa.copy_latency.processes == 3
    assert aa.copy_latency.sample_process == [0] * 4 + [1] * 4 + [2] * 4
    assert all(v.sample_process == aa.copy_latency.sample_process for v in rep.variants.values())
    assert rep.to_dict()["aa"]["noise_floor"].keys() == {"prefill", "decode"}


def test_the_same_file_under_two_ids_is_a_tie(tiny_onnx):
    _assert_tie(measure_variants({"a": tiny_onnx, "b": tiny_onnx}, SPEC, baseline="a"), "b")


def test_byte_identical_copies_are_a_tie(tiny_onnx, tmp_path):
    copy = shutil.copy(tiny_onnx, tmp_path / "copy.onnx")
    _assert_tie(measure_variants({"a": tiny_onnx, "b": copy}, SPEC, baseline="a"), "b")


def test_a_a_copies_the_first_variant_without_a_baseline_and_can_be_turned_off(tiny_onnx):
    rep = measure_variants({"a": tiny_onnx}, SPEC)
    assert rep.aa is not None and rep.aa.variant == "a" and set(rep.variants) == {"a"} and rep.ratios == {}
    off = measure_variants({"a": tiny_onnx}, SPEC.model_copy(update={"aa_control": False}))
    assert off.aa is None
    assert off.load is not None and off.load["threads"] == 1


def test_the_a_a_id_is_reserved(tiny_onnx):
    with pytest.raises(ValueError, match="reserved"):
        measure_variants({"a": tiny_onnx, "a" + AA_SUFFIX: tiny_onnx}, SPEC)


def test_load_is_judged_from_runnable_tasks_during_the_measurement_not_the_lagging_average():
    # the default run's case: 2 cores, 2 worker threads, and a start load average of 1.81 left by
    # the run's own scoring; during the measurement only the sampler (1) and the worker (2) ran
    machine = {"logical_cpus": 2, "threads": 2, "load_avg_start": [1.81, 1.0, 1.0], "load_avg_end": [1.3, 0, 0]}
    quiet = machine_load(machine, wall_s=30.0, runnable=[3, 3, 2, 3, 4, 3, 3, 3])
    assert quiet["loaded"] is False and quiet["load_avg_1min_start"] == 1.81 and quiet["limit"] == 0.5
    assert quiet["runnable_samples"] == 8 and quiet["other_runnable_max"] == 1
    # one busy process beside the worker, most of the time: it takes a core the worker times on
    busy = machine_load({**machine, "load_avg_start": [0.1, 0, 0]}, wall_s=30.0, runnable=[4, 4, 3, 4, 4])
    assert busy["loaded"] and busy["other_runnable_mean"] == pytest.approx(0.8)
    # with 1 worker thread on 2 cores one other process fits in the free core; two do not
    one = {**machine, "threads": 1}
    assert not machine_load(one, 10.0, runnable=[3, 3, 3])["loaded"]
    assert machine_load(one, 10.0, runnable=[4, 4, 4])["loaded"]
    # no counts: the load averages alone cannot say
    assert machine_load(machine, wall_s=30.0)["loaded"] is None
    assert machine_load(machine, 60.0, [3])["own_share_end"] == pytest.approx(2 * (1 - np.exp(-1)), abs=1e-3)


LOAD_SPEC = MeasureSpec(prompt_len=16, decode_context=32, repeats=30, warmup=2, threads=1, processes=3)


def _others_now(n: int = 10) -> float:
    """Mean runnable tasks beside the reader, over ``n`` readings 50 ms apart."""
    got = []
    for _ in range(n):
        got.append(runnable_tasks() - 1)
        time.sleep(0.05)
    return sum(got) / n


needs_proc = pytest.mark.skipif(runnable_tasks() is None, reason="counts runnable tasks from /proc/stat")


@needs_proc
@pytest.mark.serial  # dev.py test runs it alone, after the parallel part: the others would load the machine
def test_an_idle_measurement_is_not_flagged(tiny_onnx):
    if _others_now() > 0.5:  # a shared machine (other test runs): then "loaded" is the right answer
        pytest.skip("the machine is busy with other work; an idle measurement cannot be taken")
    idle = measure_variants({"a": tiny_onnx}, LOAD_SPEC).load
    assert idle["runnable_samples"] >= 3 and idle["loaded"] is False, idle


@needs_proc
def test_a_measurement_beside_busy_processes_is_flagged(tiny_onnx):
    # one spinning process per core (2 on a 2-core machine): more than the cores a 1-thread worker leaves free
    n = min(os.cpu_count() or 1, 16)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)  # all spinning before the first worker starts
        busy = measure_variants({"a": tiny_onnx}, LOAD_SPEC).load
    finally:
        for p in burners:
            p.kill()
            p.wait()
    assert busy["loaded"] is True and busy["other_runnable_mean"] > busy["limit"], busy
    assert busy["runnable_samples"] >= 3 and busy["load_avg_1min_end"] >= 0
