"""Pareto correctness on hand-made point sets, and properties over random ones."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgescale.report.frontier import AXES, FrontierPoint, axes_for, frontier, frontiers
from edgescale.results.pareto import noise_ties, pareto_front
from edgescale.results.schema import Variant

nan, inf = math.nan, math.inf


@pytest.mark.parametrize(
    ("points", "front"),
    [
        pytest.param([], [], id="empty"),
        pytest.param([(1, 1)], [0], id="single"),
        pytest.param([(1, 3), (2, 2), (3, 1)], [0, 1, 2], id="all-on-front"),
        pytest.param([(3, 1), (1, 3), (2, 2), (2.5, 2.5)], [1, 2, 0], id="chain-sorted-by-cost"),
        pytest.param([(2, 2), (1, 1), (3, 3), (1.5, 4)], [1], id="one-dominates-all"),
        pytest.param([(1, 2), (1, 2), (2, 1)], [0, 1, 2], id="duplicates-on-front-both-stay"),
        pytest.param([(2, 2), (2, 2), (1, 1)], [2], id="duplicates-dominated-both-go"),
        pytest.param([(1, 2), (1, 3), (0.5, 4)], [2, 0], id="tie-on-cost-lower-loss-wins"),
        pytest.param([(2, 2), (1, 2), (3, 1)], [1, 2], id="tie-on-loss-lower-cost-wins"),
        pytest.param([(1, nan), (2, 2), (inf, 0), (nan, nan), (-inf, 5)], [1], id="nan-inf-excluded"),
        pytest.param([(0.0, 1), (-0.0, 1)], [0, 1], id="signed-zero-is-a-duplicate"),
    ],
)
def test_hand_made_fronts(points, front):
    assert pareto_front(points) == front


def _dominates(a, b):
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


coord = st.one_of(
    st.integers(0, 6).map(float),  # small integers: many ties and duplicates
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([nan, inf, -inf]),
)


@given(st.lists(st.tuples(coord, coord), max_size=40))
def test_front_is_exactly_the_non_dominated_finite_set(points):
    front = pareto_front(points)
    finite = [i for i, p in enumerate(points) if all(map(math.isfinite, p))]
    assert len(front) == len(set(front)) and set(front) <= set(finite)
    assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)
    for i in front:  # no front point is dominated by any finite point
        assert not any(_dominates(points[j], points[i]) for j in finite)
    for i in set(finite) - set(front):  # every other finite point is dominated by a point on the front
        assert any(_dominates(points[j], points[i]) for j in front)


def test_long_trade_off_is_all_front():
    n = 100_000  # the sweep is O(n log n); a quadratic scan would crawl here
    points = [(float(i), float(n - i)) for i in reversed(range(n))]
    assert pareto_front(points) == list(reversed(range(n)))


def _variant(vid, bytes_, flops, bpb, test_bpb=None, decode_ms=None):
    """A results.json variant entry (dict) with these costs; ``_typed`` parses it with the schema."""
    v = {
        "variant_id": vid,
        "size": vid,
        "recipe": "fp32",
        "onnx_path": f"{vid}.onnx",
        "onnx_sha256": "0" * 64,
        "file_bytes": bytes_ * 2,
        "params_non_embedding": 1,
        "params_total": 2,
        "train_tokens": 1,
        "cost": {
            "weight_bytes": bytes_,
            "decode_context": 128,
            "kv_bytes_at_context": 0,
            "bytes_per_decoded_token": bytes_,
            "flops_per_token": flops,
        },
        "loss": {"validation": {"bits_per_byte": bpb}},
    }
    if test_bpb is not None:
        v["loss"]["test"] = {"bits_per_byte": test_bpb}
    if decode_ms is not None:
        host = {"kind": "measured", "latency_source": "measured", "decode_ms_p50": decode_ms}
        v["latency"] = {"host": host | {"prefill_ms_p50": 2 * decode_ms}}
    return v


def _typed(variants: list[dict]) -> list[Variant]:
    return [Variant.model_validate(v) for v in variants]


def test_frontier_over_variants():
    variants = _typed(
        [_variant("a", 5, 1.0, 3.0, 3.1, 0.2), _variant("b", 4, 1.0, 2.0, 2.2), _variant("c", 9, 2.0, 1.0)]
    )
    points = frontier(variants, "bytes_per_decoded_token")
    assert points[1] == FrontierPoint("b", 4.0, 2.0, True)
    assert [p.on_front for p in points] == [False, True, True]
    assert [p.on_front for p in frontier(variants, "flops_per_token")] == [False, True, True]
    # latency measured on "a" only: the others have NaN cost and are never on the front
    host = frontier(variants, "host_decode_ms")
    assert [p.on_front for p in host] == [True, False, False] and math.isnan(host[1].cost)
    assert [p.on_front for p in frontier(variants, "host_prefill_ms")] == [True, False, False]
    # a split some variants lack: they drop out, the rest compete
    assert [p.on_front for p in frontier(variants, "file_bytes", loss_split="test")] == [False, True, False]


def test_unknown_axis_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: bytes_per_decoded_token, file_bytes") as err:
        frontier(_typed([_variant("a", 1, 1.0, 1.0)]), "watts")
    assert all(name in str(err.value) for name in AXES)


@pytest.mark.parametrize(
    ("points", "front"),
    [
        pytest.param([(2, 2)] * 4, [0, 1, 2, 3], id="all-equal-all-on-front"),
        pytest.param([(nan, 1)], [], id="one-point-missing-cost"),
        pytest.param([(5, 5)], [0], id="one-point"),
        pytest.param([(1, 5), (1, 5), (2, 5), (1, 6)], [0, 1], id="duplicates-win-ties-on-both-axes"),
    ],
)
def test_more_hand_made_fronts(points, front):
    assert pareto_front(points) == front


def _device_variant(vid, bpb, host_ms=None, pi_ms=None, pi_mj=None, mem=None):
    v = _variant(vid, 10, 1.0, bpb, decode_ms=host_ms)
    v["cost"] |= {"decode_context": 128}
    if mem is not None:
        v["cost"]["peak_memory_bytes"] = mem
    if pi_ms is not None:
        pi = {"latency_source": "predicted", "decode_ms": pi_ms, "prefill_ms": 3 * pi_ms, "energy_mj_per_token": pi_mj}
        v.setdefault("latency", {})["rpi5-8gb"] = pi
    return v


def test_axes_for_labels_context_precision_and_source():
    vs = _typed([_device_variant("a", 2.0, 0.3, 0.5, 2.0, mem=100), _device_variant("b", 1.5, 0.4, 0.9, None)])
    axes = axes_for(vs)
    assert (
        axes["bytes_per_decoded_token"].label
        == "bytes moved per decoded token (weights + fp32 KV cache at context 128)"
    )
    assert "context 128" in axes["flops_per_token"].label and axes["peak_memory_bytes"].source == "estimate"
    assert axes["host_decode_ms"].label == "host decode latency p50 (ms/token, measured)"
    assert axes["rpi5-8gb_decode_ms"].label == "rpi5-8gb decode latency (ms/token, predicted)"
    assert axes["rpi5-8gb_energy_mj"].source == "predicted"
    assert "host_energy_mj" not in axes  # the host has no power figure: no axis, rather than an empty one
    assert [p.on_front for p in frontier(vs, "rpi5-8gb_decode_ms")] == [True, True]
    # b lacks an energy figure and a memory estimate: excluded from those axes, not a crash
    assert [p.on_front for p in frontier(vs, "rpi5-8gb_energy_mj")] == [True, False]
    assert [p.on_front for p in frontier(vs, "peak_memory_bytes")] == [True, False]


def test_frontiers_as_plain_data():
    vs = _typed([_device_variant("a", 2.0, 0.3, 0.5, 2.0), _device_variant("b", 1.5, 0.4, 0.4, 1.0)])
    out = frontiers(vs)
    assert set(out) >= {"bytes_per_decoded_token", "file_bytes", "peak_memory_bytes", "flops_per_token"}
    pi = out["rpi5-8gb_decode_ms"]
    assert pi["source"] == "predicted" and [p["variant_id"] for p in pi["front"]] == ["b"]
    assert out["peak_memory_bytes"]["excluded"] == ["a", "b"] and out["peak_memory_bytes"]["front"] == []
    assert [p["variant_id"] for p in out["host_decode_ms"]["front"]] == ["a", "b"]  # sorted by cost


def test_costs_within_the_noise_floor_are_ties():
    # the case: two graphs of one shape timed 0.0402 and 0.0398 ms, the cheaper with the worse loss
    pts = [(0.0402, 3.00), (0.0398, 3.04)]
    assert pareto_front(pts) == [1, 0]  # exact: both on the front, a 1% "cheaper" buying a worse loss
    assert pareto_front(pts, tol=0.02) == [0] and noise_ties(pts, 0.02) == {0: [1], 1: [0]}
    # the better loss at the lower cost wins either way, with no tie to report
    assert pareto_front([(0.0398, 3.00), (0.0402, 3.04)], tol=0.02) == [0]
    assert noise_ties([(0.0398, 3.00), (0.0402, 3.04)], 0.02) == {}
    # a cost difference beyond the floor is a trade-off: both stay, no tie
    beyond = [(0.0398, 3.04), (0.0500, 3.00)]
    assert pareto_front(beyond, tol=0.02) == [0, 1] and noise_ties(beyond, 0.02) == {}
    assert pareto_front([(1, 2), (1, 2)], tol=0.5) == [0, 1]  # exact duplicates: neither wins
    with pytest.raises(ValueError, match="tolerance"):
        pareto_front(pts, tol=-0.1)


@given(st.lists(st.tuples(coord, coord), max_size=30), st.sampled_from([0.0, 0.01, 0.1, 1.0]))
def test_a_noise_floor_only_takes_points_off_the_exact_front(points, tol):
    points = [(abs(c) if math.isfinite(c) else c, loss) for c, loss in points]  # costs are never negative
    within, exact = pareto_front(points, tol), pareto_front(points)
    assert set(within) <= set(exact)
    assert (within == exact) if tol == 0 else True
    for i in set(exact) - set(within):  # each point the floor took off rests on a tie
        assert noise_ties(points, tol)[i]


def _shape_twins(floor: dict | None, device: str = "host") -> list[Variant]:
    """s0/fp32 and s0-kd/fp32: the same shape, timed 0.0402 and 0.0398 ms; s0-kd has the worse loss."""
    out = []
    for vid, ms, bpb in (("s0/fp32", 0.0402, 3.00), ("s0-kd/fp32", 0.0398, 3.04), ("s1/fp32", 0.08, 2.5)):
        v = _variant(vid, 10, 1.0, bpb)
        if device == "host":
            host = {"kind": "measured", "latency_source": "measured", "decode_ms_p50": ms, "prefill_ms_p50": 9 * ms}
            v["latency"] = {"host": host | ({"noise_floor": floor} if floor else {})}
        else:
            v["latency"] = {device: {"latency_source": "predicted", "decode_ms": ms, "prefill_ms": 9 * ms}}
        out.append(v)
    return _typed(out)


def test_the_host_front_ties_costs_within_the_a_a_floor():
    floor = {"prefill": 0.001, "decode": 0.02}
    points = frontier(_shape_twins(floor), "host_decode_ms")
    assert [p.on_front for p in points] == [True, False, True]
    assert points[0].tie_with == ("s0-kd/fp32",) and points[1].tie_with == ("s0/fp32",) and points[2].tie_with == ()
    # the prefill floor (0.1%) is below the 1% gap: both stay on the prefill front
    assert [p.on_front for p in frontier(_shape_twins(floor), "host_prefill_ms")] == [True, True, True]
    # without a floor (an older file, or no A/A) both sit on the front, as before
    assert [p.on_front for p in frontier(_shape_twins(None), "host_decode_ms")] == [True, True, True]
    # the floor can be given explicitly (results.measurement.aa.noise_floor) and wins over the variants'
    given = frontier(_shape_twins(None), "host_decode_ms", noise_floor=floor)
    assert [p.on_front for p in given] == [True, False, True]
    assert [p.on_front for p in frontier(_shape_twins(floor), "host_decode_ms", noise_floor={})] == [True, True, True]
    # predicted and byte axes compare exactly, whatever the measurement's floor
    pred = _shape_twins(None, device="galaxy-s24")
    assert [p.on_front for p in frontier(pred, "galaxy-s24_decode_ms", noise_floor=floor)] == [True, True, True]
    assert all(p.tie_with == () for p in frontier(_shape_twins(floor), "bytes_per_decoded_token"))


def test_frontiers_record_the_floor_and_the_ties():
    from edgescale.results.analysis_schema import Frontier

    out = frontiers(_shape_twins({"prefill": 0.001, "decode": 0.02}))
    host = Frontier.model_validate(out["host_decode_ms"])
    assert host.noise_floor == 0.02 and [e.variant_id for e in host.front] == ["s0/fp32", "s1/fp32"]
    assert host.front[0].tie_with == ["s0-kd/fp32"] and host.front[1].tie_with is None
    assert "noise_floor" not in out["bytes_per_decoded_token"]
