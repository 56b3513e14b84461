"""The published presets and the forms' identities."""

import math
import subprocess
import sys

import numpy as np
import pytest

from edgescale.scaling.laws import CHINCHILLA2022, EPOCH2024, KAPLAN2020, PF_DAY, PRESETS, Chinchilla


def test_presets_carry_published_constants_and_conventions():
    assert (CHINCHILLA2022.E, CHINCHILLA2022.A, CHINCHILLA2022.B) == (1.69, 406.4, 410.7)
    assert (CHINCHILLA2022.alpha, CHINCHILLA2022.beta) == (0.34, 0.28)
    assert (EPOCH2024.E, EPOCH2024.alpha, EPOCH2024.beta) == (1.8172, 0.3478, 0.3658)
    assert EPOCH2024.ci["E"] == (1.769, 1.871)
    assert (KAPLAN2020.alpha_N, KAPLAN2020.N_c, KAPLAN2020.alpha_D, KAPLAN2020.D_c) == (0.076, 8.8e13, 0.095, 5.4e13)
    assert (KAPLAN2020.joint_alpha_D, KAPLAN2020.joint_N_c, KAPLAN2020.joint_D_c) == (0.103, 6.4e13, 1.8e13)
    assert KAPLAN2020.n_convention == "non_embedding" and CHINCHILLA2022.n_convention == "total"
    for law in PRESETS.values():
        assert law.source and law.corpus


def test_epoch_allocation_exponent_matches_the_paper():
    assert EPOCH2024.a == pytest.approx(0.513, abs=0.002)  # Besiroglu et al. 2024: a = 0.513 (SE 0.020)


def test_kaplan_forms():
    k = KAPLAN2020
    assert float(k.loss_n(k.N_c)) == pytest.approx(1.0)
    assert float(k.critical_batch_tokens(1.0)) == pytest.approx(2.1e8)
    # Joint law tends to L(N) (Table 2 constants) as D grows.
    n = 1e9
    assert float(k.loss(n, 1e30)) == pytest.approx((k.joint_N_c / n) ** k.joint_alpha_N, rel=1e-6)
    assert float(k.min_tokens_no_overfit(1e9)) == pytest.approx(5e3 * 1e9**0.74)
    n_opt, d = k.compute_optimal(PF_DAY)
    assert n_opt == pytest.approx(1.3e9) and 6 * n_opt * d == pytest.approx(PF_DAY)
    assert float(k.loss(n, k.d_for_loss(3.0, n))) == pytest.approx(3.0)
    assert float(k.loss(k.n_for_loss(3.0, 1e11), 1e11)) == pytest.approx(3.0)


def test_chinchilla_inverses():
    law = EPOCH2024
    assert float(law.loss(law.n_for_loss(2.2, 1e11), 1e11)) == pytest.approx(2.2)
    assert float(law.loss(1e9, law.d_for_loss(2.2, 1e9))) == pytest.approx(2.2)
    assert law.n_for_loss(1.0, 1e11) == math.inf
    assert np.isfinite(law.n_min_for_loss(2.0)) and law.n_min_for_loss(1.8) == math.inf


def test_scaling_imports_without_torch():
    mods = "edgescale.scaling.plan, edgescale.scaling.fit, edgescale.scaling.points"
    code = f"import sys, {mods}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_degenerate_fit_plans_without_overflow():
    """A fit seen on the tiny test study (alpha = 64, A = 1.6e248): N**alpha overflows a float
    inside the target plan's search, which must still end in a plan, not an OverflowError."""
    from edgescale.scaling.plan import plan_for_loss

    law = Chinchilla(E=3.6759, A=1.6302e248, B=6.3598e19, alpha=63.89, beta=5.4569, name="fit")
    assert law.d_for_loss(4.1589, 7.35e8) == pytest.approx((law.B / (4.1589 - law.E)) ** (1 / law.beta))
    assert law.n_for_loss(4.1589, 1e300) == pytest.approx((law.A / (4.1589 - law.E)) ** (1 / law.alpha))
    plan = plan_for_loss(law, 4.1589)
    assert plan.status == "ok" and math.isfinite(plan.n_params) and math.isfinite(plan.n_tokens)
