"""``distill.recover`` for a transformers model: fine-tune the pruned model against its
unpruned parent by logit distillation (Hinton et al. 2015; :func:`edgescale.train.distill.kd_loss`).

The budget: ``tokens`` if given, else ``max_fraction`` of the tokens the checkpoint was
trained on (``hf_model.train_tokens``); a pretrained checkpoint's training tokens are
usually unknown, and then ``tokens`` must be given (the study check says so before any
work starts). Batches are random windows of the train split in the model's own tokens,
drawn from (seed, step) exactly as for the GPT family. AdamW, linear warmup (5%) then
cosine decay to 10% of the peak, gradient clipping at 1.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from edgescale.bench.loss import score
from edgescale.compress.registry import StepContext, implement
from edgescale.data.corpus import train_batch
from edgescale.errors import UserError
from edgescale.hf.export import HFCausalLM
from edgescale.hf.tokens import to_bits_per_byte
from edgescale.train.distill import kd_loss
from edgescale.train.recover import RecoverConfig


def recovery_tokens(cfg: RecoverConfig, parent_tokens: int) -> int:
    if cfg.tokens is None and not parent_tokens:
        raise UserError(
            "distill.recover on a Hugging Face model needs tokens: N (the checkpoint's training tokens are unknown; "
            "or give hf_model.train_tokens to use max_fraction of them)",
            field="tokens",
        )
    if cfg.tokens is None:
        return max(1, int(cfg.max_fraction * parent_tokens))
    if parent_tokens and cfg.tokens > cfg.max_fraction * parent_tokens:
        raise UserError(
            f"{cfg.tokens:,} recovery tokens exceed {cfg.max_fraction:g} of the checkpoint's {parent_tokens:,}",
            field="tokens",
        )
    return cfg.tokens


def _lr(step: int, steps: int, peak: float) -> float:
    warmup = max(1, int(0.05 * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 * peak + 0.45 * peak * (1 + math.cos(math.pi * progress))


def validation_bpb(model: HFCausalLM, corpus, max_tokens: int = 4096) -> float:
    """Bits per byte of the torch model on the start of the validation split (a progress check)."""

    ctx = model.spec.block_size
    with torch.no_grad():
        res = score(lambda ids: model.logits(torch.from_numpy(ids)).numpy(), corpus["validation"], ctx, ctx, max_tokens)
    return to_bits_per_byte(res, corpus, "validation").bits_per_byte


@implement("distill.recover", backend="hf")
def recover_hf(model: HFCausalLM, cfg: RecoverConfig, ctx: StepContext) -> HFCausalLM:
    """Fine-tune a pruned transformers model against its unpruned parent by logit distillation."""
    if ctx.parent is None or ctx.corpus is None:
        raise UserError("distill.recover needs the chain's parent model and corpus", field="op")
    tokens = recovery_tokens(cfg, ctx.parent_tokens)
    student = copy.deepcopy(model).train()  # the input is never modified
    teacher = ctx.parent.eval()
    train = ctx.corpus["train"].tokens
    block = min(model.spec.block_size, train.size - 2)
    steps = max(1, math.ceil(tokens / (cfg.batch_size * block)))
    decay = [p for p in student.parameters() if p.dim() >= 2]
    rest = [p for p in student.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, cfg.learning_rate)
        batch = torch.from_numpy(train_batch(train, step, cfg.batch_size, block, ctx.seed))
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.no_grad():
            teacher_logits = teacher.logits(inputs)
        loss = kd_loss(student.logits(inputs), teacher_logits, targets, cfg.alpha, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    student.eval()
    val = validation_bpb(student, ctx.corpus)
    ctx.metrics.update(
        {"tokens": steps * cfg.batch_size * block, "steps": steps, "val_bpb_torch": val,
         "final_train_loss": float(np.mean(losses[-10:]))}
    )  # fmt: skip
    ctx.log(f"distill.recover: {steps * cfg.batch_size * block:,} tokens against the parent, val {val:.4f} bpb")
    return student
