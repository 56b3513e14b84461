"""The training loop learns, writes safetensors, and resumes to the same curve."""

import pytest
import torch

from edgescale.config import TrainingConfig
from edgescale.models.checkpoint import load_model
from edgescale.models.gpt import GPTConfig
from edgescale.train.trainer import lr_at, saved_branches, train, validation_bpb

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
TRAIN = TrainingConfig(
    batch_size=8, eval_every_tokens=256 * 5, eval_tokens=512, checkpoint_every_steps=4, threads=1, learning_rate=1e-2
)
TOKENS = 256 * 20  # 20 steps of 8 x 32


def test_training_lowers_validation_loss_and_saves_safetensors(corpus, tmp_path):
    res = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path, "k")
    assert res.steps == 20 and res.tokens == TOKENS
    assert res.curve[-1]["val_bpb"] < res.curve[0]["val_bpb"] < 8.0
    assert res.checkpoint.read_bytes()[:8] != b"\x80\x02\x8a\n"  # not a pickle
    model, meta = load_model(res.checkpoint)
    assert meta["model"]["n_embd"] == 16 and meta["tokens"] == TOKENS
    assert not (tmp_path / "resume.json").exists()


def test_resume_after_interruption_matches_uninterrupted_run(corpus, tmp_path):
    full = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "full", "k")

    class Interrupt(Exception):
        pass

    def stop_at_step_10(done, total, info):
        if done >= 10 * 256:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "cut", "k", stop_at_step_10)
    assert (tmp_path / "cut" / "resume.json").exists()  # checkpoint at step 8
    resumed = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "cut", "k")
    assert [c["tokens"] for c in resumed.curve] == [c["tokens"] for c in full.curve]
    for a, b in zip(resumed.curve, full.curve, strict=True):
        assert a["val_bpb"] == pytest.approx(b["val_bpb"], rel=1e-5)
    wa, wb = load_model(full.checkpoint)[0].state_dict(), load_model(resumed.checkpoint)[0].state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_resume_state_with_another_key_is_ignored(corpus, tmp_path):
    def stop(done, total, info):
        if done >= 10 * 256:
            raise KeyboardInterrupt

    other = TrainingConfig(**{**TRAIN.model_dump(), "learning_rate": 1e-3})
    with pytest.raises(KeyboardInterrupt):
        train(CFG, other, corpus, TOKENS, 0, tmp_path / "a", "other-key", stop)
    res = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "a", "k")
    fresh = train(CFG, TRAIN, corpus, TOKENS, 0, tmp_path / "b", "k")
    assert [c["val_bpb"] for c in res.curve] == pytest.approx([c["val_bpb"] for c in fresh.curve], rel=1e-5)


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, TRAIN) for s in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(TRAIN.learning_rate)
    assert lrs[-1] == pytest.approx(TRAIN.learning_rate * TRAIN.min_lr_ratio, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))


WSD = TrainingConfig(
    **{
        **TRAIN.model_dump(),
        "schedule": "wsd",
        "cooled_fractions": [0.25, 0.5, 1.0],
        "cooldown_fraction": 0.25,
        "cooled_eval_tokens": 512,
    }
)


def test_wsd_leaves_cooled_checkpoints_at_the_budget_fractions(corpus, tmp_path):
    res = train(CFG, WSD, corpus, TOKENS, 0, tmp_path, "w")
    cooled = [c for c in res.curve if c["cooled"]]
    assert [c["tokens"] for c in cooled] == [5 * 256, 10 * 256, 20 * 256]
    assert res.tokens == TOKENS and cooled[-1]["lr"] == pytest.approx(WSD.learning_rate * WSD.min_lr_ratio)
    stable = [c for c in res.curve if not c["cooled"]]
    assert all(c["lr"] == WSD.learning_rate for c in stable)


