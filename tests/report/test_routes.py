"""Train small vs train big and compress: training compute by part (teacher, recovery),
the law's scratch model at the same inference cost, and the cheaper route per device."""

import handmade_results as handmade
import pytest

from edgescale.report.routes import routes, training_flops

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
        V("l/fp32", n=100_000, val=2.4, decode={"host": 3.0, "rpi5-8gb": 8.0}, energy={"rpi5-8gb": 40.0}),
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
    return handmade.results(vs, target=2.5, sizes=[SIZES["s"], SIZES["l"]])


def test_per_device_verdict_uses_energy_where_there_is_a_power_figure():
    out = routes(handmade.typed(_run()), ["host", "rpi5-8gb"], served_tokens=1e9)
    host, pi = out["per_device"]["host"], out["per_device"]["rpi5-8gb"]
    # host: no energy figure; FLOPs (2·N per token) favour the pruned model
    assert host["by"] == "lifetime_flops" and host["cheaper"] == "train big and compress"
    assert host["train_big_and_compress"]["variant_id"] == "l/prune" and host["train_small"]["variant_id"] == "l/fp32"
    assert host["train_big_and_compress"]["inference_flops"] == 2 * 60_000 * 1e9
    # Pi: predicted energy per token × served tokens, plus training energy; int8 draws least
    assert pi["by"] == "lifetime_kwh" and pi["train_big_and_compress"]["variant_id"] == "l/int8"
    assert pi["train_big_and_compress"]["inference_kwh"] == pytest.approx(15e-3 * 1e9 / 3.6e6)
    assert pi["ratio"] == pytest.approx(
        pi["train_small"]["lifetime_kwh"] / pi["train_big_and_compress"]["lifetime_kwh"]
    )
    assert "rpi5-8gb, 1e+09 served tokens: train big and compress (l/int8" in pi["statement"]
    law_plan = pi["law_scratch_plan"]
    assert law_plan["status"] == "ok" and handmade.law_loss(law_plan["params_total"], law_plan["tokens"]) == (
        pytest.approx(2.5)
    )


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
