"""Pareto correctness on hand-made point sets, and a property over random ones."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgescale.report.frontier import frontier, pareto_front


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([], []),
        ([(1, 1)], [0]),
        ([(1, 3), (2, 2), (3, 1)], [0, 1, 2]),  # a clean trade-off: all on the front
        ([(3, 1), (1, 3), (2, 2), (2.5, 2.5)], [1, 2, 0]),  # sorted by cost; (2.5, 2.5) dominated by (2, 2)
        ([(1, 1), (2, 2), (3, 3)], [0]),  # one point beats everything
        ([(1, 2), (1, 2), (2, 1)], [0, 1, 2]),  # exact duplicates both stay
        ([(1, 2), (1, 3), (2, 2)], [0]),  # same cost: the lower loss wins; same loss: the lower cost wins
        ([(1, math.nan), (2, 2), (math.inf, 0)], [1]),  # NaN and inf never on the front
    ],
)
def test_hand_made_fronts(points, front):
    assert pareto_front(points) == front


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(finite, finite), max_size=40))
def test_front_is_exactly_the_non_dominated_set(points):
    front = set(pareto_front(points))

    def dominates(a, b):
        return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])

    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        assert (i in front) == (not dominated)


def test_frontier_over_variants_and_unknown_axis():
    variants = [
        {
            "variant_id": "a",
            "file_bytes": 10,
            "cost": {"bytes_per_decoded_token": 5, "flops_per_token": 1},
            "loss": {"validation": {"bits_per_byte": 3.0}},
        },
        {
            "variant_id": "b",
            "file_bytes": 20,
            "cost": {"bytes_per_decoded_token": 4, "flops_per_token": 1},
            "loss": {"validation": {"bits_per_byte": 2.0}},
        },
    ]
    assert [p.on_front for p in frontier(variants, "bytes_per_decoded_token")] == [False, True]
    assert [p.on_front for p in frontier(variants, "file_bytes")] == [True, True]
    assert [p.on_front for p in frontier(variants, "host_decode_ms")] == [False, False]  # not measured
    with pytest.raises(ValueError, match="allowed: bytes_per_decoded_token"):
        frontier(variants, "watts")
