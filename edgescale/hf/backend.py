"""The backend of a study with ``hf_model:``: a Hugging Face causal LM from a local folder.

Nothing is trained: the checkpoint is copied into the run as its source artifact (hashed
like a trained checkpoint). The torch-stage steps are the transformers versions of the
registry's ops (same names and configs, registered with ``implement(op, backend="hf")``
in :mod:`edgescale.hf.prune`, :mod:`edgescale.hf.recover` and here for optimum's
exporter); ONNX-stage steps are the registry's own. The loss is scored in the model's
tokens and reported in bits per byte. A step's cache key also holds the tokenizer, the
block size and the declared training tokens: the context a step's result depends on
beyond its input and config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import edgescale.export.genai_builder  # noqa: F401  (registers export.genai for hf: onnxruntime-genai's builder)
import edgescale.hf.prune  # noqa: F401  (registers prune.heads and prune.ffn for hf)
import edgescale.hf.recover  # noqa: F401  (registers distill.recover for hf)
from edgescale import __version__
from edgescale.bench.leak import causal_leak
from edgescale.compress.registry import EXPORT_OP, Chain, StepContext, implement
from edgescale.data.corpus import eval_spans
from edgescale.errors import UserError
from edgescale.export.steps import ExportConfig
from edgescale.guard import check_onnx_graph
from edgescale.hf.export import HFCausalLM, export_and_verify
from edgescale.hf.prune import check_scope, layout_of
from edgescale.hf.recover import recovery_tokens
from edgescale.hf.source import (
    HFSpec,
    accounting_hf,
    empty_model,
    inspect_source,
    load_hf,
    load_hf_model,
    save_hf,
    widest_activation,
)
from edgescale.hf.tokens import hf_onnx_loss, tokenize_corpus
from edgescale.models.backend import Shipped, SizePlan, StepFn
from edgescale.resources import metered, thread_cap
from edgescale.rundir import key_of

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


@implement(EXPORT_OP, backend="hf")
def export_hf_step(model: HFCausalLM, cfg: ExportConfig, ctx: StepContext) -> Path:
    """``export.onnx`` with optimum's ``text-generation-with-past`` exporter, checked against torch."""
    out = ctx.work_dir / "model.onnx"
    check = export_and_verify(
        model.hf, out, model.spec.block_size, cfg.opset, cfg.atol, cfg.verify_tokens, ctx.seed, release=True
    )
    ctx.metrics.update({**check, "exporter": "optimum text-generation-with-past"})
    ctx.log(
        f"export.onnx (optimum): max |Δlogit| {check['max_abs_logit_diff']:.2e}, "
        f"{check['greedy_tokens_identical']} greedy tokens identical to torch"
    )
    return out


def shape_config(hf_model) -> dict:
    """The config fields that describe a transformers model's shape (after any pruning)."""
    config = hf_model.config.to_dict()
    return {k: config[k] for k in _SHAPE_KEYS if k in config}


def check_chains(chains: list[Chain], spec: HFSpec, train_tokens: int | None, study_path: Path) -> None:
    """Refuse, before any work, a recipe step a Hugging Face model cannot take."""
    for chain in chains:
        for i, step in enumerate(s for s in chain.steps if not s.inserted):
            if step.definition.takes != "torch":
                continue
            try:
                step.definition.implementation(HFBackend.name)
                if step.op.startswith("prune."):
                    layout_of(spec.model_type, step.op)
                    check_scope(spec.model_type, step.op.split(".")[1], step.config.scope, step.op)
                elif step.op == "distill.recover":
                    recovery_tokens(step.config, train_tokens or 0)
            except UserError as e:
                field = f"steps.{i}.{e.field}" if e.field else f"steps.{i}"
                raise UserError(f"{e.detail} (study {study_path})", file=chain.source, field=field) from None


