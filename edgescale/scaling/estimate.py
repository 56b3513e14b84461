"""What a study's training will cost, printed before any of it starts: FLOPs, and wall time on the
study's training device by the planner's cost model (:func:`edgescale.scaling.plan.plan_cost`:
hours = C / (peak · utilisation)).

Counted: every training run :meth:`edgescale.pipeline.Pipeline.train_all` will make (ladder
sizes and their seed replicates with their cooled WSD branches, distilled students with their
teacher's forward passes, the students' equal-token and equal-compute twins) and their
validation points. FLOPs per token are PaLM's (Chowdhery et al. 2022, arXiv:2204.02311,
appendix B): 6·N + 12·L·T·d for training, a third of it for a forward pass, N counting every
matmul weight (the tied head once per use) and the attention over the full context T.
Left out, and said so: scratch twins of pruning recipes and recovery fine-tuning (their shapes
and tokens are known only after pruning), export, scoring and measurement.

The utilisation is the planner's assumption (40%), not a measurement; run.py prints the
measured training time beside the estimate afterwards, which gives the utilisation reached.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from edgescale.config import Study
from edgescale.models.backend import SizePlan
from edgescale.models.gpt import GPTConfig
from edgescale.models.shape import accounting
from edgescale.resources import thread_cap
from edgescale.scaling.plan import DEFAULT_MFU, plan_cost
from edgescale.train.device import device_peak, resolve_device
from edgescale.train.schedule import wsd_branches
from edgescale.train.seed_stats import equal_compute_tokens


@dataclass(frozen=True)
class TrainingEstimate:
    runs: int
    tokens: int  # optimizer-step tokens, cooled branches included
    flops: float
    device: str  # the resolved training device, e.g. "cpu" or "cuda (NVIDIA H100 80GB HBM3)"
    peak_flops: float | None  # None: the device's peak is unknown, so no wall time
    peak_source: str
    utilisation: float
    seconds: float | None
    left_out: str

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        head = f"training estimate: {self.runs} runs, {self.tokens:,} tokens, {self.flops:.3g} FLOPs"
        if self.seconds is None:
            return f"{head}; wall time unknown on {self.device} ({self.peak_source})"
        return (
            f"{head}; about {_duration(self.seconds)} on {self.device} at {self.utilisation:.0%} of its "
            f"{self.peak_flops / 1e12:.3g} TFLOP/s peak ({self.peak_source}; the utilisation is the planner's "
            f"assumption), one run at a time. Not counted: {self.left_out}"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def flops_per_token(plan: SizePlan, block: int) -> float:
    """Forward FLOPs per token of ``plan``'s model over a ``block``-token context (PaLM's count);
    a module edgescale cannot see into counts 2·N (its attention unknown)."""
    if isinstance(plan.cfg, GPTConfig):
        return accounting(plan.cfg, block).flops_per_token_exact
    return 2.0 * plan.acct.params_total


def _run_cost(study: Study, plan: SizePlan, tokens: int, branches: bool, extra_fwd: float = 0.0) -> tuple[int, float]:
    """(tokens stepped, FLOPs) of one run of ``plan`` for ``tokens``: its steps (with the non-final
    cooled branches when ``branches``) at 3 forward passes plus ``extra_fwd`` (a teacher's) per
    token, and its validation points."""
    t, block = study.training, study.block_size
    per_step = (plan.batch_size or t.batch_size) * t.grad_accum * block
    steps = max(1, math.ceil(tokens / per_step))
    cooled = {at: k for at, k in wsd_branches(steps, t).items() if branches or at + k == steps}
    stepped = (steps + sum(k for at, k in cooled.items() if at + k != steps)) * per_step
    fwd = flops_per_token(plan, block)
    evals = (steps // max(1, round(t.eval_every_tokens / per_step))) * t.eval_tokens
    evals += max(1, len(cooled)) * t.cooled_eval_tokens
    return stepped, stepped * (3 * fwd + extra_fwd) + evals * fwd


def estimate_training(study: Study, plans: list[SizePlan], trains: set[str], train_tokens: int) -> list[tuple]:
    """(run label, tokens stepped, FLOPs) of every training run ``train_all`` will make; ``trains``:
    the plans whose backend trains (a checkpoint copied into the run costs nothing here)."""
    t = study.training
    ladder = set(study.ladder.names()) if study.ladder else set()
    runs = []
    for p in plans:
        if p.name in trains:
            for seed in range(t.seeds if p.name in ladder else 1):
                runs.append((f"{p.name} seed {study.seed + seed}", *_run_cost(study, p, p.tokens, p.cooled_branches)))
    kd = study.distillation
    if kd:
        by_name = {p.name: p for p in plans}
        teacher = by_name[kd.teacher]
        for s in kd.students:
            student = by_name[s]
            for seed in range(kd.seeds):
                steps_tokens, flops = _run_cost(
                    study, student, student.tokens, False, flops_per_token(teacher, study.block_size)
                )
                runs.append((f"{s}-kd seed {study.seed + seed}", steps_tokens, flops))
                if seed >= t.seeds:  # an equal-token twin beyond the ladder's own replicates
                    runs.append((f"{s} seed {study.seed + seed}", *_run_cost(study, student, student.tokens, True)))
                if kd.equal_compute:
                    cap = int(t.max_epochs * train_tokens)
                    tokens, _ = equal_compute_tokens(
                        student.acct.params_total, teacher.acct.params_total, student.tokens, cap
                    )
                    runs.append((f"{s}-eqc seed {study.seed + seed}", *_run_cost(study, student, tokens, False)))
    return runs


def summarise(runs: list[tuple], device: str, peak: tuple[float | None, str, str]) -> TrainingEstimate:
    """The runs' total cost and, where the device's peak is known, its wall time at the planner's
    utilisation; ``peak`` as :func:`edgescale.train.device.device_peak` gives it."""
    flops, tokens = float(sum(r[2] for r in runs)), sum(r[1] for r in runs)
    left_out = "scratch twins of pruning recipes and recovery (known after pruning), export, scoring, measurement"
    if peak[0] is None:
        return TrainingEstimate(len(runs), tokens, flops, device, None, peak[1], DEFAULT_MFU, None, left_out)
    seconds = plan_cost(flops, peak_flops=peak[0], mfu=DEFAULT_MFU).accelerator_hours * 3600
    source = f"{peak[1]}: {peak[2]}"
    return TrainingEstimate(len(runs), tokens, flops, device, peak[0], source, DEFAULT_MFU, seconds, left_out)


def estimate_study(
    study: Study, plans: list[SizePlan], trains: set[str], train_tokens: int, here: bool = True
) -> TrainingEstimate:
    """The estimate for a study about to run: its training device resolved (a device that is asked
    for and absent stops the run here, before anything trains) and that device's peak. ``here``
    False (training on a Ray cluster): the device is the cluster's, so no peak and no wall time."""
    runs = estimate_training(study, plans, trains, train_tokens)
    if not here:
        where = f"{study.training.device} on the Ray cluster"
        return summarise(runs, where, (None, "peak unknown: the training device is the cluster's", "none"))
    device = resolve_device(study.training.device)
    torch.set_num_threads(thread_cap(study.training.threads))  # the CPU peak at the threads training will use
    label = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    return summarise(runs, label, device_peak(device))


def measured_against(estimate: TrainingEstimate, seconds: float) -> str:
    """The training stage's measured wall time beside the estimate (reused runs take no time)."""
    if estimate.seconds is None or not estimate.flops:
        return f"training took {_duration(seconds)} (no estimate to compare: {estimate.peak_source})"
    reached = estimate.flops / seconds / estimate.peak_flops if seconds > 0 else float("nan")
    return (
        f"training took {_duration(seconds)} against an estimate of {_duration(estimate.seconds)}: "
        f"{reached:.1%} of the peak if every run trained here (runs reused from an earlier run take no time)"
    )
