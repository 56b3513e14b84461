"""Logit distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    loss = (1 − α) · CE(student, targets) + α · T² · KL(p_teacher^T ‖ p_student^T)

where p^T = softmax(logits / T). The T² factor keeps the soft-target gradients on the
same scale as the hard-target ones when T changes (Hinton et al. §2). Teacher logits
are computed on the fly under ``no_grad`` — for these small models a forward pass is
cheaper than storing 256 floats per training token.

Used (a) to train a distilled family from the largest trained model and (b) by the
recipe step ``distill.recover`` (:mod:`edgescale.train.recover`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term (0 = plain cross-entropy)")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of both teacher and student")


def kd_loss(
    student_logits: torch.Tensor,  # (B, T, V)
    teacher_logits: torch.Tensor | None,  # (B, T, V)
    targets: torch.Tensor,  # (B, T)
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    return kd_terms(student_logits, teacher_logits, targets, alpha, temperature)[0]


def kd_terms(
    student_logits: torch.Tensor,  # (B, T, V)
    teacher_logits: torch.Tensor | None,  # (B, T, V)
    targets: torch.Tensor,  # (B, T)
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective and, apart from it, the plain cross-entropy on the targets (what a training
    curve reports as train bpb, so a KD run's curve compares with its scratch twin's)."""
    vocab = student_logits.shape[-1]
    ce = F.cross_entropy(student_logits.reshape(-1, vocab), targets.reshape(-1))
    if alpha == 0 or teacher_logits is None:
        return ce, ce
    t = temperature
    log_ps = F.log_softmax(student_logits.reshape(-1, vocab) / t, dim=-1)
    log_pt = F.log_softmax(teacher_logits.reshape(-1, vocab).detach() / t, dim=-1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")  # KL(teacher ‖ student)
    return (1 - alpha) * ce + alpha * t * t * kl, ce
