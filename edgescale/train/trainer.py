"""Training loop: AdamW, linear warmup then cosine decay, clipping, periodic validation,
safetensors checkpoints and exact resume.

Batches depend only on (seed, step) and the resume checkpoint holds the model and
AdamW state, so a run interrupted and resumed follows the same loss curve as an
uninterrupted one (to float tolerance).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgescale.atomic import atomic_path, write_json
from edgescale.bench.loss import score
from edgescale.config import TrainingConfig
from edgescale.data.corpus import Corpus, train_batch
from edgescale.models.checkpoint import build_model, load_weights, save_model, spec_meta, weights
from edgescale.models.gpt import GPT, GPTConfig
from edgescale.train.distill import DistillConfig, kd_loss

ProgressFn = Callable[[int, int, dict], None]  # (tokens_done, tokens_total, info)
AfterStepFn = Callable[[torch.nn.Module], None]  # called with the model after every optimizer step


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    tokens: int
    steps: int
    curve: list[dict]
    seconds: float


def lr_at(step: int, steps: int, cfg: TrainingConfig) -> float:
    """Learning rate of the main run: linear warmup, then cosine decay or (WSD) constant."""
    warmup = max(1, int(cfg.warmup_fraction * steps))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if cfg.schedule == "wsd":
        return cfg.learning_rate
    progress = (step - warmup) / max(1, steps - warmup)
    floor = cfg.learning_rate * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.learning_rate - floor) * (1 + math.cos(math.pi * progress))


def cooldown_lr(j: int, k: int, cfg: TrainingConfig) -> float:
    """WSD decay step ``j`` of ``k``: linear from the peak to ``min_lr_ratio`` of it."""
    floor = cfg.learning_rate * cfg.min_lr_ratio
    return cfg.learning_rate - (cfg.learning_rate - floor) * (j + 1) / k


def wsd_branches(steps: int, cfg: TrainingConfig) -> dict[int, int]:
    """Cooled checkpoints of a warmup-stable-decay run: {main step to branch at: decay steps}.

    A checkpoint at fraction f of the budget branches off the stable phase at
    (1 - cooldown)·f·steps and decays for cooldown·f·steps, so it has seen exactly
    f·steps steps; the f = 1 branch is the final model (Hägele et al. 2024, "Scaling
    Laws and Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392).
    """
    if cfg.schedule != "wsd":
        return {}
    out = {}
    for f in cfg.cooled_fractions:
        total = max(2, round(f * steps))
        k = max(1, round(cfg.cooldown_fraction * total))
        out[total - k] = k
    return out


def _optimizer(model: GPT, cfg: TrainingConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused AdamW runs on CPU too (torch >= 2.4): one kernel per step instead of a Python loop over tensors
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=True)


def validation_bpb(model: GPT, corpus: Corpus, context: int, max_tokens: int) -> float:
    model.eval()
    with torch.no_grad():
        result = score(
            lambda ids: model.logits(torch.from_numpy(ids)).numpy(), corpus["validation"], context, context, max_tokens
        )
    model.train()
    return result.bits_per_byte


def _save_resume(model: GPT, opt: torch.optim.Optimizer, step: int, curve: list, seen: tuple, out: Path, key: str):
    """Model, AdamW state and loop state (curve, the running train-loss sum since the last
    curve point) at ``step``. The step is in both files, so a kill between the two writes
    leaves a pair that :func:`_load_resume` refuses rather than mixes."""
    tensors = {f"model.{k}": v for k, v in weights(model).items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{k}"] = v.detach().clone().reshape(v.shape)
    with atomic_path(out / "resume.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "step": str(step)})
    write_json(out / "resume.json", {"key": key, "step": step, "curve": curve, "seen": list(seen)})


def _load_resume(model: GPT, opt: torch.optim.Optimizer, out: Path, key: str) -> tuple[int, list, tuple]:
    from safetensors import SafetensorError, safe_open

    state_file, meta_file = out / "resume.safetensors", out / "resume.json"
    if not (state_file.exists() and meta_file.exists()):
        return 0, [], (0.0, 0)
    try:
        meta = json.loads(meta_file.read_text())
        with safe_open(str(state_file), "pt") as f:
            stored = f.metadata() or {}
    except (json.JSONDecodeError, SafetensorError):
        return 0, [], (0.0, 0)  # unreadable resume state is scratch, never trusted
    if meta.get("key") != key or stored != {"key": key, "step": str(meta.get("step"))} or "seen" not in meta:
        return 0, [], (0.0, 0)  # another run's state, or a pair torn by a kill: start over
    tensors = load_file(str(state_file))
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in model.named_parameters():
        prefix = f"opt.{name}."
        st = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if st:
            opt.state[p] = st
    return int(meta["step"]), list(meta["curve"]), (float(meta["seen"][0]), int(meta["seen"][1]))


@dataclass
class _Run:
    """The moving parts of one training run (mutable on purpose: it is the loop's state)."""

    model_cfg: GPTConfig
    cfg: TrainingConfig
    corpus: Corpus
    seed: int
    per_step: int
    progress: ProgressFn | None
    total_steps: int  # including decay branches, for the progress bar
    teacher: GPT | None = None
    distill: DistillConfig | None = None
    after_step: AfterStepFn | None = None
    done_steps: int = 0
    t0: float = 0.0

    def batch(self, step: int) -> torch.Tensor:
        toks = self.corpus["train"].tokens
        return torch.from_numpy(train_batch(toks, step, self.cfg.batch_size, self.model_cfg.block_size, self.seed))

    def tick(self, loss: float, resumed_steps: int) -> None:
        self.done_steps += 1
        if self.progress:
            rate = (self.done_steps - resumed_steps) * self.per_step / max(1e-9, time.perf_counter() - self.t0)
            info = {"bpb": loss / math.log(2), "tok_s": rate}
            self.progress(self.done_steps * self.per_step, self.total_steps * self.per_step, info)


def _sgd_step(run: _Run, model: GPT, opt, step: int, lr: float) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    accum, total = run.cfg.grad_accum, 0.0
    for micro in range(accum):
        batch = run.batch(step * accum + micro)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model.logits(inputs)
        teacher_logits = None
        if run.teacher is not None:
            with torch.no_grad():
                teacher_logits = run.teacher.logits(inputs)
        d = run.distill
        loss = kd_loss(logits, teacher_logits, targets, d.alpha if d else 0.0, d.temperature if d else 1.0)
        (loss / accum).backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.cfg.grad_clip)
    opt.step()
    if run.after_step is not None:
        with torch.no_grad():
            run.after_step(model)
    return total / accum


