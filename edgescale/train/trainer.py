"""Training loop: AdamW, linear warmup then cosine decay, clipping, periodic validation,
safetensors checkpoints and exact resume.

Batches depend only on (seed, step) and the resume checkpoint holds the model and
AdamW state, so a run interrupted and resumed follows the same loss curve as an
uninterrupted one (to float tolerance).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgescale.atomic import atomic_path, write_json
from edgescale.bench.loss import score
from edgescale.config import TrainingConfig
from edgescale.data.corpus import Corpus, train_batch
from edgescale.models.gpt import GPT, GPTConfig

ProgressFn = Callable[[int, int, dict], None]  # (tokens_done, tokens_total, info)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    tokens: int
    steps: int
    curve: list[dict]
    seconds: float


def lr_at(step: int, steps: int, cfg: TrainingConfig) -> float:
    warmup = max(1, int(cfg.warmup_fraction * steps))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    floor = cfg.learning_rate * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.learning_rate - floor) * (1 + math.cos(math.pi * progress))


def _optimizer(model: GPT, cfg: TrainingConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=False)


def validation_bpb(model: GPT, corpus: Corpus, context: int, max_tokens: int) -> float:
    model.eval()
    with torch.no_grad():
        result = score(
            lambda ids: model.logits(torch.from_numpy(ids)).numpy(), corpus["validation"], context, context, max_tokens
        )
    model.train()
    return result.bits_per_byte


def _weights(model: GPT) -> dict[str, torch.Tensor]:
    """State dict without the tied LM head (safetensors refuses shared storage)."""
    tied = model.cfg.tie_embeddings
    return {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}


def save_model(model: GPT, path: Path, meta: dict) -> Path:
    tensors = _weights(model)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"edgescale": json.dumps(meta, sort_keys=True)})
    return path


def load_model(path: Path) -> tuple[GPT, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["edgescale"])
    model = GPT(GPTConfig(**meta["model"]))
    state = load_file(str(path))
    if model.cfg.tie_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state)
    return model.eval(), meta


def _save_resume(model: GPT, opt: torch.optim.Optimizer, step: int, curve: list, out: Path, key: str) -> None:
    tensors = {f"model.{k}": v for k, v in _weights(model).items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{k}"] = v.detach().clone().reshape(v.shape)
    with atomic_path(out / "resume.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(out / "resume.json", {"key": key, "step": step, "curve": curve})


def _load_resume(model: GPT, opt: torch.optim.Optimizer, out: Path, key: str) -> tuple[int, list]:
    state_file, meta_file = out / "resume.safetensors", out / "resume.json"
    if not (state_file.exists() and meta_file.exists()):
        return 0, []
    meta = json.loads(meta_file.read_text())
    if meta.get("key") != key:
        return 0, []
    tensors = load_file(str(state_file))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    for name, p in model.named_parameters():
        prefix = f"opt.{name}."
        st = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if st:
            opt.state[p] = st
    return int(meta["step"]), list(meta["curve"])


def train(
    model_cfg: GPTConfig,
    cfg: TrainingConfig,
    corpus: Corpus,
    tokens: int,
    seed: int,
    out_dir: Path,
    key: str,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a fresh ``GPT(model_cfg, seed)`` for ``tokens`` tokens; resumes from ``out_dir`` when it can."""
    torch.set_num_threads(cfg.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    block = model_cfg.block_size
    per_step = cfg.batch_size * block
    steps = max(1, math.ceil(tokens / per_step))
    eval_every = max(1, round(cfg.eval_every_tokens / per_step))
    model = GPT(model_cfg, seed=seed).train()
    opt = _optimizer(model, cfg)
    start, curve = _load_resume(model, opt, out_dir, key)
    train_tokens = corpus["train"].tokens
    t0, seen_loss, seen = time.perf_counter(), 0.0, 0
    for step in range(start, steps):
        lr = lr_at(step, steps, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = torch.from_numpy(train_batch(train_tokens, step, cfg.batch_size, block, seed))
        logits = model.logits(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        seen_loss, seen = seen_loss + loss.item(), seen + 1
        done = (step + 1) * per_step
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append(
                {
                    "step": step + 1,
                    "tokens": done,
                    "lr": lr,
                    "train_bpb": seen_loss / seen / math.log(2),
                    "val_bpb": validation_bpb(model, corpus, block, cfg.eval_tokens),
                }
            )
            seen_loss, seen = 0.0, 0
        if (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < steps:
            _save_resume(model, opt, step + 1, curve, out_dir, key)
        if progress:
            elapsed = time.perf_counter() - t0
            progress(
                done,
                steps * per_step,
                {"bpb": loss.item() / math.log(2), "tok_s": (step + 1 - start) * per_step / elapsed},
            )
    meta = {"model": model_cfg.to_dict(), "seed": seed, "tokens": steps * per_step, "steps": steps, "key": key}
    ckpt = save_model(model.eval(), out_dir / "model.safetensors", meta)
    write_json(out_dir / "curve.json", curve)
    for f in ("resume.safetensors", "resume.json"):
        (out_dir / f).unlink(missing_ok=True)
    return TrainResult(ckpt, steps * per_step, steps, curve, time.perf_counter() - t0)
