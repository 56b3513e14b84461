"""The recipe step ``distill.recover``: fine-tune a pruned model against its unpruned parent by
logit distillation (:func:`edgescale.train.distill.kd_loss`), for a token budget capped at a
share of the parent's training tokens.

Recovery after unstructured or N:M pruning is *masked* fine-tuning: the zero pattern of
the input's Linear weights is re-applied after every optimizer step, so the sparsity
the pruning step reported is still there afterwards (as in Zhu & Gupta 2017, "To prune,
or not to prune", and NVIDIA's ASP recipe for 2:4, Mishra et al. 2021, arXiv:2104.08378).

Registered for edgescale's GPT models and for a user's adapted module (both edgescale torch
models that :mod:`edgescale.models.checkpoint` saves and rebuilds); Hugging Face models have
their own version (:mod:`edgescale.hf.recover`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, StrictBool, model_serializer

from edgescale.compress.registry import StepConfig, StepContext, StepFacts, implement, register
from edgescale.config import MAX_TOKENS, TrainingConfig
from edgescale.errors import UserError
from edgescale.models.checkpoint import load_model, spec_of
from edgescale.train.device import device_setup
from edgescale.train.distill import DistillConfig
from edgescale.train.trainer import train


class RecoverConfig(StepConfig):
    tokens: int | None = Field(None, ge=1, description="fine-tuning tokens (default: max_fraction of the parent's)")
    max_fraction: float = Field(0.1, gt=0, le=1, description="cap on tokens as a share of the parent's training tokens")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of KL(parent ‖ pruned model)")
    temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature (at most 100)")
    learning_rate: float = Field(
        1e-3, gt=0, le=1, description="peak learning rate (warmup, cosine decay); at most 1, as training.learning_rate"
    )
    batch_size: int = Field(16, ge=1, le=4096, description="sequences per step (at most 4096, as training.batch_size)")
    keep_zeros: bool = Field(
        True,
        description="masked fine-tuning: re-apply the input's zero pattern in its Linear weights after every "
        "optimizer step, so sparsity from prune.magnitude / prune.nm survives recovery",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "cpu", description="where recovery trains, as training.device (edgescale.train.device)"
    )
    compile: StrictBool = Field(False, description="torch.compile the fine-tuning forward, as training.compile")

    @model_serializer(mode="wrap")
    def _device_off_its_defaults(self, handler):
        # device and compile enter the dump (so the step's key) only off the CPU defaults: a CPU
        # recovery keeps the key it had before these fields existed; an "auto" that resolves to the
        # CPU trains exactly as "cpu" but is keyed apart (the key cannot depend on this machine)
        out = handler(self)
        for name, default in (("device", "cpu"), ("compile", False)):
            if out.get(name) == default:
                out.pop(name)
        return out


def zero_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: keep-mask} for every Linear weight holding exact zeros.

    A trained float weight has no exact zeros unless a pruning step put them there, so a
    dense model gets no masks and trains exactly as without this.
    """
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not bool(module.weight.detach().all()):
            masks[f"{name}.weight"] = module.weight.detach() != 0
    return masks


def _reapply(masks: dict[str, torch.Tensor]):
    def after_step(model: torch.nn.Module) -> None:
        for name, keep in masks.items():
            model.get_parameter(name).mul_(keep)

    return after_step


@register("distill.recover", RecoverConfig, takes="torch", gives="torch", facts=StepFacts())
def recover(model, cfg: RecoverConfig, ctx: StepContext):
    """Fine-tune a (pruned) model against its unpruned parent by logit distillation."""
    if ctx.parent is None or ctx.corpus is None or not ctx.parent_tokens:
        raise UserError("distill.recover needs the chain's trained parent model and corpus", field="op")
    cap = int(cfg.max_fraction * ctx.parent_tokens)
    tokens = cfg.tokens or cap
    if tokens > cap:
        raise UserError(
            f"{tokens:,} recovery tokens exceed {cfg.max_fraction:g} of the parent's {ctx.parent_tokens:,} "
            "(recovery must not quietly become retraining); lower tokens or raise max_fraction",
            field="tokens",
        )
    if tokens > MAX_TOKENS:  # a budget TrainingConfig refuses (e.g. a tenth of an HF model's 10^13 tokens)
        raise UserError(f"{tokens:,} recovery tokens exceed {MAX_TOKENS:,}; give tokens", field="tokens")
    setup = device_setup(cfg, "distill.recover device")  # a device this machine lacks: refused before training
    spec = spec_of(model)
    masks = zero_masks(model) if cfg.keep_zeros else {}
    tc = TrainingConfig(
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        eval_every_tokens=10**12,
        eval_tokens=4096,
        min_tokens=1,
        max_tokens=max(1, tokens),
        device=cfg.device,
        compile=cfg.compile,
    )
    res = train(
        spec,
        tc,
        ctx.corpus,
        tokens,
        ctx.seed,
        Path(ctx.work_dir) / "recover",
        "recover",
        None,
        ctx.parent,
        DistillConfig(alpha=cfg.alpha, temperature=cfg.temperature),
        init=model,
        after_step=_reapply(masks) if masks else None,
        lr_field="distill.recover learning_rate",
        setup=setup,
    )
    out = load_model(res.checkpoint)[0]
    # val_bpb_torch: the torch model on the first eval_tokens of validation, a progress check; the
    # variant's reported loss is measured later on its ONNX file.
    ctx.metrics.update({"tokens": res.tokens, "val_bpb_torch": res.curve[-1]["val_bpb"], "masked_weights": len(masks)})
    if masks:
        zeros = sum(int((~k).sum()) for k in masks.values())
        kept = sum(int((out.get_parameter(n) == 0).sum()) for n in masks)
        ctx.metrics["masked_zeros_kept"] = kept
        ctx.metrics["masked_zeros"] = zeros
    ctx.log(
        f"distill.recover: {res.tokens:,} tokens against the parent, val {res.curve[-1]['val_bpb']:.4f} bpb"
        + (f", zero pattern of {len(masks)} sparse weights kept" if masks else "")
    )
    return out


# An adapted module is an edgescale torch model too: the same function serves it.
implement("distill.recover", backend="custom")(recover)
