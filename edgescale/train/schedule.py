"""The learning-rate schedule and optimizer of a training run (split out of
:mod:`edgescale.train.trainer`, which imports every name here; its docstring says why the
schedule is built this way): warmup, cosine or warmup-stable-decay with cooled branches,
and AdamW's parameter groups under the ``fixed`` or ``mup_width`` learning-rate rule."""

from __future__ import annotations

import math

import torch

from edgescale.config import TrainingConfig

BETA2 = 0.95  # AdamW β2, every size (see the module docstring)
EMBEDDING_PARAMS = ("wte.", "wpe.", "lm_head.")  # the GPT's input/output matrices: base LR under mup_width


def hidden_lr_scale(model_cfg, cfg: TrainingConfig) -> float:
    """Multiplier on the hidden matrices' learning rate: 1 (fixed), or lr_base_width / n_embd
    (mup_width; a model without an ``n_embd``, a user's module, keeps 1)."""
    width = getattr(model_cfg, "n_embd", None)
    if cfg.lr_rule == "fixed" or not width:
        return 1.0
    return cfg.lr_base_width / width


def warmup_steps(steps: int, cfg: TrainingConfig) -> int:
    """Linear warmup: ``warmup_fraction`` of the shortest cooled branch (WSD) or of the run (cosine)."""
    shortest = min(max(2, round(f * steps)) for f in cfg.cooled_fractions) if cfg.schedule == "wsd" else steps
    return max(1, int(cfg.warmup_fraction * shortest))


def hparams(model_cfg, cfg: TrainingConfig, steps: int) -> dict:
    """The per-size optimisation settings a run used, recorded with its results."""
    scale = hidden_lr_scale(model_cfg, cfg)
    return {
        "lr_rule": cfg.lr_rule,
        "lr_source": "fixed across sizes"
        if cfg.lr_rule == "fixed"
        else f"µP for Adam (Yang et al. 2022): hidden-matrix LR × {cfg.lr_base_width}/n_embd",
        "peak_lr_hidden": cfg.learning_rate * scale,
        "peak_lr_embedding": cfg.learning_rate,
        "beta2": BETA2,
        "batch_size": cfg.batch_size * cfg.grad_accum,
        "warmup_steps": warmup_steps(steps, cfg),
    }


def lr_at(step: int, steps: int, cfg: TrainingConfig) -> float:
    """Learning rate of the main run: linear warmup, then cosine decay or (WSD) constant."""
    warmup = warmup_steps(steps, cfg)
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


def _optimizer(
    model: torch.nn.Module, cfg: TrainingConfig, lr_scale: float = 1.0, fused: bool = True
) -> torch.optim.AdamW:
    """AdamW over three groups: hidden matrices (decayed, LR × ``lr_scale``), embeddings and head
    (decayed, base LR), vectors (no decay). Each group's ``lr_scale`` multiplies the schedule's LR.
    ``fused``: the device setup's choice (:mod:`edgescale.train.device`); CPU, CUDA and MPS all have the kernel."""
    named = list(model.named_parameters())  # a tied head shares wte's tensor: listed once
    hidden = [p for n, p in named if p.dim() >= 2 and not n.startswith(EMBEDDING_PARAMS)]
    embed = [p for n, p in named if p.dim() >= 2 and n.startswith(EMBEDDING_PARAMS)]
    vectors = [p for _, p in named if p.dim() < 2]
    groups = [
        {"params": hidden, "weight_decay": cfg.weight_decay, "lr_scale": lr_scale},
        {"params": embed, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": vectors, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    groups = [g for g in groups if g["params"]]
    # fused AdamW runs on CPU too (torch >= 2.4): one kernel per step instead of a Python loop over tensors
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, BETA2), fused=fused)
