"""pick on hand-made runs: the cheapest qualifying variant (ties broken by loss, file, id),
its test loss beside the validation loss it was chosen on, limits, a target no variant
meets (the law answers), a target no model can reach, a device nothing fits on."""

import json
import subprocess
import sys

import handmade_results as handmade
import pytest

from edgescale.errors import UserError
from edgescale.report.pick import Limits, Run, pick

V = handmade.variant


def _run(variants, **kw) -> list[Run]:
    return [Run("r", handmade.typed(handmade.results(variants, **kw)))]


FAMILY = [
    V("s/fp32", n=1000, val=2.5, test=2.55, decode={"host": 1.0, "rpi5-8gb": 2.0}, mem=4e6),
    V("m/fp32", n=4000, val=2.1, test=2.16, decode={"host": 2.0, "rpi5-8gb": 4.0}, mem=16e6),
    V("m/int8", n=4000, val=2.15, test=2.2, decode={"host": 1.5, "rpi5-8gb": 2.5}, mem=6e6),
    V("l/fp32", n=16000, val=1.8, test=1.85, decode={"host": 5.0, "rpi5-8gb": 9.0}, mem=64e6),
]


def test_cheapest_variant_meeting_the_target_with_its_test_loss():
    out = pick(_run(FAMILY), 2.2, "rpi5-8gb")
    assert out["status"] == "ok" and out["cost_axis"] == "rpi5-8gb_decode_ms"
    v = out["variant"]
    assert v["variant_id"] == "m/int8"  # 2.5 ms predicted beats m/fp32's 4.0; s/fp32 misses the target
    assert v["loss"] == {
        "selected_on": "validation",
        "validation_bpb": 2.15,
        "test_bpb": 2.2,
        "test_meets_target": True,
        "validation_se_bpb": None,  # the hand-made file records no standard errors
        "test_se_bpb": None,
    }
    assert v["latency"]["source"] == "predicted" and v["latency"]["decode_ms"] == 2.5
    assert out["considered"]["s/fp32"].startswith("validation 2.5000 bits/byte misses")
    host = pick(_run(FAMILY), 2.2, "host")["variant"]
    assert host["variant_id"] == "m/int8" and host["latency"]["source"] == "measured"


def test_test_loss_missing_the_target_is_reported_not_hidden():
    out = pick(_run(FAMILY), 2.15, "host")
    assert out["variant"]["variant_id"] == "m/int8"
    assert out["variant"]["loss"]["test_meets_target"] is False  # 2.2 > 2.15: selected on validation only


@pytest.mark.parametrize(
    ("second", "winner"),
    [
        pytest.param(V("b/fp32", n=9, val=2.0, decode={"host": 1.0}), "b/fp32", id="equal-cost-lower-loss-wins"),
        pytest.param(V("b/fp32", n=9, val=2.1, decode={"host": 1.0}, file_bytes=10), "b/fp32", id="then-smaller-file"),
        pytest.param(V("b/fp32", n=9, val=2.1, decode={"host": 1.0}, file_bytes=36), "a/fp32", id="then-id"),
        pytest.param(V("a/fp32", n=9, val=2.1, decode={"host": 1.0}, file_bytes=36), "a/fp32", id="duplicate"),
    ],
)
def test_ties(second, winner):
    first = V("a/fp32", n=9, val=2.1, decode={"host": 1.0}, file_bytes=36)
    assert pick(_run([first, second]), 2.2, "host")["variant"]["variant_id"] == winner


def test_limits_exclude_and_say_why():
    out = pick(_run(FAMILY), 2.2, "host", limits=Limits(max_latency_ms=1.2))
    assert out["status"] != "ok"
    assert out["considered"]["m/int8"] == "decode 1.5 ms (measured) > 1.2 ms"
    mem = pick(_run(FAMILY), 2.0, "host", limits=Limits(max_memory_mb=70))
    assert mem["variant"]["variant_id"] == "l/fp32"
    assert pick(_run(FAMILY), 2.2, "host", limits=Limits(max_memory_mb=10))["considered"]["m/fp32"].startswith(
        "needs 16"
    )


