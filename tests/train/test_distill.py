"""Logit distillation: reduces to cross-entropy, matches a hand-computed KL, reaches every parameter."""

import math

import pytest
import torch
import torch.nn.functional as F

from edgescale.config import TrainingConfig
from edgescale.models.gpt import GPT, GPTConfig
from edgescale.train.distill import DistillConfig, kd_loss
from edgescale.train.trainer import train


def test_alpha_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    y = torch.randint(0, 5, (2, 3), generator=g)
    ce = F.cross_entropy(s.reshape(-1, 5), y.reshape(-1))
    assert kd_loss(s, t, y, 0.0, 2.0).item() == pytest.approx(ce.item())


def test_matches_a_hand_computed_kl():
    s = torch.tensor([[[1.0, 0.0]]])
    t = torch.tensor([[[0.0, 1.0]]])
    y = torch.tensor([[0]])
    temp = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]  # softmax([1, 0] / 2)
    pt = [ps[1], ps[0]]  # softmax([0, 1] / 2)
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    alpha = 0.3
    expected = (1 - alpha) * ce + alpha * temp**2 * kl
    assert kd_loss(s, t, y, alpha, temp).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(s, s, y, 1.0, temp).item() == pytest.approx(0.0, abs=1e-7)  # KL of a model with itself


def test_gradients_reach_every_student_parameter_and_not_the_teacher():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16)
    student, teacher = GPT(cfg, seed=0), GPT(cfg, seed=1)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t_logits = teacher.logits(ids[:, :-1])
    kd_loss(student.logits(ids[:, :-1]), t_logits, ids[:, 1:], 0.5, 2.0).backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())


def test_distilled_training_runs_and_differs_from_scratch(corpus, tmp_path):
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
    tc = TrainingConfig(batch_size=8, eval_every_tokens=256 * 5, eval_tokens=512, threads=1, learning_rate=1e-2)
    teacher = train(
        GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32), tc, corpus, 256 * 20, 0, tmp_path / "t", "t"
    )
    from edgescale.models.checkpoint import load_model

    t_model = load_model(teacher.checkpoint)[0]
    kd = train(cfg, tc, corpus, 256 * 10, 0, tmp_path / "kd", "kd", teacher=t_model, distill=DistillConfig())
    scratch = train(cfg, tc, corpus, 256 * 10, 0, tmp_path / "s", "s")
    assert kd.curve[-1]["val_bpb"] != scratch.curve[-1]["val_bpb"]
    assert kd.curve[-1]["val_bpb"] < 8


def test_grad_accumulation_counts_tokens_and_learns(corpus, tmp_path):
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
    tc = TrainingConfig(
        batch_size=4, grad_accum=2, eval_every_tokens=256 * 3, eval_tokens=256, threads=1, learning_rate=1e-2
    )
    res = train(cfg, tc, corpus, 256 * 9, 0, tmp_path / "a", "a")
    assert res.steps == 9 and res.tokens == 256 * 9  # 4 sequences x 2 micro-batches x 32 tokens per step
    assert res.curve[-1]["val_bpb"] < res.curve[0]["val_bpb"]


def test_recover_pulls_a_damaged_model_back_toward_its_parent(corpus, tmp_path):
    from edgescale.compress.registry import StepContext
    from edgescale.errors import UserError
    from edgescale.train.recover import RecoverConfig, recover
    from edgescale.train.trainer import validation_bpb

    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
    tc = TrainingConfig(batch_size=8, eval_every_tokens=10**9, eval_tokens=512, threads=1, learning_rate=1e-2)
    from edgescale.models.checkpoint import load_model

    parent = load_model(train(cfg, tc, corpus, 256 * 60, 0, tmp_path / "p", "p").checkpoint)[0]
    damaged = GPT(cfg)
    damaged.load_state_dict(parent.state_dict())
    with torch.no_grad():
        damaged.blocks[0].mlp_fc.weight.mul_((torch.rand_like(damaged.blocks[0].mlp_fc.weight) > 0.5).float())
    ctx = StepContext(tmp_path / "w", parent=parent, parent_tokens=256 * 60 * 10, corpus=corpus, log=lambda m: None)
    (tmp_path / "w").mkdir()
    fixed = recover(damaged, RecoverConfig(tokens=256 * 40, learning_rate=3e-3, batch_size=8), ctx)
    before, after = (validation_bpb(m, corpus, 32, 2048) for m in (damaged, fixed))
    assert after < before
    with pytest.raises(UserError, match="must not quietly become retraining"):
        recover(damaged, RecoverConfig(tokens=256 * 60 * 2), ctx)
