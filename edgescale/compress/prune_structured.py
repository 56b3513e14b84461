"""Structured pruning that shrinks the tensors: attention heads, FFN channels, whole blocks.

The pruned model is rebuilt with smaller ``nn.Linear`` layers (``GPTConfig.layer_heads``,
``layer_ffn``, fewer ``n_layer``), so it exports to a smaller ONNX graph that runs
faster on any runtime; nothing is masked.

Which groups go, by importance:

- ``taylor`` — first-order Taylor estimate of the loss change when a group is removed,
  Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning" (CVPR,
  arXiv:1906.10771): Σ over the group's weights of w·∂L/∂w. We sum over the columns
  of the group's *output* projection (``c_proj`` for a head, ``mlp_proj`` for an FFN
  channel), which equals the gradient of a gate on the group's output — the head
  importance of Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than
  One?" (NeurIPS, arXiv:1905.10650, eq. 2) — and take its absolute value per
  calibration batch, averaged (Michel's |·|; Molchanov square it, which ranks the same
  within a batch).
- ``activation`` — the mean ℓ2 norm of the group's contribution to the residual
  stream, ‖W_out[:, g] · y_g(t)‖ over calibration tokens (the |W|·‖X‖ idea of Wanda,
  Sun et al. 2023, arXiv:2306.11695, at the level of a head or a channel).
- ``weight_norm`` — ℓ2 norm of the group's weights (its q/k/v rows and output
  columns, or its fc row and proj column); needs no data.
- ``random`` — seeded; the baseline any score must beat.

With ``scope: global`` one ranking runs over all layers, scores normalised per layer by
their ℓ2 norm first (Michel et al. §4.1, following Molchanov et al. 2017); a floor
(``min_per_layer``) keeps every layer at least one head or channel. Removing heads and
FFN channels as whole rows/columns is the structured setting of ZipLM (Kurtić, Frantar
& Alistarh 2023, arXiv:2302.04089) and of Sanh et al. 2020's block pruning line of
work; we do not apply their weight corrections — ``distill.recover`` does the healing.

Whole blocks (``prune.layers``): ShortGPT, Men et al. 2024, "ShortGPT: Layers in Large
Language Models are More Redundant Than You Expect" (arXiv:2403.03853) — Block
Influence BI_i = 1 − E_t cos(x_i(t), x_{i+1}(t)) from one pass, lowest removed — or
``removal_kl``: greedily drop the block whose removal changes the calibration
predictions least (KL from the full model's, so a block that does nothing costs exactly
0; the loss itself can fall by chance when a block goes), re-scoring after each drop.

Assumptions: pre-LayerNorm residual blocks, so a head, a channel or a block is an
additive term of the residual stream and removing it is exact; output-projection
biases stay.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from edgescale.compress.pruning import (
    CalibrationBatches,
    CalibrationBatchSize,
    Groups,
    Scope,
    activation_scores,
    calibration_batches,
    forward_with_hooks,
    report,
    share_of,
    taylor_scores,
)
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, register
from edgescale.errors import UserError
from edgescale.models.gpt import GPT

# Structured pruning removes whole heads, channels or blocks: a smaller dense float32 model.
SHRINKS = StepFacts(changes_shape=True)
GroupImportance = Literal["taylor", "activation", "weight_norm", "random"]
_IMPORTANCE = "taylor: |Σ w·∂L/∂w| over the group (Molchanov 2019 / Michel 2019); activation: mean norm of its "
_IMPORTANCE += "output; weight_norm: norm of its weights (no data); random: seeded baseline"


class HeadsConfig(StepConfig):
    amount: float = Field(0.5, ge=0, lt=1, description="share of attention heads to remove")
    importance: GroupImportance = Field("taylor", description=_IMPORTANCE)
    scope: Scope = "per_layer"
    min_per_layer: int = Field(1, ge=1, description="heads every layer keeps at least")
    calibration_batches: CalibrationBatches = 16
    calibration_batch_size: CalibrationBatchSize = 8


class FfnConfig(StepConfig):
    amount: float = Field(0.5, ge=0, lt=1, description="share of FFN (MLP hidden) channels to remove")
    importance: GroupImportance = Field("taylor", description=_IMPORTANCE)
    scope: Scope = "per_layer"
    min_per_layer: int = Field(1, ge=1, description="FFN channels every layer keeps at least")
    multiple_of: int = Field(1, ge=1, description="round each kept width up to a multiple of this (SIMD-friendly)")
    calibration_batches: CalibrationBatches = 16
    calibration_batch_size: CalibrationBatchSize = 8


class LayersConfig(StepConfig):
    amount: float | None = Field(
        None, ge=0, lt=1, description="share of blocks to drop (0.25 when neither this nor layers is given)"
    )
    layers: list[int] | None = Field(None, description="drop exactly these blocks (0 = first) instead of scoring")
    importance: Literal["removal_kl", "block_influence", "random"] = Field(
        "removal_kl",
        description="removal_kl: greedily drop the block whose removal changes the calibration predictions "
        "least (KL from the full model's); "
        "block_influence: ShortGPT's 1 − cos(block input, block output); random: seeded baseline",
    )
    min_layers: int = Field(1, ge=1, description="blocks the model keeps at least")
    calibration_batches: CalibrationBatches = 16
    calibration_batch_size: CalibrationBatchSize = 8


DEFAULT_LAYER_AMOUNT = 0.25


# --------------------------------------------------------------------------- rebuilding


def rebuild(
    model: GPT,
    *,
    heads: list[torch.Tensor] | None = None,
    ffn: list[torch.Tensor] | None = None,
    layers: list[int] | None = None,
) -> GPT:
    """A new, smaller GPT holding the kept heads and FFN channels (sorted indices per input
    layer) of the kept ``layers``; the input model is only read."""
    c = model.cfg
    layers = list(range(c.n_layer)) if layers is None else layers
    heads = heads or [torch.arange(h) for h in c.heads_per_layer]
    ffn = ffn or [torch.arange(f) for f in c.ffn_per_layer]
    new_cfg = replace(
        c,
        n_layer=len(layers),
        layer_heads=tuple(len(heads[i]) for i in layers),
        layer_ffn=tuple(len(ffn[i]) for i in layers),
    )
    src = model.state_dict()
    state = {k: v for k, v in src.items() if not k.startswith("blocks.")}
    hd = c.head_dim
    for j, i in enumerate(layers):
        width = c.heads_per_layer[i] * hd
        cols = (heads[i][:, None] * hd + torch.arange(hd)).reshape(-1)  # kept attention channels
        qkv = torch.cat([cols + part * width for part in range(3)])  # the same heads in q, k and v
        picks = {
            "attn.c_attn.weight": (0, qkv),
            "attn.c_attn.bias": (0, qkv),
            "attn.c_proj.weight": (1, cols),
            "mlp_fc.weight": (0, ffn[i]),
            "mlp_fc.bias": (0, ffn[i]),
            "mlp_proj.weight": (1, ffn[i]),
        }
        prefix = f"blocks.{i}."
        for k, v in src.items():
            if k.startswith(prefix):
                name = k[len(prefix) :]
                state[f"blocks.{j}.{name}"] = v.index_select(*picks[name]) if name in picks else v
    out = GPT(new_cfg)
    out.load_state_dict(state)  # strict: every tensor of the new shape is filled
    return out.eval()


# --------------------------------------------------------------------------- head and channel scores


def _out_proj(block: nn.Module, kind: str) -> nn.Linear:
    return block.attn.c_proj if kind == "heads" else block.mlp_proj


def _weight_norm(block: nn.Module, kind: str, size: int) -> torch.Tensor:
    if kind == "heads":
        a = block.attn
        sq = a.c_attn.weight.detach().pow(2).view(3, a.n_head, size, -1).sum((0, 2, 3))
        sq += a.c_proj.weight.detach().pow(2).view(-1, a.n_head, size).sum((0, 2))
    else:
        sq = block.mlp_fc.weight.detach().pow(2).sum(1) + block.mlp_proj.weight.detach().pow(2).sum(0)
    return sq.sqrt().double()


def group_scores(model: GPT, kind: str, cfg: HeadsConfig | FfnConfig, ctx: StepContext) -> list[torch.Tensor]:
    """Importance of every head (``kind="heads"``) or FFN channel (``"ffn"``), per layer."""
    size = model.cfg.head_dim if kind == "heads" else 1
    if cfg.importance == "random":
        gen = torch.Generator().manual_seed(ctx.seed)
        return [torch.rand(_out_proj(b, kind).in_features // size, generator=gen).double() for b in model.blocks]
    if cfg.importance == "weight_norm":
        return [_weight_norm(b, kind, size) for b in model.blocks]
    why = f"importance {cfg.importance}"
    batches = calibration_batches(model, cfg.calibration_batches, cfg.calibration_batch_size, ctx, why)
    work = copy.deepcopy(model).eval()  # gradients and hooks go on a copy, never on the input
    gs = [Groups(_out_proj(b, kind), size, transposed=False) for b in work.blocks]
    return (taylor_scores if cfg.importance == "taylor" else activation_scores)(work, gs, batches)


def select(
    scores: list[torch.Tensor], amount: float, scope: str, floor: int, multiple_of: int = 1
) -> list[torch.Tensor]:
    """Sorted indices of the groups each layer keeps: the highest scores, within the floor."""
    sizes = [len(s) for s in scores]
    if scope == "per_layer":
        counts = [max(min(floor, n), n - share_of(amount, n)) for n in sizes]
    else:
        counts = _global_counts(scores, share_of(amount, sum(sizes)), floor)
    counts = [min(n, -(-k // multiple_of) * multiple_of) for k, n in zip(counts, sizes, strict=True)]
    return [
        torch.sort(torch.argsort(s, descending=True, stable=True)[:k]).values
        for s, k in zip(scores, counts, strict=True)
    ]


def _global_counts(scores: list[torch.Tensor], to_remove: int, floor: int) -> list[int]:
    normed = torch.cat([s / s.norm().clamp_min(1e-30) for s in scores])  # Michel et al. §4.1
    layer_of = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)]).tolist()
    counts = [len(s) for s in scores]
    for j in torch.argsort(normed, stable=True).tolist():  # least important first
        if to_remove == 0:
            break
        if counts[layer_of[j]] > floor:
            counts[layer_of[j]] -= 1
            to_remove -= 1
    return counts


def _prune_groups(model: GPT, kind: str, cfg: HeadsConfig | FfnConfig, ctx: StepContext, op: str) -> GPT:
    scores = group_scores(model, kind, cfg, ctx)
    keep = select(scores, cfg.amount, cfg.scope, cfg.min_per_layer, getattr(cfg, "multiple_of", 1))
    out = rebuild(model, **{kind: keep})
    before = model.cfg.heads_per_layer if kind == "heads" else model.cfg.ffn_per_layer
    after = out.cfg.heads_per_layer if kind == "heads" else out.cfg.ffn_per_layer
    removed = 1 - sum(after) / sum(before)
    summary = f"{kind} per layer {list(before)} → {list(after)} by {cfg.importance} ({cfg.scope})"
    report(ctx, op, model, out, removed, summary, **{f"layer_{kind}": list(after), "importance": cfg.importance})
    return out


@register("prune.heads", HeadsConfig, takes="torch", gives="torch", facts=SHRINKS)
def prune_heads(model: GPT, cfg: HeadsConfig, ctx: StepContext) -> GPT:
    """Remove attention heads (their q/k/v rows and output columns): smaller matmuls and KV cache."""
    return _prune_groups(model, "heads", cfg, ctx, "prune.heads")


@register("prune.ffn", FfnConfig, takes="torch", gives="torch", facts=SHRINKS)
def prune_ffn(model: GPT, cfg: FfnConfig, ctx: StepContext) -> GPT:
    """Remove FFN hidden channels (fc rows and proj columns): narrower MLPs."""
    return _prune_groups(model, "ffn", cfg, ctx, "prune.ffn")


# --------------------------------------------------------------------------- whole blocks


def _removal_kl(work: GPT, keep: list[int], blocks: nn.ModuleList, full: list[torch.Tensor], batches) -> float:
    """Mean KL(full model ‖ model of the ``keep`` blocks) per calibration token."""
    work.blocks = nn.ModuleList(blocks[i] for i in keep)  # a scratch copy: skipping = leaving out
    total = 0.0
    with torch.no_grad():
        for p, b in zip(full, batches, strict=True):
            q = work.logits(b[:, :-1]).log_softmax(-1)
            total += float((p.exp() * (p - q)).sum(-1).mean())
    return total / len(batches)


def _block_influence(work: GPT, batches: list[torch.Tensor]) -> torch.Tensor:
    """ShortGPT's BI per block: 1 − mean cosine similarity of its input and output states."""
    sims = torch.zeros(len(work.blocks), dtype=torch.float64)

    def hook(i: int):
        def record(module, args, output) -> None:
            sims[i] += torch.cosine_similarity(args[0], output[0], dim=-1).double().sum()

        return record

    n_tokens = forward_with_hooks(work, [b.register_forward_hook(hook(i)) for i, b in enumerate(work.blocks)], batches)
    return 1 - sims / n_tokens


