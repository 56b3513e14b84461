"""The GPT family's shape and exact accounting, without torch.

Accounting follows Kaplan et al. 2020 (arXiv:2001.08361) §2.1: N counts
non-embedding parameters (token and position embeddings excluded); the forward pass
costs ``2·N + 2·n_layer·n_ctx·d_attn`` FLOPs per token (eq. 2.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = 256
    block_size: int = 256  # longest sequence (past + current) the position table covers
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelAccounting:
    """Exact counts for one shape; ``params_non_embedding`` is Kaplan's N."""

    params_total: int
    params_embedding: int
    params_non_embedding: int
    flops_per_token_kaplan: float  # 2N + 2·n_layer·n_ctx·d_attn at n_ctx
    flops_per_token_exact: float  # every matmul incl. attention and the LM head, at n_ctx
    n_ctx: int
    weight_bytes_fp32: int
    kv_bytes_per_token_fp32: int


def accounting(cfg: GPTConfig, n_ctx: int) -> ModelAccounting:
    """Parameter, FLOP and byte counts for ``cfg`` decoding with ``n_ctx`` tokens in context.

    Example::

        >>> a = accounting(GPTConfig(n_layer=2, n_head=2, n_embd=32), n_ctx=128)
        >>> a.params_non_embedding
        25472
    """
    d, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    per_layer = (
        2 * d  # ln_1
        + d * 3 * d
        + 3 * d  # qkv
        + d * d
        + d  # attention out
        + 2 * d  # ln_2
        + d * 4 * d
        + 4 * d  # fc
        + 4 * d * d
        + d  # proj
    )
    non_embedding = L * per_layer + 2 * d  # + final LayerNorm
    embedding = V * d + cfg.block_size * d
    head = 0 if cfg.tie_embeddings else V * d
    total = non_embedding + embedding + head
    # Forward FLOPs per token: 2 per multiply-accumulate.
    matmul_macs = L * (d * 3 * d + d * d + d * 4 * d + 4 * d * d) + V * d
    attention_macs = L * 2 * n_ctx * d  # q·k over the context and attn·v
    kaplan = 2 * non_embedding + 2 * L * n_ctx * d
    return ModelAccounting(
        params_total=total,
        params_embedding=embedding,
        params_non_embedding=non_embedding,
        flops_per_token_kaplan=float(kaplan),
        flops_per_token_exact=float(2 * (matmul_macs + attention_macs)),
        n_ctx=n_ctx,
        weight_bytes_fp32=4 * total,
        kv_bytes_per_token_fp32=4 * 2 * L * d,
    )