def pretrained_record(rel: Path, sha: str, plan: SizePlan, use, source: dict) -> dict:
    """The record of a candidate copied in, not trained (what a training record holds, empty)."""
    return {
        "checkpoint": str(rel),
        "sha256": sha,
        "tokens": plan.tokens,
        "steps": 0,
        "curve": [],
        "seconds": round(use.wall_s, 1),
        "resources": use.to_dict(),
        "teacher": None,
        "source": source,
    }


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face candidate as the study gives it (``hf_model:``, or an ``hf:`` entry of ``models:``)."""

    path: Path  # resolved against the study file's folder
    name: str
    tokenizer: str  # auto | bytes
    block_size: int
    train_tokens: int | None

    @classmethod
    def of(cls, entry, study_path: Path) -> HFSource:
        """From ``hf_model`` (:class:`edgescale.config.HFModelConfig`) or a ``models:`` entry
        (:class:`edgescale.config.CandidateConfig`)."""
        raw = Path(getattr(entry, "hf", None) or entry.path)
        path = raw if raw.is_absolute() else study_path.parent / raw
        name = entry.label if hasattr(entry, "label") else entry.name
        return cls(path.resolve(), name, entry.tokenizer, entry.block_size, entry.train_tokens)


class HFBackend:
    name = "hf"
    takes = "torch"
    calibration = None

    def __init__(self, study, study_path: Path, corpus, chains: list[Chain], src: HFSource | None = None) -> None:
        """Check the folder and every recipe, count the model, and read the corpus in its tokens.
        ``src``: the candidate (default: the study's ``hf_model``)."""
        h = self.src = src or HFSource.of(study.hf_model, study_path)
        spec, tok = inspect_source(h.path, h.name, h.tokenizer, h.block_size)
        check_chains(chains, spec, h.train_tokens, study_path)
        # counted on an empty (meta-device) model: the shapes without loading the weights
        self._acct = accounting_hf(empty_model(spec.config), study.evaluation.context_length)
        self.study = study
        self.spec = replace(spec, corpus=tokenize_corpus(corpus, tok, spec.vocab_size))
        self.corpus = self.spec.corpus
        # the loss's tokens, as results.json's protocol records them: by content, not by path
        self.tokenizer = (
            spec.tokenizer if spec.tokenizer == "bytes" else f"{spec.tokenizer} sha256:{spec.tokenizer_sha256}"
        )

    def _shape(self) -> dict:
        return {"n_layer": None, "n_head": None, "n_embd": None, "model": f"huggingface:{self.spec.model_type}"}

    def plans(self, tokens_for: Callable[[int], tuple[int, str]]) -> list[SizePlan]:
        """The one 'size': the checkpoint, with the training tokens the study declares for it."""
        h = self.src
        why = "pretrained checkpoint (not trained here)"
        return [SizePlan(h.name, self.spec, self._acct, h.train_tokens or 0, why, shape=self._shape())]

    def plan(self, name: str, spec, tokens: int, capped_by: str) -> SizePlan:
        raise NotImplementedError("a Hugging Face model has no scratch twin (pruned_spec is always None)")

    def source(self, rd, rep, plan: SizePlan, teacher: dict | None = None) -> dict:
        """The checkpoint as a run artifact (what training would have produced)."""
        spec = self.spec
        key = key_of("hf-source", weights=spec.weights_sha256, config=spec.config, v=__version__)
        rec = rd.cached(key)
        if rec:
            rep.reuse(f"source {plan.name}", rec["checkpoint"])
            return rec
        with metered() as use, rep.status(f"{plan.name}: loading {spec.path}"):
            model, _ = load_hf_model(spec.path)
            out = save_hf(model, rd.work_dir(key) / "model.safetensors", {"source": spec.to_dict()})
        rel, sha = rd.store(out)
        rep.done(f"source {plan.name}", f"{rel} ({spec.model_type}, tokenizer {spec.tokenizer})")
        return rd.record(key, pretrained_record(rel, sha, plan, use, spec.to_dict()), {str(rel): sha})

    def load(self, path: Path) -> HFCausalLM:
        return HFCausalLM(load_hf(path), self.spec.block_size)

    def save(self, model: HFCausalLM, path: Path, meta: dict) -> Path:
        return save_hf(model.hf, path, meta)

    def implementation(self, step) -> StepFn:
        fn = step.definition.implementation(self.name)
        if step.definition.takes == "onnx" or step.definition.gives != "torch":
            return fn

        def with_config(model: HFCausalLM, cfg, ctx: StepContext) -> HFCausalLM:
            out = fn(model, cfg, ctx)
            ctx.metrics["config"] = shape_config(out.hf)  # the shape a pruned config now holds
            return out

        return with_config

    def step_input(self, sha256: str) -> str:
        spec = self.spec
        context = key_of(
            "hf-context",
            tokenizer=spec.tokenizer_sha256 or spec.tokenizer,
            train=spec.corpus["train"].sha256,
            block=spec.block_size,
            train_tokens=self.src.train_tokens,
        )
        return f"{sha256}:{context}"

    @contextlib.contextmanager
    def running_step(self) -> Iterator[None]:
        threads = torch.get_num_threads()
        torch.set_num_threads(
            thread_cap(self.study.training.threads)
        )  # as training does: torch's pool for pruning and recovery
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def account(self, checkpoint: Path, context: int) -> Shipped:
        """Parameters, KV bytes and FLOPs of the model a chain exports, at ``context``, and its config's shape."""
        model = load_hf(checkpoint)
        shape = self._shape() | {"config": shape_config(model)}
        return Shipped(accounting_hf(model, context), widest_activation(model, context), shape)

    def pruned_spec(self, plan: SizePlan, record: dict) -> None:
        return None

    def score(self, path: Path, split: str, protocol, strict: bool) -> dict:
        """Scored in the model's own tokens, reported in bits per byte."""
        return score_in_tokens(path, self.corpus, split, protocol, strict, self.study.seed, self.spec.block_size)


def score_in_tokens(path: Path, tc, split: str, protocol, strict: bool, seed: int, block_size: int) -> dict:
    """A loss record of an ONNX file scored in its own tokens (``tc``, a TokenizedCorpus), in bits
    per byte over the study's byte cap, with the causality check and, for a graph with dynamic
    activation scales, what later tokens do to its loss (:mod:`edgescale.bench.leak`)."""
    e = protocol
    influence = check_onnx_graph(path, strict=strict, length=min(24, block_size))
    cap = tc.targets_within(split, e.max_bytes)  # the leak check's span: the first bytes
    spans = eval_spans(tc[split], e.max_bytes, e.segments, e.sampling, tc.byte_ends[split])  # every candidate's bytes
    res = hf_onnx_loss(path, tc, split, e.context_length, e.stride, cap, e.batch_size, spans)
    token_bytes = np.diff(tc.byte_ends[split], prepend=0)
    scoring = (e.context_length, e.stride, cap, e.batch_size, seed)
    leak = None if strict else causal_leak(path, tc[split].tokens, *scoring, token_bytes=token_bytes)
    rec = {**res.to_dict(), "batch_size": e.batch_size, "future_influence": influence, "causal_leak": leak}
    return rec | {"windows": res.windows}  # per-window NLL: the pipeline saves it beside the record
