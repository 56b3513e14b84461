"""The GPT family's shape and exact accounting, without torch.

Accounting follows Kaplan et al. 2020 (arXiv:2001.08361) §2.1: N counts
non-embedding parameters (token and position embeddings excluded); the forward pass
costs ``2·N + 2·n_layer·decode_context·d_attn`` FLOPs per token (eq. 2.2), with ``d_attn``
summed layer by layer when structured pruning left layers of different widths.

A trained family member has ``n_head`` heads and a ``4·n_embd`` FFN in every layer.
Structured pruning (:mod:`edgescale.compress.prune_structured`) leaves per-layer head
counts (``layer_heads``) and FFN widths (``layer_ffn``); the head width stays
``n_embd // n_head`` so the attention and the KV-cache layout (batch, heads, past,
head_dim) stay valid with fewer heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

from edgescale.config import LadderConfig, SizeConfig


@dataclass(frozen=True)
class GPTConfig:
    kind: ClassVar[str] = "gpt"  # the checkpoint metadata's name for this family (edgescale.models.checkpoint)
    n_layer: int
    n_head: int  # heads of an unpruned layer; fixes head_dim
    n_embd: int
    vocab_size: int = 256
    block_size: int = 256  # longest sequence (past + current) the position table covers
    tie_embeddings: bool = True
    layer_heads: tuple[int, ...] | None = None  # heads per layer after pruning; None = n_head everywhere
    layer_ffn: tuple[int, ...] | None = None  # FFN width per layer after pruning; None = 4·n_embd everywhere

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_layer < 1:
            raise ValueError(f"n_layer={self.n_layer} must be at least 1")
        for name, default in (("layer_heads", self.n_head), ("layer_ffn", 4 * self.n_embd)):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(int(v) for v in value)  # JSON metadata gives lists
            if len(value) != self.n_layer:
                raise ValueError(f"{name} has {len(value)} entries for n_layer={self.n_layer}")
            if min(value) < 1:
                raise ValueError(f"{name}={value}: every layer needs at least 1")
            # Canonical form: an unpruned shape has None, so its to_dict (and every cache
            # key built from it) is the same as before per-layer shapes existed.
            object.__setattr__(self, name, None if all(v == default for v in value) else value)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def heads_per_layer(self) -> tuple[int, ...]:
        return self.layer_heads or (self.n_head,) * self.n_layer

    @property
    def ffn_per_layer(self) -> tuple[int, ...]:
        return self.layer_ffn or (4 * self.n_embd,) * self.n_layer

    @property
    def is_uniform(self) -> bool:
        """True for an unpruned family member (same heads and FFN width in every layer)."""
        return self.layer_heads is None and self.layer_ffn is None

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("layer_heads", "layer_ffn"):
            if d[name] is None:
                del d[name]
            else:
                d[name] = list(d[name])
        return d


@dataclass(frozen=True)
class ModelAccounting:
    """Exact counts for one shape; ``params_non_embedding`` is Kaplan's N."""

    params_total: int
    params_embedding: int
    params_non_embedding: int
    flops_per_token_kaplan: float  # 2N + 2·decode_context·Σ d_attn at decode_context
    flops_per_token_exact: float  # every matmul incl. attention and the LM head, at decode_context
    decode_context: int
    weight_bytes_fp32: int
    kv_bytes_per_token_fp32: int


def _layer_params(d: int, a: int, f: int) -> int:
    """One block with attention width ``a`` (heads × head_dim) and FFN width ``f``."""
    return (
        2 * d  # ln_1
        + d * 3 * a
        + 3 * a  # qkv
        + a * d
        + d  # attention out
        + 2 * d  # ln_2
        + d * f
        + f  # fc
        + f * d
        + d  # proj
    )


