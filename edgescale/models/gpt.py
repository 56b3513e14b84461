"""A small decoder-only transformer (GPT-2 shape) with a KV cache.

In the spirit of karpathy/nanoGPT's ``model.py``: the whole model in one file, with
parameter, FLOP and byte accounting next to it. Pre-LayerNorm blocks, causal
self-attention, GELU MLP (4x), learned positions, optional tied embeddings.

The forward pass takes explicit ``position_ids`` and an ``attention_mask`` over
past + current positions, and returns the present key/value cache, so the same
module traces to an ONNX graph that serves both prefill (empty past) and decode
(one token, past of any length).

The shape and its accounting live in :mod:`edgescale.models.shape`, which imports
without torch so the planner can use the family's exact parameter count.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgescale.models.shape import GPTConfig, ModelAccounting, accounting

__all__ = ["GPT", "GPTConfig", "ModelAccounting", "accounting"]

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, n_head: int | None = None) -> None:
        super().__init__()
        self.n_head = n_head or cfg.n_head  # this layer's heads (fewer than cfg.n_head after head pruning)
        self.head_dim = cfg.head_dim
        self.d_attn = self.n_head * cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * self.d_attn)
        self.c_proj = nn.Linear(self.d_attn, cfg.n_embd)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        mask: torch.Tensor | None,  # (B, 1, T, P+T) bool, True = may attend; None = plain causal
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.d_attn, dim=2)  # (B, T, A) each, A = H·hd
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, P+T, hd)
            v = torch.cat([past[1], v], dim=2)
        if mask is None:  # no past, no padding: the fused causal kernel
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, self.d_attn)
        return self.c_proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        ffn = cfg.ffn_per_layer[layer]
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, cfg.heads_per_layer[layer])
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp_fc = nn.Linear(cfg.n_embd, ffn)
        self.mlp_proj = nn.Linear(ffn, cfg.n_embd)

    def forward(self, x, mask, past):
        a, present = self.attn(self.ln_1(x), mask, past)
        x = x + a
        x = x + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x))))
        return x, present


class GPT(nn.Module):
    """Decoder-only transformer; ``GPT(cfg, seed=0)`` is deterministic for a seed."""

    def __init__(self, cfg: GPTConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._init_weights(seed)

    @property
    def spec(self) -> GPTConfig:
        """The shape, under the name every edgescale torch model uses for it."""
        return self.cfg

    def _init_weights(self, seed: int) -> None:
        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer).
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
                continue
            std = 0.02
            if name.endswith(("c_proj.weight", "mlp_proj.weight")):
                std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) int64
        position_ids: torch.Tensor | None = None,  # (B, T) int64
        attention_mask: torch.Tensor | None = None,  # (B, P+T), 1 = real token
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        B, T = input_ids.shape
        P = 0 if not past_key_values else past_key_values[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(P, P + T, device=input_ids.device).expand(B, T)
        mask = None  # training and plain prefill: SDPA's causal kernel
        if attention_mask is not None or P:
            if attention_mask is None:
                attention_mask = torch.ones(B, P + T, dtype=torch.int64, device=input_ids.device)
            # Query t sits at absolute index P+t and may see key j when j <= P+t.
            key_idx = torch.arange(P + T, device=input_ids.device)
            query_idx = torch.arange(T, device=input_ids.device) + P
            causal = key_idx[None, :] <= query_idx[:, None]  # (T, P+T)
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, P+T)
        x = self.wte(input_ids) + self.wpe(position_ids)  # (B, T, C)
        presents: KVCache = []
        for i, block in enumerate(self.blocks):
            past = past_key_values[i] if past_key_values else None
            x, present = block(x, mask, past)
            presents.append(present)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, presents

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of full sequences (training and evaluation)."""
        return self.forward(input_ids)[0]

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with the KV cache; ``prompt`` is (1, T)."""
        logits, past = self.forward(prompt)
        out = [int(logits[0, -1].argmax())]
        pos = prompt.shape[1]
        for _ in range(max_new_tokens - 1):
            token = torch.tensor([[out[-1]]])
            logits, past = self.forward(token, torch.tensor([[pos]]), None, past)
            out.append(int(logits[0, -1].argmax()))
            pos += 1
        return torch.tensor(out)
