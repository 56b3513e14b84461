"""Distil or train from scratch? The student size and distillation tokens that reach a target loss
from a given teacher at least compute, against the cheapest supervised run to the same target.

Compute follows Busbridge et al. 2025 (arXiv:2502.08606) Eq. 9 / Table 2 with F(N) ≈ 2N forward
FLOPs per token (they use a finer F(N); edgescale's other plans use 6·N·D too):

- student training 6·N_S·D_S;
- teacher logits 2·N_T·D_S (one forward pass per distillation token), when the teacher's size is known;
  unknown, the plan is their "best case" (teacher logits already paid for) and says so;
- teacher pretraining 6·N_T·D_T, when its size and tokens are known: reported apart, with the verdict
  in the scenario where the teacher is trained for this one student (their "pretraining + inference").

Both optimisations search (N, D) on a log grid (0.01 decade in N): the law has no closed-form optimum,
and the capacity-gap factor can make L_S non-monotone in D, so for each N the smallest D that reaches
the target is taken (refined by root finding), then the N of least compute. Both keep D >= N
(:data:`MIN_TOKENS_PER_PARAM`): below a token per parameter a run is mostly warm-up (the rule of
:func:`edgescale.scaling.identify.data_to_identify`), and the law, extrapolated there, answers with
students far larger than any it was fitted on trained on almost no tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from edgescale.scaling.distill_law import DistillLaw, resolve_distill_law

__all__ = ["DistillPlan", "describe", "plan_distill", "plan_from_spec"]

LOG10_N = np.arange(1.0, 15.0001, 0.01)
LOG10_D = np.arange(2.0, 18.0001, 0.02)
MIN_TOKENS_PER_PARAM = 1.0
ACCOUNTING = (
    "Busbridge et al. 2025 Eq. 9 with F(N) = 2N: student 6·N_S·D_S + teacher logits 2·N_T·D_S "
    "(+ teacher pretraining 6·N_T·D_T in the scenario that counts it)"
)


@dataclass(frozen=True)
class DistillPlan:
    status: str  # "ok" | "infeasible" | "unidentified"
    law: str
    teacher: dict
    target_loss: float
    objective: str = "distill_target_loss_min_compute"
    form: str = ""
    loss_unit: str = ""
    n_convention: str = ""
    fit_status: str = ""
    unidentified: dict = field(default_factory=dict)
    student: dict | None = None
    compute: dict | None = None
    scratch: dict | None = None
    cheaper: str | None = None  # with the teacher already trained
    cheaper_with_teacher_training: str | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _cheapest(loss_fn, target: float, cost_per_token) -> tuple[float, float] | None:
    """(N, D) of least ``cost_per_token(N)·D`` with ``loss_fn(N, D) <= target``, or None."""
    from scipy.optimize import brentq

    n = 10.0 ** LOG10_N[:, None]
    d = 10.0 ** LOG10_D[None, :]
    ok = (loss_fn(n, d) <= target) & (d >= MIN_TOKENS_PER_PARAM * n)  # (nN, nD)
    reach = ok.any(axis=1)
    if not reach.any():
        return None
    first = np.where(reach, ok.argmax(axis=1), 0)
    cost = np.where(reach, cost_per_token(n[:, 0]) * d[0, first], np.inf)
    i = int(np.argmin(cost))
    j = int(first[i])
    n_best = float(n[i, 0])
    lo = max(float(LOG10_D[j - 1]) if j else -math.inf, math.log10(MIN_TOKENS_PER_PARAM * n_best))
    if lo >= LOG10_D[j] or gap_at(loss_fn, n_best, lo, target) <= 0:
        return n_best, float(d[0, j])

    return n_best, 10.0 ** brentq(lambda x: gap_at(loss_fn, n_best, x, target), lo, LOG10_D[j], xtol=1e-10)


def gap_at(loss_fn, n: float, log10_d: float, target: float) -> float:
    return float(loss_fn(np.array(n), np.array(10.0**log10_d))) - target


def plan_distill(
    law: DistillLaw,
    target: float,
    *,
    teacher_loss: float | None = None,
    teacher_params: float | None = None,
    teacher_tokens: float | None = None,
) -> DistillPlan:
    """See the module docstring; the teacher is its loss, or its size and tokens through the supervised law."""
    teacher, notes = _teacher(law, teacher_loss, teacher_params, teacher_tokens)
    head = {
        "law": law.name,
        "teacher": teacher,
        "target_loss": target,
        "form": law.form,
        "loss_unit": law.loss_unit,
        "n_convention": law.n_convention,
        "fit_status": law.status,
        "unidentified": dict(law.unidentified),
    }
    if law.unidentified:
        why = "; ".join(f"{k}: {v}" for k, v in law.unidentified.items())
        return DistillPlan(status="unidentified", reason=f"no plan: the law's grid does not identify {why}", **head)
    l_t = teacher["loss"]
    if target <= l_t:
        reason = (
            f"target {target:g} is at or below the teacher's loss L_T = {l_t:.4g}: under {law.name} a student's loss "
            "is L_T plus a positive term, so no student size or token count reaches it"
        )
        return DistillPlan(status="infeasible", reason=reason, **head)
    n_t = teacher.get("params")
    found = _cheapest(lambda n, d: law.student_loss(n, d, l_t), target, lambda n: 6 * n + 2 * (n_t or 0.0))
    if found is None:
        reason = f"no student up to 1e15 parameters and 1e18 tokens reaches {target:g} under {law.name}"
        return DistillPlan(status="infeasible", reason=reason, **head)
    n_s, d_s = found
    compute = {
        "student_flops": 6 * n_s * d_s,
        "teacher_forward_flops": 2 * n_t * d_s if n_t else None,
        "distill_flops": 6 * n_s * d_s + (2 * n_t * d_s if n_t else 0.0),
        "teacher_training_flops": 6 * n_t * teacher_tokens if n_t and teacher_tokens else None,
        "accounting": ACCOUNTING,
    }
    notes.append(f"D >= {MIN_TOKENS_PER_PARAM:g} token per parameter, for the student and the scratch run")
    if not n_t:
        notes.append(
            "teacher size unknown: its logits are not counted (Busbridge et al.'s best case, amortised teacher)"
        )
    student = {
        "n_params": n_s,
        "n_tokens": d_s,
        "tokens_per_param": d_s / n_s,
        "predicted_loss": float(law.student_loss(n_s, d_s, l_t)),
        "supervised_loss": float(law.supervised.loss(n_s, d_s)),
    }
    scratch = _scratch(law, target)
    cheaper, with_training = _verdict(compute, scratch)
    return DistillPlan(
        status="ok",
        student=student,
        compute=compute,
        scratch=scratch,
        cheaper=cheaper,
        cheaper_with_teacher_training=with_training,
        notes=notes,
        **head,
    )


def plan_from_spec(spec: str, target: float, **teacher) -> DistillPlan:
    """:func:`plan_distill` with the law named as ``--distill-law`` takes it (``busbridge2025`` or ``fit:FILE``)."""
    return plan_distill(resolve_distill_law(spec), target, **teacher)


def _teacher(law: DistillLaw, loss, params, tokens) -> tuple[dict, list[str]]:
    if loss is not None:
        return {"loss": loss, "loss_from": "given", "params": params, "tokens": tokens}, []
    l_t = float(law.supervised.loss(params, tokens))
    note = f"teacher loss {l_t:.4g} from the supervised law at N_T = {params:.3g}, D_T = {tokens:.3g}"
    return {"loss": l_t, "loss_from": "supervised law", "params": params, "tokens": tokens}, [note]


def _scratch(law: DistillLaw, target: float) -> dict:
    """The cheapest supervised run (6·N·D) reaching ``target`` under the law's supervised law."""
    sup = law.supervised
    if target <= sup.E:
        return {"status": "infeasible", "reason": f"target {target:g} is at or below the supervised E = {sup.E:.4g}"}
    found = _cheapest(sup.loss, target, lambda n: 6 * n)
    if found is None:
        return {"status": "infeasible", "reason": f"no supervised run up to 1e15 parameters reaches {target:g}"}
    n, d = found
    return {
        "status": "ok",
        "law": sup.name,
        "n_params": n,
        "n_tokens": d,
        "compute_flops": 6 * n * d,
        "predicted_loss": float(sup.loss(n, d)),
    }