def _cooled_branch(run: _Run, model: GPT, opt, at: int, k: int, resumed: int) -> tuple[GPT, dict]:
    """Decay a copy of the stable-phase model for ``k`` steps; return it and its curve point."""
    branch = copy.deepcopy(model)
    bopt = _optimizer(branch, run.cfg)
    bopt.load_state_dict(opt.state_dict())
    for j in range(k):
        loss = _sgd_step(run, branch, bopt, at + j, cooldown_lr(j, k, run.cfg))
        run.tick(loss, resumed)
    point = {
        "step": at + k,
        "tokens": (at + k) * run.per_step,
        "lr": cooldown_lr(k - 1, k, run.cfg),
        "val_bpb": validation_bpb(branch, run.corpus, run.model_cfg.block_size, run.cfg.cooled_eval_tokens),
        "cooled": True,
    }
    return branch, point


def train(
    model_cfg: GPTConfig,
    cfg: TrainingConfig,
    corpus: Corpus,
    tokens: int,
    seed: int,
    out_dir: Path,
    key: str,
    progress: ProgressFn | None = None,
    teacher: GPT | None = None,
    distill: DistillConfig | None = None,
    init: torch.nn.Module | None = None,
    after_step: AfterStepFn | None = None,
) -> TrainResult:
    """Train a fresh ``GPT(model_cfg, seed)`` for ``tokens`` tokens; resumes from ``out_dir`` when it can.

    With a ``teacher`` the loss is :func:`edgescale.train.distill.kd_loss` (logit distillation);
    with ``init`` training continues from a copy of that model (fine-tuning) instead.
    ``after_step(model)`` runs under ``no_grad`` after every optimizer step (masked
    fine-tuning re-applies a sparsity pattern there).

    With ``schedule: wsd`` the run also leaves cooled checkpoints at ``cooled_fractions``
    of the budget (curve points with ``cooled: true``), the (N, D) grid a scaling fit needs.
    """
    torch.set_num_threads(cfg.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_step = cfg.batch_size * cfg.grad_accum * model_cfg.block_size
    steps = max(1, math.ceil(tokens / per_step))
    eval_every = max(1, round(cfg.eval_every_tokens / per_step))
    branches = wsd_branches(steps, cfg)
    main_steps = steps - branches.get(max(branches), 0) if branches else steps
    extra = sum(k for at, k in branches.items() if at + k != steps)
    model = (copy.deepcopy(init) if init is not None else build_model(model_cfg, seed=seed)).train()
    opt = _optimizer(model, cfg)
    start, curve, (seen_loss, seen) = _load_resume(model, opt, out_dir, key)
    if teacher is not None:
        teacher = teacher.eval()
    run = _Run(
        model_cfg,
        cfg,
        corpus,
        seed,
        per_step,
        progress,
        steps + extra,
        teacher,
        distill,
        after_step,
        t0=time.perf_counter(),
    )
    run.done_steps = start + sum(k for at, k in branches.items() if at <= start and at + k != steps)
    resumed = run.done_steps
    final = model
    for step in range(start, main_steps):
        loss = _sgd_step(run, model, opt, step, lr_at(step, steps, cfg))
        run.tick(loss, resumed)
        seen_loss, seen = seen_loss + loss, seen + 1
        if (step + 1) % eval_every == 0 or (step + 1 == steps and not branches):
            val = validation_bpb(model, corpus, model_cfg.block_size, cfg.eval_tokens)
            curve.append(
                {
                    "step": step + 1,
                    "tokens": (step + 1) * per_step,
                    "lr": lr_at(step, steps, cfg),
                    "train_bpb": seen_loss / seen / math.log(2),
                    "val_bpb": val,
                    "cooled": step + 1 == steps,
                }
            )
            seen_loss, seen = 0.0, 0
        if step + 1 in branches and step + 1 + branches[step + 1] < steps:
            curve.append(_cooled_branch(run, model, opt, step + 1, branches[step + 1], resumed)[1])
        if (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < main_steps:
            _save_resume(model, opt, step + 1, curve, (seen_loss, seen), out_dir, key)
    if branches:
        final, point = _cooled_branch(run, model, opt, main_steps, steps - main_steps, resumed)
        curve.append(point)
    meta = {**spec_meta(model_cfg), "seed": seed, "tokens": steps * per_step, "steps": steps, "key": key}
    ckpt = save_model(final.eval(), out_dir / "model.safetensors", meta)
    write_json(out_dir / "curve.json", curve)
    for f in ("resume.safetensors", "resume.json"):
        (out_dir / f).unlink(missing_ok=True)
    return TrainResult(ckpt, steps * per_step, steps, curve, time.perf_counter() - run.t0)
