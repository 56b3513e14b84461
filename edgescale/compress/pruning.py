"""What every pruning step shares: the model check, calibration batches, and the report.

Calibration batches are random windows of the *train* split (``ctx.corpus["train"]``),
drawn with :func:`edgescale.data.corpus.train_batch` from ``ctx.seed``: the same seed
gives the same batches, hence the same importance scores and the same pruned weights.

The report puts, in ``ctx.metrics``, the parameter counts before and after (total and
non-embedding, as :func:`edgescale.models.shape.accounting` counts them: Kaplan's N
excludes the token and position tables and an untied LM head) and the achieved
sparsity, and logs one line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.models.gpt import GPT, accounting

# Field types shared by the pruning configs (one definition, one description).
CalibrationBatches = Annotated[
    int, Field(ge=1, le=256, description="train-split batches a data-driven score is computed on")
]
CalibrationBatchSize = Annotated[int, Field(ge=1, le=256, description="sequences per calibration batch")]
Scope = Annotated[
    Literal["per_layer", "global"],
    Field(description="per_layer: the same share from every layer; global: one ranking over all layers"),
]


def share_of(amount: float, n: int) -> int:
    """``amount · n`` rounded half up (Python's ``round`` would take 0.5 · 2 heads to 0)."""
    return int(amount * n + 0.5)


def require_gpt(model: Any, op: str) -> GPT:
    if not isinstance(model, GPT):
        raise UserError(
            f"{op} prunes the edgescale GPT family (it rebuilds or masks its Linear layers by name); "
            f"got {type(model).__name__}",
            field="op",
        )
    return model


def calibration_batches(model: GPT, n: int, batch_size: int, ctx: StepContext, why: str) -> list[torch.Tensor]:
    """``n`` batches of (batch_size, block_size + 1) train-split tokens."""
    from edgescale.data.corpus import train_batch

    if ctx.corpus is None:
        raise UserError(f"{why} needs calibration data: the chain's corpus (its train split)", field="importance")
    tokens = ctx.corpus["train"].tokens
    block = min(model.cfg.block_size, tokens.size - 2)
    return [torch.from_numpy(train_batch(tokens, i, batch_size, block, ctx.seed)) for i in range(n)]


def lm_loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats) of ``model`` on one (B, T+1) batch."""
    logits = model.logits(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def _non_embedding_names(model: GPT) -> list[str]:
    return [n for n, _ in model.named_parameters() if not n.startswith(("wte.", "wpe.", "lm_head."))]


def nonzero_non_embedding(model: GPT) -> int:
    return sum(int(model.get_parameter(n).count_nonzero()) for n in _non_embedding_names(model))


def report(ctx: StepContext, op: str, before: GPT, after: GPT, sparsity: float, summary: str, **extra: Any) -> None:
    """Parameter counts before/after, the achieved ``sparsity``, and one log line."""
    a, b = accounting(before.cfg, before.cfg.block_size), accounting(after.cfg, after.cfg.block_size)
    nonzero = nonzero_non_embedding(after)
    ctx.metrics.update(
        {
            "params_total_before": a.params_total,
            "params_total_after": b.params_total,
            "params_non_embedding_before": a.params_non_embedding,
            "params_non_embedding_after": b.params_non_embedding,
            "params_non_embedding_nonzero_after": nonzero,
            "sparsity": sparsity,
            # zero or removed non-embedding parameters, as a share of the input's
            "sparsity_non_embedding": 1 - nonzero / a.params_non_embedding,
            **extra,
        }
    )
    ctx.log(
        f"{op}: {summary}; sparsity {sparsity:.1%}; non-embedding parameters "
        f"{a.params_non_embedding:,} → {b.params_non_embedding:,} ({nonzero:,} non-zero), "
        f"total {a.params_total:,} → {b.params_total:,}"
    )