def test_a_run_outside_the_fit_skips_the_non_final_branches_and_ends_on_the_same_model(corpus, tmp_path):
    ticks = []
    full = train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "full", "w")
    lean = train(
        CFG, WSD, corpus, TOKENS, 0, tmp_path / "lean", "w", lambda d, t, i: ticks.append(t), cooled_branches=False
    )
    assert [c["tokens"] for c in lean.curve if c["cooled"]] == [TOKENS] and lean.branches == []
    assert set(ticks) == {TOKENS}  # no branch steps counted: the progress total is the budget
    a, b = load_model(full.checkpoint)[0].state_dict(), load_model(lean.checkpoint)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # branches decay copies: the main run is untouched
    assert lean.hparams["warmup_steps"] == full.hparams["warmup_steps"]


def test_wsd_resume_matches_uninterrupted(corpus, tmp_path):
    full = train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "full", "w")

    def stop(done, total, info):
        if done >= 12 * 256:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "cut", "w", stop)
    resumed = train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "cut", "w")
    assert [c["tokens"] for c in resumed.curve] == [c["tokens"] for c in full.curve]
    assert [c["val_bpb"] for c in resumed.curve] == pytest.approx([c["val_bpb"] for c in full.curve], rel=1e-5)


def test_cooled_fractions_must_end_at_one():
    with pytest.raises(ValueError, match="end at 1.0"):
        TrainingConfig(schedule="wsd", cooled_fractions=[0.5, 0.8])


def test_bad_checkpoints_are_clear_errors_and_untouched(corpus, tmp_path):
    from edgescale.errors import UserError

    res = train(CFG, TRAIN, corpus, 256 * 4, 0, tmp_path / "ok", "k")
    data = res.checkpoint.read_bytes()
    cases = {
        "truncated.safetensors": (data[: len(data) // 2], "truncated or corrupt"),
        "pickle.pt": (b"\x80\x04\x95" + b"\x00" * 64, "never unpickles"),
        "zip.pt": (b"PK\x03\x04" + b"\x00" * 64, "never unpickles"),
        "text.safetensors": (b"hello", "truncated or corrupt"),
    }
    for name, (blob, fragment) in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(UserError, match=fragment) as e:
            load_model(p)
        assert name in str(e.value) and p.read_bytes() == blob  # nothing overwritten
    other = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=32)
    with pytest.raises(UserError, match="differs from the expected"):
        load_model(res.checkpoint, expect=other)
    assert res.checkpoint.read_bytes() == data


def test_wsd_saves_each_non_final_branch_when_taken(corpus, tmp_path):
    res = train(CFG, WSD, corpus, TOKENS, 0, tmp_path, "w")
    assert [(b["tokens"], b["fraction"]) for b in res.branches] == [(5 * 256, 0.25), (10 * 256, 0.5)]
    cooled = {c["tokens"]: c["val_bpb"] for c in res.curve if c["cooled"]}
    for b in res.branches:
        model, meta = load_model(b["path"])
        assert b["path"] == tmp_path / f"branch-{b['tokens']}.safetensors"
        assert meta["tokens"] == b["tokens"] and meta["key"] == "w" and meta["branch_fraction"] == b["fraction"]
        assert validation_bpb(model, corpus, CFG.block_size, WSD.cooled_eval_tokens) == pytest.approx(
            cooled[b["tokens"]], rel=1e-5
        )  # the saved file is the branch the curve scored


def test_resume_keeps_branches_taken_before_it_and_never_retrains_a_lost_one(corpus, tmp_path):
    def stop(done, total, info):
        if done >= 12 * 256:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "cut", "w", stop)
    assert (tmp_path / "cut" / "branch-1280.safetensors").exists()  # written when taken, before the kill
    resumed = train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "cut", "w")
    assert [b["tokens"] for b in resumed.branches] == [1280, 2560]

    with pytest.raises(KeyboardInterrupt):
        train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "lost", "w", stop)
    (tmp_path / "lost" / "branch-1280.safetensors").unlink()
    again = train(CFG, WSD, corpus, TOKENS, 0, tmp_path / "lost", "w")
    assert [b["tokens"] for b in again.branches] == [2560]  # absent, not retrained
    assert saved_branches(tmp_path / "lost", "another-key", again.curve, TOKENS) == []  # only its own run's files