def test_cost_axis_choice_and_unknown_axis():
    by_bytes = pick(_run(FAMILY), 2.2, "host", cost="bytes_per_decoded_token")
    assert by_bytes["variant"]["variant_id"] == "m/fp32"  # same bytes as m/int8 (4·n), lower loss
    assert pick(_run(FAMILY), 2.2, "rpi5-8gb", cost="energy_mj")["cost_axis"] == "rpi5-8gb_energy_mj"
    with pytest.raises(UserError, match="allowed: decode_ms, prefill_ms, energy_mj"):
        pick(_run(FAMILY), 2.2, "host", cost="watts")


def test_a_device_without_latency_ranks_by_bytes():
    vs = [V("a/fp32", n=10, val=2.0, decode={"host": 1.0}), V("b/fp32", n=5, val=2.0)]
    del vs[1]["latency"]
    out = pick(_run(vs), 2.2, "host", cost=None)
    assert out["cost_axis"] == "host_decode_ms" and out["variant"]["variant_id"] == "a/fp32"  # b has no host latency
    assert "no host_decode_ms" in out["considered"]["b/fp32"]


def _wide_law(monkeypatch):
    """int4's degradation law fitted on a wide synthetic family (the hand-made ladder's δ = 2·(D/N)^0.3/N^0.25 at
    7 sizes over 6 decades, 2 D/N ratios each), so the plan lies inside the law's sampled (N, D/N) box."""
    import numpy as np

    from edgescale.report import extrapolate
    from edgescale.report.degradation import DegradationPoint, fit_degradation

    pts = [
        DegradationPoint(f"w{i}", n, n * r, 2.0 * r**0.3 / n**0.25)
        for i, n in enumerate(np.geomspace(1e3, 1e9, 7))
        for r in (1.0, 1e4)
    ]
    monkeypatch.setattr(extrapolate, "fit_recipes", lambda results: {"int4": fit_degradation("int4", "fp32", pts)})


def test_target_no_variant_meets_is_answered_by_the_law_after_the_recipe(monkeypatch):
    _wide_law(monkeypatch)
    res = _run(handmade.ladder({"int4": 2.0}))
    out = pick(res, 1.9, "rpi5-8gb")  # best variant is s2/fp32 at ~2.23
    assert (
        out["status"] == "plan"
        and out["law"]["law"] == "fit (this run; L = E + A/N^α + B/D^β)"
        and out["law"]["reliable"]
    )
    best = out["best"]
    plan = best["plan"]
    assert plan["n_params"] > 0 and plan["cost"]["compute_flops"] == pytest.approx(plan["compute_flops"])
    # the law's loss plus the recipe's predicted degradation lands on the target
    law = handmade.law_loss(plan["n_params"], plan["n_tokens"])
    assert law + best["degradation_bpb"]["delta"] == pytest.approx(1.9, abs=1e-6)
    assert (
        best["predicted_loss_bpb_interval"][0] <= best["predicted_loss_bpb"] <= best["predicted_loss_bpb_interval"][1]
    )
    assert best["device"]["source"].startswith("predicted (analytic roofline") and best["device"]["decode_ms"] > 0
    recipes = {o["recipe"]: o for o in out["options"]}
    assert set(recipes) == {"fp32", "int4"} and recipes["fp32"]["degradation_bpb"]["delta"] == 0.0
    assert recipes["int4"]["degradation_bpb"]["form"] == "power_law_nd"
    # int4 needs a bigger model to absorb its δ, but streams fewer bytes: on the Pi it is the faster plan
    assert recipes["int4"]["plan"]["n_params"] > recipes["fp32"]["plan"]["n_params"]
    assert best["recipe"] == min(recipes.values(), key=lambda o: o["device"]["decode_ms"])["recipe"]


def test_a_recipe_without_a_degradation_law_at_the_plan_is_listed_with_the_reason():
    out = pick(_run(handmade.ladder({"int4": 2.0})), 1.9, "rpi5-8gb")  # 3 sizes: no degradation law
    recipes = {o["recipe"]: o for o in out["options"]}
    assert out["status"] == "plan" and out["best"]["recipe"] == "fp32"
    assert recipes["int4"]["status"] == "unknown" and "plan" not in recipes["int4"]
    assert "no degradation law: no law fitted" in recipes["int4"]["reason"]
    assert "3 sizes (a law needs ≥ 5)" in recipes["int4"]["reason"]


def test_host_plan_latency_is_extrapolated_from_host_measurements():
    out = pick(_run(handmade.ladder({"int4": 2.0})), 1.9, "host")
    dev = out["best"]["device"]
    assert out["status"] == "plan" and dev["source"].startswith("extrapolated: affine fit") and dev["decode_ms"] > 0


