"""Training loop: AdamW, linear warmup then cosine decay (or warmup-stable-decay with cooled
branches), clipping, periodic validation, safetensors checkpoints and exact resume.

Schedules scale with each cooled branch (Hägele et al. 2024, arXiv:2405.18392): a branch's
cooldown is ``cooldown_fraction`` of that branch's own steps, and the warmup is
``warmup_fraction`` of the *shortest* branch, so it is at most that share of every branch.
With ``lr_rule: mup_width`` the hidden matrices' learning rate scales as 1/width (µP for
Adam: Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, Table 3): the peak LR is set
once at ``lr_base_width`` and carried across the ladder rather than held fixed, which
distorts fitted exponents (Porian et al. 2024, arXiv:2406.19146). Embeddings, the tied head
and vectors keep the base rate; the µP init and output multipliers are not applied, so this
is µP's learning-rate rule only. AdamW β2 stays 0.95 for every size.

Batches depend only on (seed, step) and the resume checkpoint holds the model and
AdamW state, so a run interrupted and resumed follows the same loss curve as an
uninterrupted one (to float tolerance).

Each cooled branch other than the final one is saved when it is taken
(``branch-<tokens>.safetensors`` beside the run, its meta with the run's key, tokens and
fraction), so post-training compression can be scored at several D/N per size (the
degradation grid). A resumed run reports the branch files of its key that exist; one lost
before the resume point is not retrained.

The device (``training.device``) and what it allows come from :mod:`edgescale.train.device`:
batches are built on the host and copied to the device, forward and loss run under its
autocast (none on CPU), parameters and AdamW moments stay fp32, and every checkpoint is
written as CPU tensors, so a run resumes on another device (state is cast on load).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgescale.atomic import write_json
from edgescale.bench.loss import score
from edgescale.config import TrainingConfig
from edgescale.data.corpus import Corpus, eval_spans, train_batch
from edgescale.errors import UserError
from edgescale.models.checkpoint import build_model, save_model, spec_meta
from edgescale.models.gpt import GPT, GPTConfig
from edgescale.resources import thread_cap
from edgescale.train.device import DeviceSetup, autocast, configured, device_setup, to_device
from edgescale.train.distill import DistillConfig, kd_terms
from edgescale.train.resume import _load_resume, _save_resume
from edgescale.train.schedule import (  # noqa: F401 -- re-exported: the schedule's names were here first
    BETA2,
    EMBEDDING_PARAMS,
    _optimizer,
    cooldown_lr,
    hidden_lr_scale,
    hparams,
    lr_at,
    warmup_steps,
    wsd_branches,
)

# In every training record's key: a change here that changes what a run trains retrains it. 2: a
# cooled branch decays a copy of the AdamW state (1 shared the moments with the main run).
REVISION = 2

ProgressFn = Callable[[int, int, dict], None]  # (tokens_done, tokens_total, info)
AfterStepFn = Callable[[torch.nn.Module], None]  # called with the model after every optimizer step


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    tokens: int
    steps: int
    curve: list[dict]
    seconds: float
    hparams: dict = field(default_factory=dict)  # what :func:`hparams` says this run used
    branches: list[dict] = field(default_factory=list)  # non-final cooled branches saved: tokens, fraction, path
    device: dict = field(default_factory=dict)  # the DeviceSetup it trained with (DeviceSetup.to_dict)


class TrainingDiverged(UserError):
    """The training loss (or the weights) of a run became NaN or infinite. Raised before anything of
    the run is saved, so no non-finite checkpoint is ever cached; a user error (exit 2, or the failed
    variant of a ``distill.recover`` step) whose fix is a lower learning rate."""


# Training-time validation samples as the evaluation protocol's default does (spread over every
# work); part of the training key (edgescale.backends.torch_lm), so curves scored otherwise are not reused.
EVAL_SAMPLING = ("spread", 32)


def validation_bpb(model: GPT, corpus: Corpus, context: int, max_tokens: int) -> float:
    """Bits per byte on ``max_tokens`` validation bytes in segments spread over its works.

    Scored from the model's device without autocast: a fit point measures the fp32 weights, as the
    exported model will carry them; the logits come back as float32 CPU arrays."""
    split = corpus["validation"]
    spans = eval_spans(split, max_tokens, EVAL_SAMPLING[1], EVAL_SAMPLING[0])
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        result = score(
            lambda ids: model.logits(torch.from_numpy(ids).to(device)).float().cpu().numpy(),
            split,
            context,
            context,
            max_tokens,
            spans=spans,
        )
    model.train()
    return result.bits_per_byte


def _on(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """``model`` on ``device``: itself when it is there, else a copy (a caller's model never moves)."""
    p = next(model.parameters(), None)
    return model if p is None or p.device.type == device else copy.deepcopy(model).to(device)


def _logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model.logits(ids)


@dataclass
class _Run:
    """The moving parts of one training run (mutable on purpose: it is the loop's state)."""

    model_cfg: GPTConfig
    cfg: TrainingConfig
    corpus: Corpus
    seed: int
    per_step: int
    progress: ProgressFn | None
    total_steps: int  # including decay branches, for the progress bar
    teacher: GPT | None = None
    distill: DistillConfig | None = None
    after_step: AfterStepFn | None = None
    lr_scale: float = 1.0  # hidden matrices' LR multiplier (lr_rule)
    warmup: int = 1  # warmup steps, recorded on every curve point
    label: str = ""  # the run's name in errors (its directory: the size, or the step)
    lr_field: str = "training.learning_rate"  # the setting that lowers its learning rate
    done_steps: int = 0
    t0: float = 0.0
    setup: DeviceSetup = DeviceSetup("cpu")
    compiled: Callable | None = None  # torch.compile(_logits_of), once per run: every branch reuses its graph

    def batch(self, step: int) -> torch.Tensor:
        """Built on the host from the corpus's tokens, then copied to the run's device."""
        toks = self.corpus["train"].tokens
        host = torch.from_numpy(train_batch(toks, step, self.cfg.batch_size, self.model_cfg.block_size, self.seed))
        return to_device(host, self.setup)

    def logits(self, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        if self.setup.compile and self.compiled is None:
            self.compiled = torch.compile(_logits_of, backend=self.setup.compile_backend)
        return self.compiled(model, ids) if self.compiled else model.logits(ids)

    def tick(self, loss: float, resumed_steps: int) -> None:
        self.done_steps += 1
        if self.progress:
            rate = (self.done_steps - resumed_steps) * self.per_step / max(1e-9, time.perf_counter() - self.t0)
            info = {"bpb": loss / math.log(2), "tok_s": rate}
            self.progress(self.done_steps * self.per_step, self.total_steps * self.per_step, info)


def _diverged(run: _Run, what: str, step: int, steps: int) -> TrainingDiverged:
    lr = run.cfg.learning_rate
    return TrainingDiverged(
        f"training {run.label} diverged: {what} at step {step} of {steps}; nothing of this run was cached. "
        f"Lower {run.lr_field} (now {lr:g}; try {lr / 10:g}) and rerun",
        field=run.lr_field,
    )


def _finite_loss(run: _Run, loss: float, step: int, steps: int) -> float:
    """``loss``, or :class:`TrainingDiverged` when it is NaN or infinite (an update too large)."""
    if not math.isfinite(loss):
        raise _diverged(run, f"the training loss is {loss}", step, steps)
    return loss


def _finite_weights(run: _Run, model: torch.nn.Module, step: int, steps: int) -> None:
    """Checked before every save: a non-finite weight must never reach a checkpoint or the cache."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _diverged(run, "the weights are not finite", step, steps)


def _sgd_step(run: _Run, model: GPT, opt, step: int, lr: float) -> tuple[float, float]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean objective and the
    mean cross-entropy (the same number unless distilling)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    opt.zero_grad(set_to_none=True)
    accum, total, total_ce = run.cfg.grad_accum, 0.0, 0.0
    for micro in range(accum):
        batch = run.batch(step * accum + micro)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with autocast(run.setup):  # bf16 matmuls on CUDA; on CPU a disabled autocast, fp32 as before
            logits = run.logits(model, inputs)
            teacher_logits = None
            if run.teacher is not None:
                with torch.no_grad():
                    teacher_logits = run.teacher.logits(inputs)
            d = run.distill
            loss, ce = kd_terms(logits, teacher_logits, targets, d.alpha if d else 0.0, d.temperature if d else 1.0)
        (loss / accum).backward()
        total, total_ce = total + loss.item(), total_ce + ce.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.cfg.grad_clip)
    opt.step()
    if run.after_step is not None:
        with torch.no_grad():
            run.after_step(model)
    return total / accum, total_ce / accum


def _eval_point(run: _Run, model: GPT, cooled: bool) -> dict:
    """Validation loss and how it was taken: a fit point (cooled) on ``cooled_eval_tokens``, a
    periodic point on the cheaper ``eval_tokens``, marked as outside the fit. Both read segments
    spread over the validation split's works in windows of the block size, so fit points share their windows."""
    n = run.cfg.cooled_eval_tokens if cooled else run.cfg.eval_tokens
    val = validation_bpb(model, run.corpus, run.model_cfg.block_size, n)
    return {"val_bpb": val, "cooled": cooled, "in_fit": cooled, "eval_tokens": n, "warmup_steps": run.warmup}


def _branch_path(out_dir: Path, tokens: int) -> Path:
    return out_dir / f"branch-{tokens}.safetensors"


def _save_branch(run: _Run, branch: GPT, point: dict, steps: int, out_dir: Path, key: str) -> None:
    """A non-final cooled branch, written when it is taken (a resume cannot recover it later)."""
    meta = {**spec_meta(run.model_cfg), "seed": run.seed, "tokens": point["tokens"], "steps": point["step"]}
    meta |= {"key": key, "branch_fraction": point["step"] / steps}
    save_model(branch.eval(), _branch_path(out_dir, point["tokens"]), meta)


def saved_branches(out_dir: Path, key: str, curve: list[dict], final_tokens: int) -> list[dict]:
    """The non-final cooled branches of this run (``key``) whose files exist: tokens, fraction, path.
    A branch taken before a resume whose file is gone is simply absent (never retrained)."""
    from safetensors import SafetensorError, safe_open

    out = []
    for c in curve:
        path = _branch_path(out_dir, c["tokens"])
        if not c.get("cooled") or c["tokens"] >= final_tokens or not path.is_file():
            continue
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("edgescale", "{}"))
        except (SafetensorError, json.JSONDecodeError):
            continue  # torn or foreign: not this run's branch
        if meta.get("key") == key and meta.get("tokens") == c["tokens"]:
            out.append({"tokens": c["tokens"], "fraction": meta["branch_fraction"], "path": path})
    return out


def _cooled_branch(run: _Run, model: GPT, opt, at: int, k: int, resumed: int) -> tuple[GPT, dict]:
    """Decay a copy of the stable-phase model for ``k`` steps; return it and its curve point."""
    branch = copy.deepcopy(model)
    bopt = _optimizer(branch, run.cfg, run.lr_scale, run.setup.fused_adamw)
    # a copy of the moments and step counts: load_state_dict keeps tensors that already have the right
    # dtype and device, so without it the branch's decay steps would update the main run's AdamW state
    bopt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for j in range(k):
        loss, _ = _sgd_step(run, branch, bopt, at + j, cooldown_lr(j, k, run.cfg))
        run.tick(_finite_loss(run, loss, at + j + 1, run.total_steps), resumed)
    _finite_weights(run, branch, at + k, run.total_steps)
    point = {
        "step": at + k,
        "tokens": (at + k) * run.per_step,
        "lr": cooldown_lr(k - 1, k, run.cfg),
        **_eval_point(run, branch, cooled=True),
        "cooldown_steps": k,
    }
    return branch, point


def train(
    model_cfg: GPTConfig,
    cfg: TrainingConfig,
    corpus: Corpus,
    tokens: int,
    seed: int,
    out_dir: Path,
    key: str,
    progress: ProgressFn | None = None,
    teacher: GPT | None = None,
    distill: DistillConfig | None = None,
    init: torch.nn.Module | None = None,
    after_step: AfterStepFn | None = None,
    lr_field: str = "training.learning_rate",
    cooled_branches: bool = True,
    setup: DeviceSetup | None = None,
) -> TrainResult:
    """Train a fresh ``GPT(model_cfg, seed)`` for ``tokens`` tokens; resumes from ``out_dir`` when it can.

    With a ``teacher`` the loss is :func:`edgescale.train.distill.kd_loss` (logit distillation);
    with ``init`` training continues from a copy of that model (fine-tuning) instead.
    ``after_step(model)`` runs under ``no_grad`` after every optimizer step (masked
    fine-tuning re-applies a sparsity pattern there).

    A loss or weight that becomes NaN or infinite stops the run with :class:`TrainingDiverged`
    (naming the run, the step and ``lr_field``, the setting to lower) before anything is saved.

    With ``schedule: wsd`` the run also leaves cooled checkpoints at ``cooled_fractions``
    of the budget (curve points with ``cooled: true``), the (N, D) grid a scaling fit needs.
    ``cooled_branches=False`` skips the non-final ones (about 15% of the steps at the default
    fractions) for a run outside the fit: the final model is the same, since a branch decays a
    copy and batches depend only on (seed, step); the warmup stays sized by ``cooled_fractions``.

    ``setup`` (default: :func:`~edgescale.train.device.device_setup` of ``cfg``, which refuses a
    device this machine lacks before anything trains) says where and how it runs.
    """
    setup = setup or device_setup(cfg)
    with configured(setup):
        return _train(
            model_cfg, cfg, corpus, tokens, seed, out_dir, key, progress, teacher, distill, init, after_step,
            lr_field, cooled_branches, setup,
        )  # fmt: skip


def _train(
    model_cfg, cfg, corpus, tokens, seed, out_dir, key, progress, teacher, distill, init, after_step,
    lr_field, cooled_branches, setup: DeviceSetup,
) -> TrainResult:  # fmt: skip
    """:func:`train`'s body, inside the device's process-wide settings."""
    torch.set_num_threads(thread_cap(cfg.threads))
    out_dir.mkdir(parents=True, exist_ok=True)
    per_step = cfg.batch_size * cfg.grad_accum * model_cfg.block_size
    steps = max(1, math.ceil(tokens / per_step))
    eval_every = max(1, round(cfg.eval_every_tokens / per_step))
    branches = {at: k for at, k in wsd_branches(steps, cfg).items() if cooled_branches or at + k == steps}
    main_steps = steps - branches.get(max(branches), 0) if branches else steps
    extra = sum(k for at, k in branches.items() if at + k != steps)
    # built on the host (the seeded init is the same on every device), then moved
    model = (copy.deepcopy(init) if init is not None else build_model(model_cfg, seed=seed)).to(setup.device).train()
    lr_scale = hidden_lr_scale(model_cfg, cfg)
    opt = _optimizer(model, cfg, lr_scale, setup.fused_adamw)
    start, curve, (seen_loss, seen, seen_ce) = _load_resume(model, opt, out_dir, key)
    if teacher is not None:
        teacher = _on(teacher, setup.device).eval()
    run = _Run(
        model_cfg,
        cfg,
        corpus,
        seed,
        per_step,
        progress,
        steps + extra,
        teacher,
        distill,
        after_step,
        lr_scale=lr_scale,
        warmup=warmup_steps(steps, cfg),
        label=out_dir.name,
        lr_field=lr_field,
        t0=time.perf_counter(),
        setup=setup,
    )
    run.done_steps = start + sum(k for at, k in branches.items() if at <= start and at + k != steps)
    resumed = run.done_steps
    final = model
    for step in range(start, main_steps):
        loss, ce = _sgd_step(run, model, opt, step, lr_at(step, steps, cfg))
        run.tick(_finite_loss(run, loss, step + 1, steps), resumed)
        seen_loss, seen, seen_ce = seen_loss + loss, seen + 1, seen_ce + ce
        if (step + 1) % eval_every == 0 or (step + 1 == steps and not branches):
            point = {
                "step": step + 1,
                "tokens": (step + 1) * per_step,
                "lr": lr_at(step, steps, cfg),
                "train_bpb": seen_ce / seen / math.log(2),  # cross-entropy, also for a KD run
                **_eval_point(run, model, cooled=step + 1 == steps),
                "cooldown_steps": 0,  # cosine: the schedule decays the whole run, no separate cooldown
            }
            if teacher is not None:
                point["train_objective"] = seen_loss / seen / math.log(2)  # the KD objective, in bits
            curve.append(point)
            seen_loss, seen, seen_ce = 0.0, 0, 0.0
        if step + 1 in branches and step + 1 + branches[step + 1] < steps:
            branch, point = _cooled_branch(run, model, opt, step + 1, branches[step + 1], resumed)
            _save_branch(run, branch, point, steps, out_dir, key)
            curve.append(point)
        if (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < main_steps:
            _finite_weights(run, model, step + 1, steps)
            _save_resume(model, opt, step + 1, curve, (seen_loss, seen, seen_ce), out_dir, key)
    if branches:
        final, point = _cooled_branch(run, model, opt, main_steps, steps - main_steps, resumed)
        curve.append(point)
    _finite_weights(run, final, steps, steps)
    meta = {**spec_meta(model_cfg), "seed": seed, "tokens": steps * per_step, "steps": steps, "key": key}
    ckpt = save_model(final.eval(), out_dir / "model.safetensors", meta)
    write_json(out_dir / "curve.json", curve)
    for f in ("resume.safetensors", "resume.json"):
        (out_dir / f).unlink(missing_ok=True)
    used = hparams(model_cfg, cfg, steps)
    kept = saved_branches(out_dir, key, curve, steps * per_step)
    seconds = time.perf_counter() - run.t0
    return TrainResult(ckpt, steps * per_step, steps, curve, seconds, used, kept, setup.to_dict())
