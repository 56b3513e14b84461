"""A study with ``hf_model:``: the pipeline's source, chain and loss for a Hugging Face model.

:class:`edgescale.pipeline.Pipeline` calls these where it would train, run a chain or
score a GPT: the source checkpoint replaces training (recorded as an artifact, hashed like
a trained checkpoint); a chain runs the recipe's steps with the transformers versions of
the torch-stage steps (:data:`HF_TORCH_STEPS`: same op names and configs) and optimum
as ``export.onnx``; ONNX-stage steps are the registry's own; the loss is scored in the
model's tokens and reported in bits per byte. Every unit is cached by a key that also
holds the tokenizer, the block size and the declared training tokens (the context a
step's result depends on beyond its input and config).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from edgescale import __version__
from edgescale.compress.registry import EXPORT_OP, Chain, StepContext
from edgescale.errors import UserError
from edgescale.hf.export import HFCausalLM
from edgescale.hf.source import HFSpec, accounting_hf, inspect_source, load_hf, load_hf_model, save_hf


def _torch_steps() -> dict[str, Callable]:
    from edgescale.hf.prune import prune_ffn_hf, prune_heads_hf
    from edgescale.hf.recover import recover_hf

    return {"prune.heads": prune_heads_hf, "prune.ffn": prune_ffn_hf, "distill.recover": recover_hf}


HF_TORCH_STEPS = ("prune.heads", "prune.ffn", "distill.recover")


def check_chains(chains: list[Chain], spec: HFSpec, train_tokens: int | None, study_path: Path) -> None:
    """Refuse, before any work, a recipe step a Hugging Face model cannot take."""
    from edgescale.hf.prune import check_scope, layout_of
    from edgescale.hf.recover import recovery_tokens

    for chain in chains:
        for i, step in enumerate(s for s in chain.steps if not s.inserted):
            if step.definition.takes != "torch":
                continue
            try:
                if step.op not in HF_TORCH_STEPS:
                    raise UserError(
                        f"{step.op} is not available for Hugging Face models; allowed torch-stage steps: "
                        f"{', '.join(HF_TORCH_STEPS)} (and every ONNX-stage step)",
                        field="op",
                    )
                if step.op.startswith("prune."):
                    layout_of(spec.model_type, step.op)
                    check_scope(spec.model_type, step.op.split(".")[1], step.config.scope, step.op)
                else:
                    recovery_tokens(step.config, train_tokens or 0)
            except UserError as e:
                field = f"steps.{i}.{e.field}" if e.field else f"steps.{i}"
                raise UserError(f"{e.detail} (study {study_path})", file=chain.source, field=field) from None


def hf_plans(study, study_path: Path, corpus, chains: list[Chain]) -> list:
    """The one 'size' of an hf_model study: the checkpoint, described and its corpus tokenized."""
    from edgescale.hf.tokens import tokenize_corpus
    from edgescale.pipeline import SizePlan

    h = study.hf_model
    path = Path(h.path) if Path(h.path).is_absolute() else (study_path.parent / h.path)
    spec, tok = inspect_source(path.resolve(), h.name, h.tokenizer, h.block_size)
    check_chains(chains, spec, h.train_tokens, study_path)
    model, _ = load_hf_model(spec.path)
    acct = accounting_hf(model, study.evaluation.context_length)
    spec = replace(spec, corpus=tokenize_corpus(corpus, tok, spec.vocab_size))
    return [SizePlan(h.name, spec, acct, h.train_tokens or 0, "pretrained checkpoint (not trained here)")]


def _context_hash(pipe, spec: HFSpec) -> str:
    from edgescale.rundir import key_of

    return key_of(
        "hf-context",
        tokenizer=spec.tokenizer_sha256 or spec.tokenizer,
        train=spec.corpus["train"].sha256,
        block=spec.block_size,
        train_tokens=pipe.study.hf_model.train_tokens,
    )


def source_record(pipe, plan) -> dict:
    """The checkpoint as a run artifact (what training would have produced)."""
    from edgescale.rundir import key_of

    spec: HFSpec = plan.cfg
    key = key_of("hf-source", weights=spec.weights_sha256, config=spec.config, v=__version__)
    rec = pipe.rd.cached(key)
    if rec:
        pipe.rep.reuse(f"source {plan.name}", rec["checkpoint"])
        return rec
    t0 = time.perf_counter()
    with pipe.rep.status(f"{plan.name}: loading {spec.path}"):
        model, _ = load_hf_model(spec.path)
        out = save_hf(model, pipe.rd.work_dir(key) / "model.safetensors", {"source": spec.to_dict()})
    rel, sha = pipe.rd.store(out)
    pipe.rep.done(f"source {plan.name}", f"{rel} ({spec.model_type}, tokenizer {spec.tokenizer})")
    rec = {
        "checkpoint": str(rel),
        "sha256": sha,
        "tokens": plan.tokens,
        "steps": 0,
        "curve": [],
        "seconds": round(time.perf_counter() - t0, 1),
        "teacher": None,
        "source": spec.to_dict(),
    }
    return pipe.rd.record(key, rec, {str(rel): sha})


def run_chain(pipe, plan, chain: Chain, trained: dict) -> dict:
    """Pipeline.run_chain for a Hugging Face source: the same cache keys and record."""
    feasibility = pipe.feasibility(plan, chain)
    rel, sha, kind = trained["checkpoint"], trained["sha256"], "torch"
    context = _context_hash(pipe, plan.cfg)
    steps, last_checkpoint = [], rel
    for step in chain.steps:
        key = step.key(f"{sha}:{context}", __version__)
        rec = pipe.rd.cached(key)
        if rec:
            pipe.rep.reuse(f"{plan.name}/{chain.name}: {step.op}", rec["artifact"])
        else:
            rec = _run_step(pipe, plan, step, kind, pipe.rd.root / rel, key, trained)
        rel, sha, kind = rec["artifact"], rec["sha256"], step.definition.gives
        last_checkpoint = rel if kind == "torch" else last_checkpoint
        steps.append({"op": step.op, "artifact": rel, "sha256": sha, "metrics": rec.get("metrics", {})})
    return {
        "artifact": rel,
        "sha256": sha,
        "last_op": chain.steps[-1].op,
        "steps": steps,
        "feasibility": feasibility,
        "spec": None,  # not the GPT family: the shape as it ships is counted from its last checkpoint
        **_shipped_shape(pipe.rd.root / last_checkpoint, pipe.study.measurement.decode_context),
    }


def _shipped_shape(checkpoint: Path, context: int) -> dict:
    """Parameters, KV bytes and FLOPs of the model a chain exports (after any pruning), at the
    measured decode context, and the config fields that describe its shape."""
    from dataclasses import asdict

    from edgescale.hf.source import widest_activation

    model = load_hf(checkpoint)
    config = model.config.to_dict()
    return {
        "accounting": asdict(accounting_hf(model, context)),
        "widest_activation": widest_activation(model, context),
        "hf_config": {k: config[k] for k in _SHAPE_KEYS if k in config},
    }


def _run_step(pipe, plan, step, kind: str, src: Path, key: str, trained: dict) -> dict:
    spec: HFSpec = plan.cfg
    work = pipe.rd.work_dir(key)
    block = spec.block_size
    parent = HFCausalLM(load_hf(pipe.rd.root / trained["checkpoint"]), block) if kind == "torch" else None
    ctx = StepContext(
        work_dir=work,
        seed=pipe.study.seed,
        log=pipe.rep.info,
        parent=parent,
        parent_tokens=pipe.study.hf_model.train_tokens or 0,
        corpus=spec.corpus,
    )
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(pipe.study.training.threads)  # as training does: torch's pool for pruning and recovery
    try:
        with pipe.rep.status(f"{plan.name}: {step.op}"):
            out = _apply(step, kind, src, ctx, block)
    finally:
        torch.set_num_threads(threads)
    rel, sha = pipe.rd.store(Path(out))
    pipe.rep.done(f"{plan.name}: {step.op}", f"{rel} in {time.perf_counter() - t0:.1f}s")
    rec = {"op": step.op, "artifact": str(rel), "sha256": sha, "metrics": ctx.metrics}
    return pipe.rd.record(key, rec, {str(rel): sha})


def _apply(step, kind: str, src: Path, ctx: StepContext, block: int) -> Path:
    """One step on a file: a transformers checkpoint (torch stage) or an ONNX file."""
    if kind == "onnx":
        return step.definition.fn(src, step.config, ctx)
    model = load_hf(src)
    if step.op == EXPORT_OP:
        from edgescale.hf.export import export_and_verify

        cfg = step.config
        check = export_and_verify(
            model, ctx.work_dir / "model.onnx", block, cfg.opset, cfg.atol, cfg.verify_tokens, ctx.seed
        )
        ctx.metrics.update({**check, "exporter": "optimum text-generation-with-past"})
        ctx.log(
            f"export.onnx (optimum): max |Δlogit| {check['max_abs_logit_diff']:.2e}, "
            f"{check['greedy_tokens_identical']} greedy tokens identical to torch"
        )
        return ctx.work_dir / "model.onnx"
    out = _torch_steps()[step.op](HFCausalLM(model, block), step.config, ctx)
    config = out.hf.config.to_dict()
    ctx.metrics["config"] = {k: config[k] for k in _SHAPE_KEYS if k in config}
    return save_hf(out.hf, ctx.work_dir / "model.safetensors", {"op": step.op})


_SHAPE_KEYS = (
    "n_layer",
    "n_head",
    "n_inner",
    "pruned_heads",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
)


def loss(pipe, rel: str, sha: str, split: str, strict: bool) -> dict[str, Any]:
    """Pipeline.loss for a Hugging Face source: its own tokens, reported in bits per byte."""
    from edgescale.guard import check_causal_onnx
    from edgescale.hf.tokens import hf_onnx_loss
    from edgescale.rundir import key_of

    spec: HFSpec = pipe.plans[0].cfg
    tc = spec.corpus
    e = pipe.study.evaluation
    key = key_of("loss", onnx=sha, split=tc[split].sha256, protocol=e.model_dump(), v=__version__)
    rec = pipe.rd.cached(key)
    if rec:
        return rec
    path = pipe.rd.root / rel
    influence = check_causal_onnx(path, atol=1e-4 if strict else 2e-2, length=min(24, spec.block_size))
    res = hf_onnx_loss(path, tc, split, e.context_length, e.stride, e.max_tokens, e.batch_size)
    extra = {"batch_size": e.batch_size, "future_influence": influence, "tokenizer": tc.tokenizer}
    return pipe.rd.record(key, {**res.to_dict(), **extra})