def test_target_below_the_irreducible_loss_is_infeasible():
    out = pick(_run(handmade.ladder({"int4": 2.0})), 0.95, "rpi5-8gb")
    assert out["status"] == "infeasible" and "irreducible loss E = 1" in out["reason"]


def test_device_that_fits_no_variant_says_so():
    out = pick(_run(FAMILY), 2.2, "rpi5-8gb", limits=Limits(max_memory_mb=1))
    assert out["any_variant_fits_memory"] is False
    assert "no variant fits on rpi5-8gb: the smallest, s/fp32, needs 4 MB" in out["memory_note"]
    # the law's model for 2.2 would need more memory too: no answer inside 1 MB
    tight = pick(_run(FAMILY), 1.5, "rpi5-8gb", limits=Limits(max_memory_mb=0.001))
    assert tight["status"] == "infeasible" and "limits" in tight["reason"]


def test_latency_limit_trains_the_largest_model_inside_it_longer():
    res = _run(handmade.ladder({"int4": 2.0}))
    free = pick(res, 1.9, "rpi5-8gb")["best"]
    limit = 0.8 * free["device"]["decode_ms"]
    out = pick(res, 1.9, "rpi5-8gb", limits=Limits(max_latency_ms=limit))
    assert out["status"] == "plan" and out["best"]["device"]["decode_ms"] <= limit * (1 + 1e-6)
    assert out["best"]["plan"]["n_tokens"] > free["plan"]["n_tokens"] and "trained longer" in out["best"]["note"]


def test_failed_fit_falls_back_to_a_preset_and_says_so():
    out = pick(_run(handmade.ladder({"int4": 2.0}), law=None), 1.9, "rpi5-8gb")
    assert out["law"]["law"] == "epoch2024" and out["law"]["reliable"] is False
    assert "fit failed (hand-made: no fit)" in out["law"]["caveat"]


def test_several_runs_pick_across_them_and_refuse_mixed_protocols():
    a, b = handmade.results(FAMILY[:2]), handmade.results([V("x/fp32", n=10, val=2.0, decode={"host": 0.5})])
    out = pick([Run("A", handmade.typed(a)), Run("B", handmade.typed(b))], 2.2, "host")
    assert (out["variant"]["run"], out["variant"]["variant_id"]) == ("B", "x/fp32") and "B:x/fp32" in out["considered"]
    b["protocol"] = {**b["protocol"], "split_sha256": "other"}
    with pytest.raises(UserError, match="split_sha256"):
        pick([Run("A", handmade.typed(a)), Run("B", handmade.typed(b))], 2.2, "host")
    # a run capped in another tokenizer's tokens read an unknown span of text: not comparable
    tok = "GPT2TokenizerFast sha256:" + "1" * 64
    b["protocol"] = {**a["protocol"], "tokenizer": tok, "max_tokens": 65536}
    b["protocol"].pop("max_bytes", None)
    with pytest.raises(UserError, match="max_bytes"):
        pick([Run("A", handmade.typed(a)), Run("B", handmade.typed(b))], 2.2, "host")
    # capped in text bytes, a run in another tokenizer scored the same text: it competes
    b["protocol"] = {**a["protocol"], "tokenizer": tok, "max_bytes": handmade.typed(a).protocol.max_bytes}
    out = pick([Run("A", handmade.typed(a)), Run("B", handmade.typed(b))], 2.2, "host")
    assert out["variant"]["run"] == "B"


def test_bad_inputs_name_the_option():
    with pytest.raises(UserError, match="--device: no latency for 'iphone' in this run; allowed: host, rpi5-8gb"):
        pick(_run(FAMILY), 2.2, "iphone")
    with pytest.raises(UserError, match="--loss-target-bpb"):
        pick(_run(FAMILY), -1.0, "host")