def blocks_to_drop(model: GPT, n: int, cfg: LayersConfig, ctx: StepContext) -> list[int]:
    L = model.cfg.n_layer
    if n == 0:
        return []
    if cfg.importance == "random":
        return sorted(torch.randperm(L, generator=torch.Generator().manual_seed(ctx.seed))[:n].tolist())
    batches = calibration_batches(model, cfg.calibration_batches, cfg.calibration_batch_size, ctx, cfg.importance)
    work = copy.deepcopy(model).eval()
    if cfg.importance == "block_influence":
        return sorted(torch.argsort(_block_influence(work, batches), stable=True)[:n].tolist())
    with torch.no_grad():
        full = [work.logits(b[:, :-1]).log_softmax(-1) for b in batches]
    blocks, keep = work.blocks, list(range(L))
    for _ in range(n):  # greedy: each round drops the block that costs least, then re-scores
        kls = [_removal_kl(work, [k for k in keep if k != i], blocks, full, batches) for i in keep]
        keep.pop(min(range(len(keep)), key=kls.__getitem__))
    return [i for i in range(L) if i not in keep]


@register("prune.layers", LayersConfig, takes="torch", gives="torch", facts=SHRINKS)
def prune_layers(model: GPT, cfg: LayersConfig, ctx: StepContext) -> GPT:
    """Drop whole transformer blocks (ShortGPT-style): chosen by importance, or listed."""
    L = model.cfg.n_layer
    floor = min(cfg.min_layers, L)
    if cfg.layers is not None:
        if cfg.amount is not None:
            raise UserError("give either layers (which blocks) or amount (how many), not both", field="layers")
        bad = [i for i in cfg.layers if not 0 <= i < L]
        if bad:
            raise UserError(f"block index {bad[0]} out of range; this model has blocks 0..{L - 1}", field="layers")
        drop = sorted(set(cfg.layers))
        if L - len(drop) < floor:
            raise UserError(f"dropping {drop} leaves fewer than min_layers={floor} of {L} blocks", field="layers")
    else:
        amount = DEFAULT_LAYER_AMOUNT if cfg.amount is None else cfg.amount
        drop = blocks_to_drop(model, min(share_of(amount, L), L - floor), cfg, ctx)
    out = rebuild(model, layers=[i for i in range(L) if i not in drop])
    how = "as listed" if cfg.layers is not None else f"by {cfg.importance}"
    summary = f"dropped blocks {drop} of {L} {how}"
    report(ctx, "prune.layers", model, out, len(drop) / L, summary, dropped_layers=drop)
    return out
