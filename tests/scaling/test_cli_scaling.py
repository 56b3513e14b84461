"""`edgescale plan` and `edgescale fit` print one JSON object; infeasible targets have their own exit code."""

import json

import numpy as np
import pytest
from cli_runner import run_cli

from edgescale.scaling.laws import EPOCH2024


def _cli(*args):
    return run_cli(*args)


def test_plan_compute_json():
    r = _cli("plan", "--compute", "1e21", "--law", "chinchilla2022", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "ok" and out["law"] == "chinchilla2022"
    assert out["compute_flops"] == 6 * out["n_params"] * out["n_tokens"]
    assert set(out["shape"]) >= {"n_layer", "n_embd", "n_head"}


def test_plan_infeasible_target_exit_3():
    r = _cli("plan", "--loss-target", "1.5", "--json")
    assert r.returncode == 3
    out = json.loads(r.stdout)
    assert out["status"] == "infeasible" and "irreducible" in out["reason"]


def test_plan_bad_options_exit_2():
    for args in (("plan", "--json"), ("plan", "--compute", "-1"), ("plan", "--compute", "1e20", "--law", "gpt5")):
        r = _cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)


def test_fit_csv_json_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 60))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 60))
    loss = EPOCH2024.loss(n, d) * np.exp(rng.normal(0, 0.005, 60))
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, loss, strict=True)))
    png = tmp_path / "fit.png"
    r = _cli("fit", csv, "--json", "--plot", png, "--bootstrap", "40")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n_points"] == 60 and set(out["ci"]) >= {"E", "A", "B", "alpha", "beta"}
    assert abs(out["E"] - EPOCH2024.E) < 0.1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_fit_bad_csv_exit_2(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("N,loss\n1,2\n")
    r = _cli("fit", csv)
    assert r.returncode == 2 and "missing column(s) D" in r.stderr


def test_plan_with_a_fitted_law_and_a_compute_cap(tmp_path):
    rng = np.random.default_rng(1)
    n = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 40))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 40))
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, EPOCH2024.loss(n, d), strict=True)))
    r = _cli("plan", "--loss-target", "2.3", "--compute", "1e22", "--law", f"fit:{csv}", "--bootstrap", "40", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["objective"] == "target_loss_compute_cap" and abs(out["predicted_loss"] - 2.3) < 1e-6
    assert out["compute_flops"] == 1e22 or abs(out["compute_flops"] / 1e22 - 1) < 1e-9
    r = _cli("plan", "--loss-target", "2.0", "--compute", "1e17", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["status"] == "infeasible"


def test_plan_without_json_prints_a_summary_not_a_dict():
    r = _cli("plan", "--loss-target", "2.4", "--law", "epoch2024", "--unique-tokens", "1e10")
    assert r.returncode == 0, r.stderr
    assert "{" not in r.stdout and "status: ok" in r.stdout and "law: epoch2024 (L = E + A/N^α + B/D^β)" in r.stdout
    assert "N = " in r.stdout and "epochs of 1e+10 unique tokens" in r.stdout and "nats/token" in r.stdout
    r = _cli("plan", "--compute", "1e21", "--law", "epoch2024", "--unique-tokens", "1e9", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "data_limited"


def test_plan_from_an_unidentified_fit_answers_unidentified(tmp_path):
    rng = np.random.default_rng(3)  # no loss floor: E is not identified in either form
    n = np.exp(rng.uniform(np.log(1e4), np.log(5e5), 12))
    d = np.exp(rng.uniform(np.log(2e5), np.log(2e6), 12))
    loss = (40 / n**0.1 + 60 / d**0.2) * np.exp(rng.normal(0, 0.005, 12))
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, loss, strict=True)))
    r = _cli("plan", "--loss-target", "3.0", "--law", f"fit:{csv}", "--bootstrap", "40", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "unidentified" and "E" in out["unidentified"] and out["n_params"] is None
    assert out["identify_with"]["add_sizes"] and out["identify_with"]["token_budgets"]
    r = _cli("plan", "--loss-target", "3.0", "--law", f"fit:{csv}", "--bootstrap", "40")
    assert "status: unidentified" in r.stdout and "train (N total → D tokens)" in r.stdout


def test_flat_losses_are_one_error_not_a_traceback(tmp_path):
    flat = tmp_path / "flat.csv"
    flat.write_text("N,D,loss\n" + "".join(f"{n:g},{10 * n:g},3.0\n" for n in (1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7)))
    r = _cli("fit", flat, "--json", "--bootstrap", "20")
    assert r.returncode == 2 and "every loss is 3" in r.stderr and "Traceback" not in r.stderr


def test_emit_writes_null_for_non_finite_numbers(capsys):
    from edgescale.cli.common import emit

    emit({"a": float("nan"), "b": [float("inf"), 1.0], "c": np.array([np.nan, 2.0]), "d": np.float64("-inf")}, True)
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert out == {"a": None, "b": [None, 1.0], "c": [None, 2.0], "d": None}
