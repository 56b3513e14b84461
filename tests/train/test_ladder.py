"""The ladder's schedules, evaluation protocol, LR rule and seeds (issue 16, finding 2)."""

import pytest
import torch

from edgescale.config import TrainingConfig
from edgescale.models.gpt import GPT, GPTConfig
from edgescale.scaling.study import cooled_points
from edgescale.train.trainer import _optimizer, hidden_lr_scale, lr_at, train, warmup_steps, wsd_branches

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
WSD = TrainingConfig(
    batch_size=8,
    eval_every_tokens=256 * 4,
    eval_tokens=256,
    cooled_eval_tokens=512,
    checkpoint_every_steps=4,
    threads=1,
    learning_rate=1e-2,
    schedule="wsd",
    cooled_fractions=[0.25, 0.5, 1.0],
    cooldown_fraction=0.2,
    warmup_fraction=0.2,
)
TOKENS = 256 * 40  # 40 steps of 8 x 32


def test_warmup_and_cooldown_scale_with_each_branch():
    # 100 steps, branches of 25, 50 and 100 steps: the cooldown is 20% of each branch, the warmup
    # 20% of the shortest (5 steps), so at most 20% of every branch -- not 20% of the full run.
    cfg = WSD.model_copy(update={"cooldown_fraction": 0.2})
    assert wsd_branches(100, cfg) == {20: 5, 40: 10, 80: 20}
    assert warmup_steps(100, cfg) == 5
    assert lr_at(4, 100, cfg) == pytest.approx(cfg.learning_rate) and lr_at(3, 100, cfg) < cfg.learning_rate
    cosine = cfg.model_copy(update={"schedule": "cosine"})
    assert warmup_steps(100, cosine) == 20  # cosine has no branches: the run itself


def test_cooled_points_record_their_schedule_and_one_eval_protocol(corpus, tmp_path):
    res = train(CFG, WSD, corpus, TOKENS, 0, tmp_path, "w")
    cooled = [c for c in res.curve if c["cooled"]]
    periodic = [c for c in res.curve if not c["cooled"]]
    assert [(c["step"], c["cooldown_steps"]) for c in cooled] == [(10, 2), (20, 4), (40, 8)]
    for c in cooled:
        assert c["warmup_steps"] == 2 <= WSD.warmup_fraction * c["step"]
    # every fit point on the same windows and token count; periodic points cheaper and out of the fit
    assert {(c["in_fit"], c["eval_tokens"]) for c in cooled} == {(True, WSD.cooled_eval_tokens)}
    assert periodic and {(c["in_fit"], c["eval_tokens"]) for c in periodic} == {(False, WSD.eval_tokens)}
    fit = cooled_points([{"size": "x", "params_total": 1, "curve": res.curve}])
    assert [p["D"] for p in fit] == [c["tokens"] for c in res.curve if c["in_fit"]]


def test_cosine_final_point_is_scored_like_a_fit_point(corpus, tmp_path):
    cfg = WSD.model_copy(update={"schedule": "cosine", "cooled_fractions": [1.0]})
    res = train(CFG, cfg, corpus, 256 * 8, 0, tmp_path, "c")
    last = res.curve[-1]
    assert last["cooled"] and last["in_fit"] and last["eval_tokens"] == cfg.cooled_eval_tokens


def test_mup_width_rule_scales_hidden_matrices_only():
    mup = WSD.model_copy(update={"lr_rule": "mup_width", "lr_base_width": 32})
    assert hidden_lr_scale(GPTConfig(n_layer=4, n_head=4, n_embd=96), mup) == pytest.approx(1 / 3)
    assert hidden_lr_scale(GPTConfig(n_layer=1, n_head=2, n_embd=32), mup) == 1.0
    assert hidden_lr_scale(GPTConfig(n_layer=4, n_head=4, n_embd=96), WSD) == 1.0  # fixed
    model = GPT(CFG, seed=0)
    opt = _optimizer(model, mup, hidden_lr_scale(CFG, mup))
    scale_of = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["wte.weight"])] == 1.0 and scale_of[id(named["wpe.weight"])] == 1.0
    hidden = [n for n, p in named.items() if p.dim() >= 2 and not n.startswith(("wte", "wpe", "lm_head"))]
    assert hidden and all(scale_of[id(named[n])] == 2.0 for n in hidden)  # 32 / 16
    assert all(scale_of[id(p)] == 1.0 for p in named.values() if p.dim() < 2)


def test_lr_used_is_recorded(corpus, tmp_path):
    mup = WSD.model_copy(update={"lr_rule": "mup_width", "lr_base_width": 8})
    res = train(CFG, mup, corpus, 256 * 8, 0, tmp_path, "m")
    h = res.hparams
    assert h["lr_rule"] == "mup_width" and h["peak_lr_hidden"] == pytest.approx(mup.learning_rate * 8 / 16)
    assert h["peak_lr_embedding"] == mup.learning_rate and h["beta2"] == 0.95 and h["warmup_steps"] >= 1
    assert "Yang et al. 2022" in h["lr_source"]


def test_seeds_give_different_inits_and_curves(corpus, tmp_path):
    a = train(CFG, WSD, corpus, 256 * 8, 0, tmp_path / "a", "s")
    b = train(CFG, WSD, corpus, 256 * 8, 1, tmp_path / "b", "s")
    assert not torch.equal(GPT(CFG, seed=0).wte.weight, GPT(CFG, seed=1).wte.weight)
    assert a.curve[-1]["val_bpb"] != b.curve[-1]["val_bpb"]


def test_every_seed_enters_the_fit_as_its_own_run():
    from edgescale.results.assemble import _fit_runs, _size

    point = {"tokens": 10, "val_bpb": 3.0, "cooled": True, "in_fit": True}
    rec = {"tokens": 10, "seconds": 1.0, "curve": [point], "seed": 0, "hparams": None}

    class Plan:
        name, shape, teacher, capped_by = "s0", {}, None, "rule"

        class acct:
            params_non_embedding, params_total = 10, 20

    size = _size(Plan, {"s0": rec}, {}, 10, [{**rec, "seed": 1, "curve": [{**point, "val_bpb": 3.1}]}])
    assert size["seed"] == 0 and [r["seed"] for r in size["seed_runs"]] == [1]
    pts = cooled_points(_fit_runs([size]))
    assert [(p["size"], p["bits_per_byte"]) for p in pts] == [("s0", 3.0), ("s0@seed1", 3.1)]