def _verdict(compute: dict, scratch: dict) -> tuple[str, str | None]:
    """Cheaper with the teacher already trained, and with its pretraining counted (None: unknown)."""
    if scratch["status"] != "ok":
        return "distillation", "distillation" if compute["teacher_training_flops"] else None
    s = scratch["compute_flops"]
    cheaper = "distillation" if compute["distill_flops"] < s else "scratch"
    pre = compute["teacher_training_flops"]
    if pre is None:
        return cheaper, None
    return cheaper, "distillation" if compute["distill_flops"] + pre < s else "scratch"


def describe(plan: DistillPlan) -> str:
    """The plan for a person."""
    t = plan.teacher
    lines = [
        f"law: {plan.law} ({plan.form})",
        f"fit status: {plan.fit_status}",
        f"teacher: L_T = {t['loss']:.4g} {plan.loss_unit} ({t['loss_from']})",
        f"status: {plan.status}",
    ]
    if plan.status != "ok":
        return "\n".join([*lines, f"  {plan.reason}"])
    s, c, sc = plan.student, plan.compute, plan.scratch
    lines += [
        f"student: N_S = {s['n_params']:.4g} ({plan.n_convention}), D_S = {s['n_tokens']:.4g} tokens, "
        f"predicted L_S = {s['predicted_loss']:.4g}",
        f"compute: {c['distill_flops']:.3g} FLOPs (student {c['student_flops']:.3g}"
        + (f", teacher logits {c['teacher_forward_flops']:.3g}" if c["teacher_forward_flops"] else "")
        + ")",
    ]
    if sc["status"] == "ok":
        lines.append(
            f"from scratch: N = {sc['n_params']:.4g}, D = {sc['n_tokens']:.4g}, {sc['compute_flops']:.3g} FLOPs"
        )
    else:
        lines.append(f"from scratch: {sc['reason']}")
    lines.append(f"cheaper (teacher already trained): {plan.cheaper}")
    if plan.cheaper_with_teacher_training:
        lines.append(f"cheaper (teacher trained for this student): {plan.cheaper_with_teacher_training}")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
