"""Structured pruning of Hugging Face GPT-2 and Llama-family models: heads and FFN channels.

The same recipe steps as for the GPT family (``prune.heads``, ``prune.ffn``, with their
configs and importances; :mod:`edgescale.compress.prune_structured` has the papers), on
transformers' own module layouts, and the result is again a stock transformers model:

- **GPT-2** stores its projections as ``Conv1D`` with the weight transposed, (in, out):
  a head is ``head_dim`` *columns* of ``c_attn`` in each of q, k, v and ``head_dim`` *rows*
  of ``attn.c_proj``; an FFN channel is a column of ``mlp.c_fc`` and a row of
  ``mlp.c_proj``. Heads are removed with transformers' ``prune_heads``, which records
  them in ``config.pruned_heads`` (so layers may differ, and ``from_pretrained`` rebuilds
  the shapes); the FFN width is ``n_inner``, one value for all layers.
- **Llama** (also Mistral, Qwen2: the same module names) uses grouped-query attention:
  ``n_rep = num_attention_heads / num_key_value_heads`` query heads share one key/value
  head. The unit removed is a whole KV group — its K and V heads with their ``n_rep``
  query heads (rows of ``q_proj``, ``k_proj``, ``v_proj``; columns of ``o_proj``) — so
  the grouping stays intact; ``head_dim`` is written into the config explicitly, so the
  rotary embedding (which depends on ``head_dim`` only) is unchanged. An FFN channel is
  a row of ``gate_proj`` and ``up_proj`` and a column of ``down_proj``.

A Llama config has one head count and one FFN width for all layers, and so does GPT-2's
FFN: those take ``scope: per_layer`` only (the same share from every layer); GPT-2 heads
also take ``scope: global``. The scores: ``taylor`` (|Σ w·∂L/∂w| over the group's output
projection, Molchanov 2019 / Michel 2019), ``activation``, ``weight_norm``, ``random``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from edgescale.compress.prune_structured import FfnConfig, HeadsConfig, select
from edgescale.compress.pruning import Groups, activation_scores, taylor_scores
from edgescale.compress.registry import StepContext, implement
from edgescale.data.corpus import train_batch
from edgescale.errors import UserError
from edgescale.hf.export import HFCausalLM
from edgescale.hf.source import PRUNABLE, accounting_hf


def layout_of(model_type: str, op: str) -> str:
    if model_type not in PRUNABLE:
        raise UserError(
            f"{op} knows the module layouts of {', '.join(sorted(PRUNABLE))}; this model is {model_type!r}",
            field="op",
        )
    return PRUNABLE[model_type]


def blocks(hf) -> list[nn.Module]:
    return list(hf.transformer.h) if hf.config.model_type == "gpt2" else list(hf.model.layers)


def groups(hf, block: nn.Module, kind: str) -> Groups:
    if hf.config.model_type == "gpt2":
        if kind == "heads":
            return Groups(block.attn.c_proj, block.attn.head_dim, True)
        return Groups(block.mlp.c_proj, 1, True)
    if kind == "heads":
        a = block.self_attn
        n_rep = hf.config.num_attention_heads // _kv_heads(hf.config)
        return Groups(a.o_proj, n_rep * a.head_dim, False)  # one KV group: its n_rep query heads
    return Groups(block.mlp.down_proj, 1, False)


def _kv_heads(config) -> int:
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


# --------------------------------------------------------------------------- scores


def _weight_norm(hf, block: nn.Module, kind: str) -> torch.Tensor:
    g = groups(hf, block, kind)
    sq = g.matrix().pow(2).sum(0).view(g.count, g.size).sum(1)  # output-projection columns
    if hf.config.model_type == "gpt2":
        if kind == "heads":
            a = block.attn
            w = block.attn.c_attn.weight.detach()  # (d, 3·A): q, k, v columns
            sq = sq + w.pow(2).view(w.shape[0], 3, a.num_heads, a.head_dim).sum((0, 1, 3))
        else:
            sq = sq + block.mlp.c_fc.weight.detach().pow(2).sum(0)
    elif kind == "heads":
        a, n_kv = block.self_attn, _kv_heads(hf.config)
        sq = sq + a.q_proj.weight.detach().pow(2).view(n_kv, -1).sum(1)
        sq = sq + a.k_proj.weight.detach().pow(2).view(n_kv, -1).sum(1)
        sq = sq + a.v_proj.weight.detach().pow(2).view(n_kv, -1).sum(1)
    else:
        m = block.mlp
        sq = sq + m.gate_proj.weight.detach().pow(2).sum(1) + m.up_proj.weight.detach().pow(2).sum(1)
    return sq.sqrt().double()


def _calibration(model: HFCausalLM, cfg, ctx: StepContext) -> list[torch.Tensor]:
    if ctx.corpus is None:
        raise UserError(f"importance {cfg.importance} needs calibration data (the train split)", field="importance")
    tokens = ctx.corpus["train"].tokens
    block = min(model.spec.block_size, tokens.size - 2)
    return [
        torch.from_numpy(train_batch(tokens, i, cfg.calibration_batch_size, block, ctx.seed))
        for i in range(cfg.calibration_batches)
    ]


def scores(model: HFCausalLM, kind: str, cfg: HeadsConfig | FfnConfig, ctx: StepContext) -> list[torch.Tensor]:
    hf = model.hf
    if cfg.importance == "random":
        gen = torch.Generator().manual_seed(ctx.seed)
        return [torch.rand(groups(hf, b, kind).count, generator=gen).double() for b in blocks(hf)]
    if cfg.importance == "weight_norm":
        return [_weight_norm(hf, b, kind) for b in blocks(hf)]
    batches = _calibration(model, cfg, ctx)
    work = copy.deepcopy(model).eval()  # gradients and hooks on a copy, never on the input
    gs = [groups(work.hf, b, kind) for b in blocks(work.hf)]
    return (taylor_scores if cfg.importance == "taylor" else activation_scores)(work, gs, batches)


# --------------------------------------------------------------------------- rebuilding


def _rebuilt(hf, config, state: dict[str, torch.Tensor]):
    from transformers import AutoModelForCausalLM

    out = AutoModelForCausalLM.from_config(config)
    out.load_state_dict(state)  # strict: every tensor of the new shape is filled
    return out.float().eval()


def _gpt2_heads(hf, keep: list[torch.Tensor]):
    out = copy.deepcopy(hf)
    to_prune = {}
    for i, (blk, kept) in enumerate(zip(blocks(hf), keep, strict=True)):
        original = [h for h in range(hf.config.n_head) if h not in set(hf.config.pruned_heads.get(i, ()))]
        gone = [original[j] for j in range(blk.attn.num_heads) if j not in set(kept.tolist())]
        if gone:
            to_prune[i] = gone
    out.prune_heads(to_prune)  # transformers' own: slices c_attn/c_proj, records config.pruned_heads
    return out.eval()


def _gpt2_ffn(hf, keep: list[torch.Tensor]):
    config = copy.deepcopy(hf.config)
    config.n_inner = len(keep[0])
    state = dict(hf.state_dict())
    for i, k in enumerate(keep):
        p = f"transformer.h.{i}.mlp."
        state[p + "c_fc.weight"] = state[p + "c_fc.weight"][:, k]  # Conv1D (d, F): columns are channels
        state[p + "c_fc.bias"] = state[p + "c_fc.bias"][k]
        state[p + "c_proj.weight"] = state[p + "c_proj.weight"][k, :]  # Conv1D (F, d): rows are channels
    return _rebuilt(hf, config, state)


def _llama_heads(hf, keep: list[torch.Tensor]):
    c = hf.config
    n_kv = _kv_heads(c)
    n_rep = c.num_attention_heads // n_kv
    hd = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    config = copy.deepcopy(c)
    config.num_key_value_heads = len(keep[0])
    config.num_attention_heads = len(keep[0]) * n_rep
    config.head_dim = hd  # no longer hidden_size / heads: keep the rotary dimension
    state = dict(hf.state_dict())
    for i, g in enumerate(keep):
        kv_rows = (g[:, None] * hd + torch.arange(hd)).reshape(-1)
        q_heads = (g[:, None] * n_rep + torch.arange(n_rep)).reshape(-1)  # query heads of the kept groups
        q_rows = (q_heads[:, None] * hd + torch.arange(hd)).reshape(-1)
        p = f"model.layers.{i}.self_attn."
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            state[p + name + ".weight"] = state[p + name + ".weight"][rows]
            if p + name + ".bias" in state:
                state[p + name + ".bias"] = state[p + name + ".bias"][rows]
        state[p + "o_proj.weight"] = state[p + "o_proj.weight"][:, q_rows]
    return _rebuilt(hf, config, state)


def _llama_ffn(hf, keep: list[torch.Tensor]):
    config = copy.deepcopy(hf.config)
    config.intermediate_size = len(keep[0])
    state = dict(hf.state_dict())
    for i, k in enumerate(keep):
        p = f"model.layers.{i}.mlp."
        for name in ("gate_proj", "up_proj"):
            state[p + name + ".weight"] = state[p + name + ".weight"][k]
            if p + name + ".bias" in state:
                state[p + name + ".bias"] = state[p + name + ".bias"][k]
        state[p + "down_proj.weight"] = state[p + "down_proj.weight"][:, k]
    return _rebuilt(hf, config, state)


_REBUILD = {
    ("gpt2", "heads"): _gpt2_heads,
    ("gpt2", "ffn"): _gpt2_ffn,
    ("llama", "heads"): _llama_heads,
    ("llama", "ffn"): _llama_ffn,
}


def check_scope(model_type: str, kind: str, scope: str, op: str) -> None:
    """Refuse a global ranking where the config can only hold one width for all layers."""
    if scope == "global" and not (layout_of(model_type, op) == "gpt2" and kind == "heads"):
        raise UserError(
            f"{op} with scope: global would give layers different widths, which a {model_type} config cannot "
            "hold (one value for all layers); use scope: per_layer",
            field="scope",
        )


def prune_hf(model: HFCausalLM, kind: str, cfg: HeadsConfig | FfnConfig, ctx: StepContext, op: str) -> HFCausalLM:
    hf = model.hf
    lay = layout_of(hf.config.model_type, op)
    check_scope(hf.config.model_type, kind, cfg.scope, op)
    s = scores(model, kind, cfg, ctx)
    keep = select(s, cfg.amount, cfg.scope, cfg.min_per_layer, getattr(cfg, "multiple_of", 1))
    out = HFCausalLM(_REBUILD[(lay, kind)](hf, keep), model.spec.block_size)
    before = [len(x) for x in s]
    after = [groups(out.hf, b, kind).count for b in blocks(out.hf)]
    a, b = accounting_hf(hf, model.spec.block_size), accounting_hf(out.hf, model.spec.block_size)
    unit = "KV groups" if (lay, kind) == ("llama", "heads") else kind
    ctx.metrics.update(
        {
            "params_total_before": a.params_total,
            "params_total_after": b.params_total,
            "params_non_embedding_before": a.params_non_embedding,
            "params_non_embedding_after": b.params_non_embedding,
            "sparsity": 1 - sum(after) / sum(before),
            "sparsity_non_embedding": 1 - b.params_non_embedding / a.params_non_embedding,
            f"layer_{kind}": after,
            "importance": cfg.importance,
            "kv_bytes_per_token_after": b.kv_bytes_per_token_fp32,
        }
    )
    ctx.log(
        f"{op}: {unit} per layer {before} → {after} by {cfg.importance} ({cfg.scope}); non-embedding "
        f"parameters {a.params_non_embedding:,} → {b.params_non_embedding:,}"
    )
    return out


@implement("prune.heads", backend="hf")
def prune_heads_hf(model: HFCausalLM, cfg: HeadsConfig, ctx: StepContext) -> HFCausalLM:
    """``prune.heads`` on a transformers model: GPT-2 heads, or Llama key/value groups."""
    return prune_hf(model, "heads", cfg, ctx, "prune.heads")


@implement("prune.ffn", backend="hf")
def prune_ffn_hf(model: HFCausalLM, cfg: FfnConfig, ctx: StepContext) -> HFCausalLM:
    """``prune.ffn`` on a transformers model: the MLP's hidden channels."""
    return prune_hf(model, "ffn", cfg, ctx, "prune.ffn")
