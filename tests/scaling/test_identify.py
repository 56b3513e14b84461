"""A law the data can identify: the reduced form where the full one is not, and no plan from neither."""

import numpy as np
import pytest

from edgescale.scaling.fit import FULL_FORM, REDUCED_FORM
from edgescale.scaling.identify import fit_identified, law_from_points
from edgescale.scaling.laws import Chinchilla
from edgescale.scaling.plan import plan_for_compute, plan_for_loss
from edgescale.scaling.points import Points

EQUAL = Chinchilla(E=1.0, A=30.0, B=60.0, alpha=0.3, beta=0.3)


def _narrow(noise=0.003):
    """Four runs over one decade of N, three budgets each at D/N 10-40: too narrow for five constants."""
    n = np.repeat(np.geomspace(2e4, 2e5, 4), 3)
    d = n * np.tile([10, 20, 40], 4)
    loss = EQUAL.loss(n, d) * np.exp(np.random.default_rng(0).normal(0, noise, n.size))
    return n, d, loss, np.repeat(["s0", "s1", "s2", "s3"], 3).tolist()


@pytest.fixture(scope="module")
def narrow():
    n, d, loss, groups = _narrow()
    return fit_identified(n, d, loss, n_boot=20, seed=0, groups=groups, boot_starts=2)


def test_equal_exponents_on_a_narrow_range_the_reduced_form_recovers_the_exponent(narrow):
    assert narrow.full.weak and narrow.full.form == FULL_FORM  # five constants: not separated
    red = narrow.reduced
    assert red is not None and red.form == REDUCED_FORM and red.to_dict()["form"] == REDUCED_FORM
    assert red.weak == [] and narrow.used is red  # re-tested with the same cluster bootstrap
    assert red.boot_unit == "run" and red.law.alpha == red.law.beta
    lo, hi = red.ci["alpha"]
    assert lo <= EQUAL.alpha <= hi and hi - lo < EQUAL.alpha  # the known exponent, inside a real interval
    assert red.ci["beta"] == red.ci["alpha"]
    assert red.law.E <= narrow.full.law.E * 10 and red.ci["E"][1] <= 1.3  # E capped at the lowest loss (1.26)


def test_an_identified_full_form_is_not_reduced():
    rng = np.random.default_rng(2)
    n = np.repeat(np.geomspace(1e4, 1e7, 6), 4)
    d = n * np.tile([2, 10, 50, 250], 6)
    law = Chinchilla(E=1.5, A=60.0, B=200.0, alpha=0.35, beta=0.3)
    found = fit_identified(n, d, law.loss(n, d) * np.exp(rng.normal(0, 0.003, n.size)), n_boot=15, boot_starts=2)
    assert found.full.weak == [] and found.reduced is None and found.used is found.full


def test_a_law_no_form_identifies_plans_nothing_and_says_what_to_train():
    rng = np.random.default_rng(3)  # no loss floor at all, and unequal exponents: E collapses in both forms
    n = np.exp(rng.uniform(np.log(1e4), np.log(5e5), 12))
    d = np.exp(rng.uniform(np.log(2e5), np.log(2e6), 12))
    loss = (40 / n**0.1 + 60 / d**0.2) * np.exp(rng.normal(0, 0.005, 12))
    law = law_from_points(Points(n, d, loss, source="synthetic"), "fit:synthetic", n_boot=6)
    assert "E" in law.unidentified and law.identify_with["add_sizes"]
    for plan in (plan_for_loss(law, 3.0), plan_for_compute(law, 1e18)):
        assert plan.status == "unidentified" and plan.n_params is None and plan.predicted_loss is None
        assert plan.identify_with["token_budgets"] and "no plan" in plan.reason
