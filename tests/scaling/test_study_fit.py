"""The run's law: fitted once, and its bootstrap refits stored for the report's bands."""

import numpy as np
import pytest

from edgescale.report.plots import law_draws
from edgescale.results.schema import Scaling
from edgescale.scaling.study import fit_study

LAW = {"E": 1.2, "A": 40.0, "B": 300.0, "alpha": 0.35, "beta": 0.4}


def _sizes(noise: float = 0.004, law=LAW) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for n, d in ((20_000, 1e6), (80_000, 1.5e6), (320_000, 4e6)):
        curve = []
        for frac in (0.25, 0.5, 1.0):
            loss = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / (d * frac) ** law["beta"]
            loss *= 1 + noise * rng.standard_normal()
            curve.append({"tokens": int(d * frac), "val_bpb": loss, "cooled": True})
        out.append({"size": f"s{n}", "params_total": n, "train_tokens": int(d), "curve": curve})
    return out


def test_the_report_bands_are_the_fits_own_bootstrap_refits():
    sc = fit_study(_sizes(), None, n_boot=60)
    boot = sc["bootstrap"]
    assert boot["columns"] == ["E", "A", "B", "alpha", "beta"] and boot["unit"] == "bits_per_byte"
    rows = np.array(boot["rows"])
    assert 50 <= len(rows) <= 60 and np.isfinite(rows).all()
    draws = law_draws(Scaling.model_validate(sc))
    assert np.array_equal(draws, rows)  # read back, not refitted
    # the law's own 95% interval is the quantiles of the same refits (in bits per byte)
    lo, hi = sc["law"]["ci"]["alpha"]
    # (rows are stored to 6 significant figures)
    assert np.quantile(rows[:, 3], 0.025) >= lo * (1 - 1e-5) and np.quantile(rows[:, 3], 0.975) <= hi * (1 + 1e-5)
    # a run written before the refits were stored: refitted by the same resampling, in the same units
    old = Scaling.model_validate({k: v for k, v in sc.items() if k != "bootstrap"})
    again = law_draws(old, n_boot=60)
    assert len(again) >= 50 and np.isfinite(again).all()
    # E, beta: identified, so the two routes agree closely (alpha is not: 3 sizes resampled whole leave
    # it free, so its refits spread across local optima)
    assert "E" not in sc["law"]["unidentified"] and "beta" not in sc["law"]["unidentified"]
    for col in (0, 4):
        assert np.median(again[:, col]) == pytest.approx(np.median(rows[:, col]), rel=0.05)


def test_an_unidentified_law_gives_no_numeric_plan_but_the_data_to_add():
    """No loss floor in the data (E = 0): E collapses, so the plan for a target is not numbers from
    the law but which sizes and token budgets would identify it (the default run's bug: a plan of
    N = 2,316 from a law with every constant unidentified)."""
    sc = fit_study(_sizes(law={**LAW, "E": 0.0}), 1.0, n_boot=20)
    assert sc["law"]["boot_unit"] == "run" and sc["law"]["boot_n"] == 20  # whole trajectories resampled
    assert "E" in sc["law"]["unidentified"]
    plan = sc["plan_for_target"]
    assert plan["status"] == "unidentified" and plan["reliable"] is False and "E" in plan["unidentified"]
    assert "n_params" not in plan and "n_tokens" not in plan and "predicted_loss_bpb" not in plan
    add = plan["identify_with"]
    assert min(add["add_sizes"]) > 320_000 and len(add["add_tokens_per_param"]) == 2
    assert "train sizes of about" in plan["reason"]
    typed = Scaling.model_validate(sc)  # the schema reads it
    assert typed.plan_for_target.status == "unidentified" and typed.law.boot_dropped == sc["law"]["boot_dropped"]


def test_messages_are_in_bits_per_byte_and_the_plan_states_form_and_epochs():
    """The fit runs in nats; what the report prints beside bpb tables is in bpb. The train split caps
    the plan's tokens (the epoch rule), and the plan names the law's form."""
    import math

    sc = fit_study(_sizes(), 1.9, n_boot=20, train_tokens=10**9)
    law = sc["law"]
    assert law["form"] and law["boot_n"] == 20 and "boot_dropped" in law
    for k in ("E", "A", "B"):
        why = law["unidentified"].get(k, "")
        if "interval" in why:  # the printed interval is the stored (bpb) one, with its unit
            assert "bpb" in why and f"{law['ci'][k][0]:.4g}" in why
    plan = sc["plan_for_target"]
    assert Scaling.model_validate(sc).plan_for_target.status == plan["status"]
    if plan["status"] == "unidentified":
        assert plan["identify_with"]["token_budgets"]
    else:
        assert plan["form"] and "fit (this run;" in plan["law"] and plan["epochs"] is not None
        assert plan["unique_tokens"] == 10**9 and math.isclose(plan["epochs"], plan["n_tokens"] / 1e9)
