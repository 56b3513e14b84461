"""Unstructured (magnitude) and N:M sparsity: zeros inside dense tensors.

- ``prune.magnitude`` — one-shot magnitude pruning, Han et al. 2015, "Learning both
  Weights and Connections for Efficient Neural Networks" (NeurIPS, arXiv:1506.02626):
  the smallest |w| become zero, either the same share in every weight matrix
  (``per_layer``) or below one threshold over all of them (``global``; Blalock et al.
  2020, "What is the State of Neural Network Pruning?", arXiv:2003.03033, compare both).
- ``prune.nm`` — N:M fine-grained structured sparsity, Mishra et al. 2021,
  "Accelerating Sparse Deep Neural Networks" (arXiv:2104.08378; NVIDIA's 2:4) and
  Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks From
  Scratch" (ICLR, arXiv:2102.04010): in every run of M consecutive weights along a
  Linear layer's *input* dimension, the N largest by magnitude stay.

What is sparsified: the weights of the transformer blocks' Linear layers (attention
q/k/v and output, MLP fc and proj). Biases, LayerNorms and the token and position
tables stay dense, and so does the LM head: here it is tied to the token embedding
(zeroing it would also delete input-embedding entries), and an untied head is the
output layer, which pruning work usually keeps dense (e.g. SparseGPT, Frantar &
Alistarh 2023).

The tensors stay dense with zeros in them: onnxruntime's CPU MatMul kernels do the same
work and the ONNX file has the same size, so the metrics say
``dense_kernel_speedup: False`` ("no dense-kernel speedup on this runtime"). The loss
effect is real and measured like every other variant; ``distill.recover`` after these
steps keeps the zeros (masked fine-tuning).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from edgescale.compress.pruning import Scope, report, share_of
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register
from edgescale.errors import UserError
from edgescale.models.gpt import GPT

NO_SPEEDUP = "no dense-kernel speedup on this runtime"


class MagnitudeConfig(StepConfig):
    sparsity: float = Field(0.5, ge=0, lt=1, description="share of the blocks' Linear weights set to zero")
    scope: Scope = "per_layer"


class NMConfig(StepConfig):
    n: int = Field(2, ge=1, description="weights kept in every group of m")
    m: int = Field(4, ge=2, le=64, description="group length along each Linear layer's input dimension")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMConfig:
        if self.n >= self.m:
            raise ValueError(f"n={self.n} must be smaller than m={self.m} (n of every m weights are kept)")
        return self


def sparse_targets(model: GPT) -> dict[str, nn.Linear]:
    """The Linear layers these steps sparsify, by module name: every Linear inside a block."""
    return {n: m for n, m in model.named_modules() if n.startswith("blocks.") and isinstance(m, nn.Linear)}


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of ``values`` with its ``k`` smallest |entries| dropped (ties: first index goes)."""
    keep = torch.ones(values.numel(), dtype=torch.bool)
    keep[torch.argsort(values.abs().reshape(-1), stable=True)[:k]] = False
    return keep.view(values.shape)


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    if scope == "per_layer":
        return {n: _smallest(w, share_of(sparsity, w.numel())) for n, w in weights.items()}
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    keep = _smallest(flat, share_of(sparsity, flat.numel())).split([w.numel() for w in weights.values()])
    return {n: k.view(w.shape) for (n, w), k in zip(weights.items(), keep, strict=True)}


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` largest |w| of every ``m`` consecutive inputs; ``w`` is (out, in)."""
    out_features, in_features = w.shape
    groups = w.abs().reshape(out_features, in_features // m, m)
    top = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.view(out_features, in_features)


def _apply(model: GPT, masks: dict[str, torch.Tensor]) -> tuple[GPT, float]:
    """A copy of ``model`` with the masks applied, and the zero share of the masked weights."""
    out = copy.deepcopy(model).eval()
    zeros = total = 0
    with torch.no_grad():
        for name, keep in masks.items():
            w = out.get_submodule(name).weight
            w.mul_(keep)
            zeros += int((w == 0).sum())
            total += w.numel()
    return out, zeros / total


@register("prune.magnitude", MagnitudeConfig, takes="torch", gives="torch", facts=StepFacts(sparsity="unstructured"))
def prune_magnitude(model: GPT, cfg: MagnitudeConfig, ctx: StepContext) -> GPT:
    """Zero the smallest-magnitude weights of the blocks' Linear layers (unstructured sparsity)."""
    weights = {n: m.weight.detach() for n, m in sparse_targets(model).items()}
    out, achieved = _apply(model, magnitude_masks(weights, cfg.sparsity, cfg.scope))
    summary = f"{cfg.scope} magnitude pruning of {len(weights)} Linear weights ({NO_SPEEDUP})"
    report(
        ctx,
        "prune.magnitude",
        model,
        out,
        achieved,
        summary,
        target_sparsity=cfg.sparsity,
        dense_kernel_speedup=False,
        note=NO_SPEEDUP,
    )
    return out


@register("prune.nm", NMConfig, takes="torch", gives="torch", facts=StepFacts(sparsity=lambda cfg: f"{cfg.n}:{cfg.m}"))
def prune_nm(model: GPT, cfg: NMConfig, ctx: StepContext) -> GPT:
    """N:M sparsity (e.g. 2:4) along the input dimension of the blocks' Linear layers."""
    targets = sparse_targets(model)
    for name, lin in targets.items():
        if lin.in_features % cfg.m:
            raise UserError(
                f"{name} has {lin.in_features} inputs, not a multiple of m={cfg.m}; choose an m that divides "
                "every layer's input width (after prune.ffn, set its multiple_of to m)",
                field="m",
            )
    out, achieved = _apply(model, {n: nm_mask(lin.weight.detach(), cfg.n, cfg.m) for n, lin in targets.items()})
    report(
        ctx,
        "prune.nm",
        model,
        out,
        achieved,
        f"{cfg.n}:{cfg.m} sparsity in {len(targets)} Linear weights ({NO_SPEEDUP})",
        pattern=f"{cfg.n}:{cfg.m}",
        target_sparsity=1 - cfg.n / cfg.m,
        dense_kernel_speedup=False,
        note=NO_SPEEDUP,
    )
    return out
