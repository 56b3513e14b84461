"""The GPT family's shape and exact accounting, without torch.

Accounting follows Kaplan et al. 2020 (arXiv:2001.08361) §2.1: N counts
non-embedding parameters (token and position embeddings excluded); the forward pass
costs ``2·N + 2·n_layer·n_ctx·d_attn`` FLOPs per token (eq. 2.2), with ``d_attn``
summed layer by layer when structured pruning left layers of different widths.

A trained family member has ``n_head`` heads and a ``4·n_embd`` FFN in every layer.
Structured pruning (:mod:`edgescale.compress.prune_structured`) leaves per-layer head
counts (``layer_heads``) and FFN widths (``layer_ffn``); the head width stays
``n_embd // n_head`` so the attention and the KV-cache layout (batch, heads, past,
head_dim) stay valid with fewer heads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GPTConfig:
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
    flops_per_token_kaplan: float  # 2N + 2·n_ctx·Σ d_attn at n_ctx
    flops_per_token_exact: float  # every matmul incl. attention and the LM head, at n_ctx
    n_ctx: int
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


def accounting(cfg: GPTConfig, n_ctx: int) -> ModelAccounting:
    """Parameter, FLOP and byte counts for ``cfg`` decoding with ``n_ctx`` tokens in context.

    Example::

        >>> a = accounting(GPTConfig(n_layer=2, n_head=2, n_embd=32), n_ctx=128)
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
    attention_macs = 2 * n_ctx * sum(attn)  # q·k over the context and attn·v
    kaplan = 2 * non_embedding + 2 * n_ctx * sum(attn)
    return ModelAccounting(
        params_total=total,
        params_embedding=embedding,
        params_non_embedding=non_embedding,
        flops_per_token_kaplan=float(kaplan),
        flops_per_token_exact=float(2 * (matmul_macs + attention_macs)),
        n_ctx=n_ctx,
        weight_bytes_fp32=4 * total,
        kv_bytes_per_token_fp32=4 * 2 * sum(attn),
    )
