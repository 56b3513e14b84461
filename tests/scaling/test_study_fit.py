"""The run's law: fitted once, and its bootstrap refits stored for the report's bands."""

import numpy as np
import pytest

from edgescale.report.plots import law_draws
from edgescale.results.schema import Scaling
from edgescale.scaling.study import fit_study

LAW = {"E": 1.2, "A": 40.0, "B": 300.0, "alpha": 0.35, "beta": 0.4}


def _sizes(noise: float = 0.004) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for n, d in ((20_000, 1e6), (80_000, 1.5e6), (320_000, 4e6)):
        curve = []
        for frac in (0.25, 0.5, 1.0):
            loss = LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / (d * frac) ** LAW["beta"]
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
    assert np.quantile(rows[:, 3], 0.025) >= lo - 1e-6 and np.quantile(rows[:, 3], 0.975) <= hi + 1e-6
    # a run written before the refits were stored: refitted by the same resampling, in the same units
    old = Scaling.model_validate({k: v for k, v in sc.items() if k != "bootstrap"})
    again = law_draws(old, n_boot=60)
    assert len(again) >= 50 and np.isfinite(again).all()
    for col in (0, 3, 4):  # E, alpha, beta: identified, so the two routes agree closely
        assert np.median(again[:, col]) == pytest.approx(np.median(rows[:, col]), rel=0.05)
