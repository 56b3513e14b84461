"""Train small vs train big and compress: training compute by part (teacher, recovery),
the law's scratch model at the same inference cost, and the cheaper route per device."""

import handmade_results as handmade
import pytest

from edgescale.report.routes import routes, training_flops
from edgescale.results.analysis_schema import Routes

V = handmade.variant
RECOVER = [{"op": "prune.heads", "metrics": {}}, {"op": "distill.recover", "metrics": {"tokens": 100_000}}]
SIZES = {
    "s": {"size": "s", "params_total": 10_000, "train_tokens": 1_000_000, "distilled_from": None},
    "l": {"size": "l", "params_total": 100_000, "train_tokens": 2_000_000, "distilled_from": None},
    "s-kd": {"size": "s-kd", "params_total": 10_000, "train_tokens": 1_000_000, "distilled_from": "l"},
}


def _flops(variant: dict) -> dict:
    """``training_flops`` of ``variant`` against the ladder ``SIZES``, both parsed with the schema."""
    res = handmade.typed(handmade.results([variant], sizes=list(SIZES.values())))
    return training_flops(res.variants[0], {s.size: s for s in res.sizes})


def test_training_flops_count_teacher_and_recovery():
    plain = _flops(V("s/fp32", n=10_000, val=2.0))
    assert plain["total"] == plain["pretrain"] == 6 * 10_000 * 1_000_000
    kd = _flops(V("s-kd/fp32", n=10_000, val=2.0))
    assert kd["teacher"] == 6 * 100_000 * 2_000_000 and kd["teacher_forward"] == 2 * 100_000 * 1_000_000
    assert kd["total"] == 6e10 + 1.2e12 + 2e11
    pruned = _flops(V("l/prune", n=60_000, val=2.0, steps=RECOVER))
    assert pruned["recovery"] == 100_000 * (6 * 60_000 + 2 * 100_000)  # student trains, parent only forwards
    assert pruned["total"] == 6 * 100_000 * 2_000_000 + pruned["recovery"]


def _run():
    vs = [
        V("s/fp32", n=10_000, val=2.9, decode={"host": 1.0, "rpi5-8gb": 1.0}, energy={"rpi5-8gb": 10.0}),
        V("m/fp32", n=40_000, val=2.5, decode={"host": 2.0, "rpi5-8gb": 4.0}, energy={"rpi5-8gb": 60.0}),
        V("l/fp32", n=100_000, val=2.4, decode={"host": 3.0, "rpi5-8gb": 8.0}, energy={"rpi5-8gb": 80.0}),
        V("l/int8", n=100_000, val=2.45, decode={"host": 2.0, "rpi5-8gb": 3.0}, energy={"rpi5-8gb": 15.0}),
        V(
            "l/prune",
            n=60_000,
            val=2.5,
            steps=RECOVER,
            decode={"host": 2.5, "rpi5-8gb": 5.0},
            energy={"rpi5-8gb": 25.0},
        ),
    ]
    m = {"size": "m", "params_total": 40_000, "train_tokens": 1_000_000, "distilled_from": None}
    return handmade.results(vs, target=2.5, sizes=[SIZES["s"], m, SIZES["l"]])


def test_per_device_verdict_compares_a_small_model_with_a_compressed_larger_one():
    out = routes(handmade.typed(_run()), ["host", "rpi5-8gb"], served_tokens=1e9)
    host, pi = out["per_device"]["host"], out["per_device"]["rpi5-8gb"]
    # train small is the cheapest fp32 meeting the target; big-and-compress must come from a LARGER model
    assert host["train_small"]["variant_id"] == "m/fp32"
    assert host["train_big_and_compress"]["variant_id"] == "l/prune"
    # host: no energy figure; counted FLOPs (2·N per token: 40k vs 60k deployed) favour training small
    assert host["by"] == "lifetime_flops" and host["cheaper"] == "train small"
    assert host["train_big_and_compress"]["inference_flops"] == 2 * 60_000 * 1e9
    # Pi: predicted energy per token × served tokens, plus training energy; int8 draws least, and the
    # ±50% prediction intervals (carried through, taken as independent) still leave a 4× gap decisive
    assert pi["by"] == "lifetime_kwh" and pi["train_big_and_compress"]["variant_id"] == "l/int8"
    assert pi["train_big_and_compress"]["inference_kwh"] == pytest.approx(15e-3 * 1e9 / 3.6e6)
    small, big = pi["train_small"], pi["train_big_and_compress"]
    assert pi["ratio"] == pytest.approx(small["lifetime_kwh"] / big["lifetime_kwh"])
    assert pi["ratio_low"] == pytest.approx(small["lifetime_kwh_low"] / big["lifetime_kwh_high"])
    assert pi["ratio_low"] > 1 and pi["cheaper"] == "train big and compress"
    assert "train big and compress is cheaper (m/fp32" in pi["statement"]
    law_plan = pi["law_scratch_plan"]
    assert law_plan["status"] == "ok" and handmade.law_loss(law_plan["params_total"], law_plan["tokens"]) == (
        pytest.approx(2.5)
    )


