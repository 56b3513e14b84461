"""Planner invariants: C = 6ND, closed form = numeric optimum, allocation exponent, infeasible targets."""

import math

import numpy as np
import pytest

from edgescale.models.shape import shape_for_params
from edgescale.scaling.laws import CHINCHILLA2022, EPOCH2024, KAPLAN2020
from edgescale.scaling.plan import (
    Infeasible,
    compute_optimal_numeric,
    plan_for_compute,
    plan_for_loss,
    smallest_n_under_compute,
)


@pytest.mark.parametrize("c", [1e18, 1e21, 5.76e23])
def test_compute_optimal_closed_form_equals_numeric_and_spends_the_budget(c):
    p = plan_for_compute(CHINCHILLA2022, c)
    assert p.compute_flops == pytest.approx(6 * p.n_params * p.n_tokens) == pytest.approx(c)
    n, d = compute_optimal_numeric(CHINCHILLA2022, c)
    assert p.n_params == pytest.approx(n, rel=1e-4) and p.n_tokens == pytest.approx(d, rel=1e-4)


def test_n_opt_scales_as_c_to_the_a():
    cs = np.geomspace(1e18, 1e24, 7)
    ns = [CHINCHILLA2022.compute_optimal(c)[0] for c in cs]
    slope = np.polyfit(np.log(cs), np.log(ns), 1)[0]
    assert slope == pytest.approx(CHINCHILLA2022.beta / (CHINCHILLA2022.alpha + CHINCHILLA2022.beta), rel=1e-9)


def test_target_loss_plans_reach_the_target():
    p = plan_for_loss(EPOCH2024, 2.1)
    assert p.status == "ok" and p.predicted_loss == pytest.approx(2.1, rel=1e-6)
    # Minimum training compute to a target is the compute-optimal point of that budget.
    q = plan_for_compute(EPOCH2024, p.compute_flops)
    assert q.n_params == pytest.approx(p.n_params, rel=1e-3)
    capped = plan_for_loss(EPOCH2024, 2.1, max_tokens=p.n_tokens * 4)
    assert capped.n_params < p.n_params and capped.predicted_loss == pytest.approx(2.1)


def test_inference_demand_makes_models_smaller_and_longer_trained():
    base = plan_for_loss(EPOCH2024, 2.1)
    served = plan_for_loss(EPOCH2024, 2.1, inference_tokens=1e13)
    assert served.n_params < base.n_params and served.n_tokens > base.n_tokens
    assert served.lifetime_flops < base.compute_flops + 2 * base.n_params * 1e13
    assert served.predicted_loss == pytest.approx(2.1, rel=1e-6)


def test_unreachable_target_is_infeasible_not_an_error():
    for target in (1.7, 1.85):  # below E, and inside E's published interval
        p = plan_for_loss(EPOCH2024, target)
        assert p.status == "infeasible" and "irreducible" in p.reason and p.n_params is None
    p = plan_for_loss(EPOCH2024, 2.1, max_tokens=1e6)
    assert p.status == "infeasible" and "tokens" in p.reason
    with pytest.raises(Infeasible):
        smallest_n_under_compute(EPOCH2024, 2.0, 1e18)


def test_smallest_n_under_compute_is_on_the_boundary():
    c = 1e22
    n = smallest_n_under_compute(EPOCH2024, 2.3, c)
    assert float(EPOCH2024.loss(n, c / (6 * n))) == pytest.approx(2.3, rel=1e-9)
    assert n < EPOCH2024.compute_optimal(c)[0]


def test_kaplan_preset_plans():
    p = plan_for_compute(KAPLAN2020, 8.64e19)
    assert p.n_params == pytest.approx(1.3e9)
    assert plan_for_loss(KAPLAN2020, 3.0).predicted_loss == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("n", [1.4e4, 1.5e5, 1e6, 1.25e8, 7e9])
def test_shape_for_params_is_close_and_sane(n):
    s = shape_for_params(n)
    assert abs(math.log(s.params_non_embedding / n)) < 0.15
    assert 16 <= s.n_embd / s.n_layer <= 128 and s.n_embd % s.n_head == 0


def test_plan_reports_checks_and_cost_assumptions():
    p = plan_for_compute(EPOCH2024, 1e21, peak_flops=1e15, mfu=0.5, power_w=700)
    assert p.cost.accelerator_hours == pytest.approx(1e21 / (1e15 * 0.5) / 3600)
    assert p.cost.energy_kwh == pytest.approx(p.cost.accelerator_hours * 0.7)
    assert p.cost.assumptions["utilisation"] == 0.5
    assert "caveat" in p.checks["critical_batch_tokens"]
    assert set(p.to_dict()) >= {"n_params", "n_tokens", "compute_flops", "predicted_loss", "shape", "law"}


