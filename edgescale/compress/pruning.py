"""What every pruning step shares: calibration batches, importance scores, and the report.

Calibration batches are random windows of the *train* split (``ctx.corpus["train"]``),
drawn with :func:`edgescale.data.corpus.train_batch` from ``ctx.seed``: the same seed
gives the same batches, hence the same importance scores and the same pruned weights.

The report puts, in ``ctx.metrics``, the parameter counts before and after (total and
non-embedding, as :func:`edgescale.models.shape.accounting` counts them: Kaplan's N
excludes the token and position tables and an untied LM head) and the achieved
sparsity, and logs one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from edgescale.compress.registry import StepContext
from edgescale.data.corpus import train_batch
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


def calibration_batches(model: GPT, n: int, batch_size: int, ctx: StepContext, why: str) -> list[torch.Tensor]:
    """``n`` batches of (batch_size, block_size + 1) train-split tokens."""
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


@dataclass(frozen=True)
class Groups:
    """Where one kind of group lives in one layer: the output projection as a (d, in) view
    and the width of one group in its input."""

    out_module: torch.nn.Module
    size: int
    transposed: bool  # Conv1D: weight is (in, out)

    def matrix(self, grad: bool = False) -> torch.Tensor:
        w = self.out_module.weight.grad if grad else self.out_module.weight.detach()
        return w.T if self.transposed else w  # (d, in)

    @property
    def count(self) -> int:
        return self.matrix().shape[1] // self.size


def taylor_scores(work, gs: list[Groups], batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """|Σ w·∂L/∂w| over each group's columns of its output projection, averaged over the
    calibration batches (Molchanov et al. 2019; Michel et al. 2019). ``work`` is an
    edgescale GPT or a Hugging Face model wrapper: anything :func:`lm_loss` scores."""
    totals = [torch.zeros(g.count, dtype=torch.float64) for g in gs]
    for batch in batches:
        work.zero_grad(set_to_none=True)
        lm_loss(work, batch).backward()
        for total, g in zip(totals, gs, strict=True):
            gate = (g.matrix() * g.matrix(grad=True)).sum(0).view(g.count, g.size).sum(1)
            total += gate.abs().double()
    return [t / len(batches) for t in totals]


def activation_scores(work, gs: list[Groups], batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean norm of each group's contribution to its output projection, ‖W[:, g]·a_g‖,
    over the calibration tokens (hooks on a copy's projections; ``work.logits`` runs them)."""
    totals = [torch.zeros(g.count, dtype=torch.float64) for g in gs]

    def hook(i: int):
        g = gs[i]

        def record(module: torch.nn.Module, args: tuple) -> None:
            w = g.matrix()  # (d, in)
            y = args[0].detach().reshape(-1, w.shape[1])  # (N, in)
            if g.size == 1:
                contrib = y.abs() * w.norm(dim=0)
            else:
                contrib = torch.einsum("ngk,dgk->ngd", y.view(-1, g.count, g.size), w.view(-1, g.count, g.size))
                contrib = contrib.norm(dim=-1)
            totals[i] += contrib.sum(0).double()

        return record

    handles = [g.out_module.register_forward_pre_hook(hook(i)) for i, g in enumerate(gs)]
    n_tokens = forward_with_hooks(work, handles, batches)
    return [t / n_tokens for t in totals]


def forward_with_hooks(work, handles: list, batches: list[torch.Tensor]) -> int:
    """Run ``work`` over the calibration batches (inputs: all but each row's last token)
    with the hooks ``handles`` attached, remove them even on error; return the tokens seen."""
    try:
        with torch.no_grad():
            for b in batches:
                work.logits(b[:, :-1])
    finally:
        for h in handles:
            h.remove()
    return sum(b[:, :-1].numel() for b in batches)