def _cli(*args):
    cmd = [sys.executable, "-m", "edgescale.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_json_and_exit_codes(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(handmade.results(handmade.ladder({"int4": 2.0}))))
    alone = _cli("pick", tmp_path, "--target-loss", 2.6, "--device", "rpi5-8gb", "--json")
    assert alone.returncode == 2 and "no manifest.json" in alone.stderr  # nothing proves such a run finished
    ok = _cli("pick", tmp_path, "--target-loss", 2.6, "--device", "rpi5-8gb", "--json", "--allow-unfinished")
    assert ok.returncode == 0, ok.stderr
    assert "UNFINISHED RUN" in ok.stderr and "files are not there" in ok.stderr
    body = json.loads(ok.stdout)
    assert body["status"] == "ok" and body["variant"]["onnx_file"] == str(tmp_path / body["variant"]["onnx_path"])
    bad = _cli("pick", tmp_path, "--target-loss", 0.5, "--device", "rpi5-8gb", "--json", "--allow-unfinished")
    assert bad.returncode == 3 and json.loads(bad.stdout)["status"] == "infeasible"  # as edgescale plan
    wrong = _cli("pick", tmp_path, "--target-loss", 2.0, "--device", "nope", "--allow-unfinished")
    assert wrong.returncode == 2 and "allowed: host, rpi5-8gb" in wrong.stderr and "Traceback" not in wrong.stderr


def test_pretrained_candidates_with_unknown_training_tokens_that_miss_the_target_get_an_answer():
    """Issue 15: a pretrained checkpoint (training tokens unknown: 0) that misses the target used
    to end in a ZeroDivisionError (recipe_scales, law_check). The answer is the nearest miss and a
    plan from the published law, or infeasible: never a traceback."""
    hf = [
        V("ckpt/fp32", n=300_000, val=2.5, tokens=0, decode={"host": 0.4, "rpi5-8gb": 0.9}),
        V("ckpt/int8_dynamic", n=300_000, val=2.51, tokens=0, bytes_=300_000, decode={"host": 0.3, "rpi5-8gb": 0.5}),
        V(
            "ckpt/heads_ffn50_recover", n=150_000, val=2.6, tokens=50_000, bytes_=600_000,
            decode={"host": 0.2, "rpi5-8gb": 0.4}, steps=[{"op": "distill.recover", "metrics": {"tokens": 50_000}}],
        ),
    ]  # fmt: skip
    out = pick(_run(hf, law=None), 2.0, "rpi5-8gb")
    assert out["status"] in ("plan", "infeasible")
    assert out["nearest_miss"]["variant_id"] == "ckpt/fp32" and out["nearest_miss"]["miss_bpb"] == pytest.approx(0.5)
    options = {o["recipe"]: o for o in out["options"]}
    assert "training tokens are unknown" in options["heads_ffn50_recover"]["reason"]
    assert all(c["law_bpb"] is None for c in out["law"]["check"])  # no (N, D) to check the law at


def test_unreachable_target_on_an_unidentified_law_says_what_to_train_not_a_plan():
    raw = handmade.results(handmade.ladder({"int4": 2.0}))
    sc = raw["scaling"]
    sc["law"]["unidentified"] = {"E": "collapsed to 5.5e-10: the data show no loss floor"}
    sc["points"] = [
        {"size": s["size"], "N": s["params_total"], "D": s["train_tokens"] * f, "bits_per_byte": 2.5}
        for s in raw["sizes"]
        for f in (0.5, 1.0)
    ]
    out = pick([Run("r", handmade.typed(raw))], 1.9, "rpi5-8gb")
    assert out["status"] == "unidentified" and out["options"] == [] and "best" not in out
    add = out["identify_with"]
    assert min(add["add_sizes"]) > 320_000  # beyond the ladder's largest size
    assert all(len(b["D"]) == 2 for b in add["token_budgets"])  # two more D/N ratios at every size
    assert "train sizes of about" in out["reason"] and "tokens" in out["reason"]
    assert out["law"]["reliable"] is False
    from edgescale.report.pick import summary_lines

    assert any("train sizes of about" in line for line in summary_lines(out))


def test_measured_latency_prints_as_a_spread_and_predicted_as_an_interval():
    from edgescale.report.pick import summary_lines

    host = summary_lines(pick(_run(FAMILY), 2.2, "host"))
    line = next(x for x in host if x.strip().startswith("decode"))
    # m/int8 on the host: p50 1.5 ms, p90 1.8 ms (handmade: p90 = 1.2 x p50)
    assert "p50 1.5 ms (p50–p90 spread of the samples 1.5–1.8 ms, measured)" in line and "[" not in line
    pred = summary_lines(pick(_run(FAMILY), 2.2, "rpi5-8gb"))
    assert "decode 2.5 ms [1.25, 3.75] (predicted)" in next(x for x in pred if x.strip().startswith("decode"))