def test_a_total_n_law_gets_a_shape_with_that_total_not_that_non_embedding_count():
    from edgescale.scaling.laws import Chinchilla
    from edgescale.scaling.plan import shape_for_law

    law = Chinchilla(E=1.0, A=40.0, B=200.0, alpha=0.35, beta=0.35, n_convention="total")
    for n in (1e5, 1e6, 1e7):
        shape = shape_for_law(law, n)
        assert abs(math.log(shape.params_total / n)) <= abs(math.log(shape_for_params(n).params_total / n))
        assert shape.params_total == pytest.approx(n, rel=0.3)
    assert shape_for_params(1e5).params_total > 1.3e5  # the old, non-embedding match overshoots a small model
    # a total N below the smallest buildable model: the plan says so instead of printing a shape as if it fit
    p = plan_for_loss(law, float(law.loss(2_316, 1e9)), max_tokens=1e9)
    assert p.status == "ok" and p.n_params == pytest.approx(2_316) and p.shape.params_total > 2 * p.n_params
    assert any("nearest buildable shape" in note for note in p.notes)


def test_data_to_identify_suggests_larger_sizes_and_more_token_ratios():
    from edgescale.scaling.plan import data_to_identify

    add = data_to_identify([2e4, 2e4, 8e4, 3.2e5], [1e6, 2e6, 1.5e6, 4e6], ["E"])
    assert add["add_sizes"] == [1e6, 3.2e6]  # half a decade and a decade above the largest
    assert add["add_tokens_per_param"] == [3.1, 400.0]  # D/N 12.5-100 → ÷4 and ×4
    assert [b["N"] for b in add["token_budgets"]] == [2e4, 8e4, 3.2e5, 1e6, 3.2e6]
    assert "E not identified" in add["summary"]
    # the default ladder's range starts near one token per parameter: no budget below it, two above
    low = data_to_identify([2.5e4, 4.8e5], [2.6e4, 1.9e7], ["beta"])
    assert low["add_tokens_per_param"] == [160.0, 630.0]  # D/N 1.04-39.6 → ×4 and ×16, never below 1
    # the largest budget (3.2e6 x 400 = 1.3e9 tokens, two figures) at 4 epochs needs 3.25e8 unique tokens
    assert add["unique_tokens_needed"] == pytest.approx(1.3e9 / 4)
    short = data_to_identify([2e4, 2e4, 8e4, 3.2e5], [1e6, 2e6, 1.5e6, 4e6], ["E"], unique_tokens=4.19e6)
    assert "3.2e+08 unique tokens" in short["summary"] and "77.6x the 4.19e+06 this corpus has" in short["summary"]
    assert "this corpus has" not in data_to_identify([2e4, 8e4], [1e6, 2e6], ["E"], unique_tokens=1e12)["summary"]


def test_epoch_rule_caps_tokens_by_the_data_that_exists():
    """Muennighoff et al. 2023: within 4 epochs a plan is ok and states its epochs; beyond, the law is
    evaluated at the effective tokens D' and the answer is data_limited with the unique tokens needed."""
    from edgescale.scaling.laws import EPOCH2024
    from edgescale.scaling.plan import MAX_EPOCHS, effective_tokens, plan_for_compute, plan_for_loss

    assert effective_tokens(1e9, 1e9) == 1e9 and effective_tokens(4e9, 1e9) < 4e9
    assert effective_tokens(1e15, 1e9) < 1e9 * 16.4 + 1  # repeats saturate at U·(1 + R*)
    free = plan_for_compute(EPOCH2024, 1e21)
    within = plan_for_compute(EPOCH2024, 1e21, unique_tokens=free.n_tokens / 2)
    assert within.status == "ok" and within.epochs == pytest.approx(2) and "Muennighoff" in within.data_rule
    beyond = plan_for_compute(EPOCH2024, 1e21, unique_tokens=free.n_tokens / 10)
    assert beyond.status == "data_limited" and beyond.epochs == pytest.approx(10)
    assert beyond.unique_tokens_needed == pytest.approx(free.n_tokens / MAX_EPOCHS)
    assert beyond.predicted_loss > free.predicted_loss  # the law at D' < D
    assert beyond.predicted_loss == pytest.approx(float(EPOCH2024.loss(beyond.n_params, beyond.effective_tokens)))
    assert "unique tokens would keep it within 4 epochs" in beyond.reason
    # a loss target past 4 epochs falls back to the smallest N reaching it at 4 epochs
    target = plan_for_loss(EPOCH2024, 2.4)
    capped = plan_for_loss(EPOCH2024, 2.4, unique_tokens=target.n_tokens / 10)
    assert capped.status == "ok" and capped.objective == "target_loss_data_cap"
    assert capped.epochs == pytest.approx(MAX_EPOCHS) and capped.n_params > target.n_params
    assert capped.predicted_loss == pytest.approx(2.4, rel=1e-6)
    # ... and when no N reaches it at 4 epochs: data_limited, with the unique tokens to collect
    starved = plan_for_loss(EPOCH2024, 2.4, unique_tokens=1e6)
    assert starved.status == "data_limited" and starved.unique_tokens_needed > 1e6


def test_unidentified_law_gives_no_plan():
    from edgescale.scaling.laws import EPOCH2024
    from edgescale.scaling.plan import plan_for_compute, plan_for_loss, plan_smallest_under_compute

    weak = EPOCH2024.with_(unidentified=("E",), identify_with={"summary": "E not identified: train more"})
    for p in (plan_for_loss(weak, 2.4), plan_for_compute(weak, 1e21), plan_smallest_under_compute(weak, 2.4, 1e21)):
        assert p.status == "unidentified" and p.n_params is None and "train more" in p.reason