def accounting(cfg: GPTConfig, decode_context: int) -> ModelAccounting:
    """Parameter, FLOP and byte counts for ``cfg`` decoding with ``decode_context`` tokens in context.

    Example::

        >>> a = accounting(GPTConfig(n_layer=2, n_head=2, n_embd=32), decode_context=128)
        >>> a.params_non_embedding
        25472
    """
    d, V = cfg.n_embd, cfg.vocab_size
    attn = [h * cfg.head_dim for h in cfg.heads_per_layer]  # d_attn of each layer
    ffn = cfg.ffn_per_layer
    non_embedding = sum(_layer_params(d, a, f) for a, f in zip(attn, ffn, strict=True)) + 2 * d  # + final LN
    embedding = V * d + cfg.block_size * d
    head = 0 if cfg.tie_embeddings else V * d
    total = non_embedding + embedding + head
    # Forward FLOPs per token: 2 per multiply-accumulate.
    matmul_macs = sum(d * 3 * a + a * d + 2 * d * f for a, f in zip(attn, ffn, strict=True)) + V * d
    attention_macs = 2 * decode_context * sum(attn)  # q·k over the context and attn·v
    kaplan = 2 * non_embedding + 2 * decode_context * sum(attn)
    return ModelAccounting(
        params_total=total,
        params_embedding=embedding,
        params_non_embedding=non_embedding,
        flops_per_token_kaplan=float(kaplan),
        flops_per_token_exact=float(2 * (matmul_macs + attention_macs)),
        decode_context=decode_context,
        weight_bytes_fp32=4 * total,
        kv_bytes_per_token_fp32=4 * 2 * sum(attn),
    )


def widest_activation(cfg: GPTConfig, context: int) -> int:
    """The widest activation row of a prefill at ``context`` (per-layer shapes after pruning):
    the logits, one layer's attention scores, its fused QKV or its FFN hidden layer."""
    attn = [h * cfg.head_dim for h in cfg.heads_per_layer]
    return max(cfg.vocab_size, max(cfg.heads_per_layer) * context, 3 * max(attn), max(cfg.ffn_per_layer))


def shape_record(cfg: GPTConfig) -> dict:
    """The shape results report for a family member (per-layer lists only after pruning)."""
    out = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "model": "gpt"}
    if not cfg.is_uniform:
        out |= {"layer_heads": list(cfg.heads_per_layer), "layer_ffn": list(cfg.ffn_per_layer)}
    return out


# --------------------------------------------------------------------------- a parameter count as a shape


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    params_non_embedding: int
    params_total: int


def _head_dim(n_embd: float) -> int:
    return 16 if n_embd < 256 else 64 if n_embd < 2048 else 128


def shape_for_params(n_target: float, vocab_size: int = 256, block_size: int = 256) -> Shape:
    """A GPT shape whose exact non-embedding count is closest to ``n_target``.

    For each depth, the width is solved from N ≈ 12·n_layer·d² and rounded to a multiple
    of the head size (16 below d=256, 64 below 2048, else 128); shapes keep the aspect
    ratio n_embd / n_layer between 16 and 128 — Kaplan et al. 2020 Fig. 5 find loss
    within a few percent over 20–200. The family's exact count
    (:func:`edgescale.models.shape.accounting`) picks the winner, not 12·L·d².
    """
    best: tuple[float, Shape] | None = None
    for n_layer in range(1, 161):
        d0 = math.sqrt(n_target / (12 * n_layer))
        step = _head_dim(d0)
        for n_embd in {max(step, math.floor(d0 / step) * step), max(step, math.ceil(d0 / step) * step)}:
            if not 16 <= n_embd / n_layer <= 128:
                continue
            n_head = n_embd // step
            acct = accounting(GPTConfig(n_layer, n_head, n_embd, vocab_size, block_size), block_size)
            err = abs(math.log(acct.params_non_embedding / n_target))
            if best is None or err < best[0] - 1e-3:  # prefer shallower on near-ties
                best = (err, Shape(n_layer, n_embd, n_head, acct.params_non_embedding, acct.params_total))
    if best is None:
        raise ValueError(f"no shape with a sane aspect ratio for {n_target:g} parameters")
    return best[1]


def ladder_sizes(ladder: LadderConfig, vocab_size: int = 256) -> list[SizeConfig]:
    """The ladder's rungs as explicit shapes: the given ones, or one planned per parameter count."""
    if ladder.sizes is not None:
        return list(ladder.sizes)
    out = []
    for name, n in zip(ladder.names(), ladder.params_non_embedding or [], strict=True):
        s = shape_for_params(n, vocab_size=vocab_size, block_size=ladder.block_size)
        out.append(SizeConfig(name=name, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd))
    return out