def test_energy_gap_inside_the_prediction_interval_is_a_tie():
    res = _run()
    res["variants"][3]["latency"]["rpi5-8gb"]["energy_mj_per_token"] = 40.0  # l/int8: 60 vs 40 mJ, ±50% each
    pi = routes(handmade.typed(res), ["rpi5-8gb"], served_tokens=1e9)["per_device"]["rpi5-8gb"]
    assert pi["ratio"] > 1 and pi["ratio_low"] < 1 < pi["ratio_high"]
    assert pi["cheaper"] is None and "a tie within the predictions' uncertainty" in pi["statement"]


def test_compressing_the_small_model_itself_is_not_a_route():
    res = _run()
    res["variants"] = [v for v in res["variants"] if v["variant_id"] in ("s/fp32", "l/fp32", "l/int8")]
    host = routes(handmade.typed(res), ["host"], served_tokens=1e9)["per_device"]["host"]
    assert host["train_small"]["variant_id"] == "l/fp32" and host["train_big_and_compress"] is None
    assert host["cheaper"] is None and "compressing l/fp32 itself, as l/int8, is not a route" in host["statement"]
    assert "by construction" in host["statement"]


def test_an_unreliable_law_gives_no_scratch_plan():
    res = _run()
    res["scaling"]["law"]["unidentified"] = {"E": "interval spans two decades"}
    plan = routes(handmade.typed(res), ["host"], served_tokens=1e9)["per_device"]["host"]["law_scratch_plan"]
    assert plan["status"] == "unreliable" and "params_total" not in plan and "E" in plan["reason"]


def test_points_carry_the_scratch_model_at_the_same_inference_cost():
    out = routes(handmade.typed(_run()), ["rpi5-8gb"], served_tokens=1e9)
    pts = {p["variant_id"]: p for p in out["points"]}
    p = pts["l/int8"]
    same = p["scratch_same_inference_cost"]
    assert same["params_total"] == 100_000
    assert same["tokens_at_same_compute"] == pytest.approx(p["training_flops"]["total"] / (6 * 100_000))
    assert same["loss_bpb_at_same_compute"] == pytest.approx(handmade.law_loss(100_000, same["tokens_at_same_compute"]))
    assert handmade.law_loss(100_000, same["tokens_to_target"]) == pytest.approx(2.5)


def test_no_target_no_verdict():
    res = _run()
    res["loss_target_bpb"] = None
    out = routes(handmade.typed(res), ["host"])
    assert out["per_device"] == {} and "no loss target" in out["note"]


TIE = {"within_noise": True, "slower": False}
AA = {
    "variant": "s/fp32",
    "prefill": {"speedup": 1.0, "low": 0.99, "high": 1.01, **TIE},
    "decode": {"speedup": 1.0, "low": 0.98, "high": 1.02, **TIE},
    "noise_floor": {"prefill": 0.01, "decode": 0.0204},
}


def _timed(small_by_process: list[float], big_by_process: list[float], aa: bool = True) -> dict:
    """The host route pair m/fp32 vs l/prune with per-process decode p50s (and the run's A/A control)."""
    res = _run()
    for v in res["variants"]:
        host, by = v["latency"]["host"], {"m/fp32": small_by_process, "l/prune": big_by_process}.get(v["variant_id"])
        if by:
            host |= {"decode_ms_p50": sorted(by)[len(by) // 2], "decode_ms_p50_by_process": by, "processes": len(by)}
    if aa:
        res["measurement"]["aa"] = AA
    out = routes(handmade.typed(res), ["host"], served_tokens=1e9)
    Routes.model_validate(out)  # the schema takes the time verdict
    return out["per_device"]["host"]


def test_host_time_verdict_from_per_process_p50s():
    host = _timed([2.0, 2.1, 1.9], [2.5, 2.6, 2.4])
    t = host["time"]
    assert t["ratio"] == pytest.approx(2.0 / 2.5)
    # the interval holds the per-process ratios and the A/A width carried to this ratio, and lies below the band
    assert t["ratio_low"] <= min(2.0 / 2.5 * 0.98, 1.9 / 2.4) and t["ratio_high"] >= 2.0 / 2.5 * 1.02
    assert t["ratio_high"] < 1 / 1.0204 and t["faster"] == "train small" and t["noise_floor"] == 0.0204
    assert "train small decodes faster" in host["statement"] and host["cheaper"] == "train small"  # FLOPs agree


def test_host_time_verdict_inside_the_noise_floor_is_a_tie():
    # 1% apart in every process: clear of 1 by resampling alone, but inside the A/A floor of ±2%
    host = _timed([2.0, 2.0, 2.0], [1.98, 1.98, 1.98])
    t = host["time"]
    assert t["ratio"] > 1 and t["faster"] is None
    assert "a tie in measured decode time" in host["statement"]
    # the big route clearly faster in every process
    host = _timed([2.0, 2.1, 1.9], [1.0, 1.1, 0.9])
    assert host["time"]["ratio_low"] > 1.0204 and host["time"]["faster"] == "train big and compress"


def test_host_time_verdict_without_an_interval_cannot_be_known():
    host = _timed([2.0], [2.5], aa=False)  # one process, no A/A control: nothing to build an interval from
    assert host["time"]["ratio_low"] is None and host["time"]["faster"] is None
    assert "cannot be known" in host["time"]["statement"]
    # a predicted device gets no measured time verdict
    pi = routes(handmade.typed(_run()), ["rpi5-8gb"], served_tokens=1e9)["per_device"]["rpi5-8gb"]
    assert "time" not in pi
