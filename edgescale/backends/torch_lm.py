"""What the two backends edgescale trains share (its GPT family and a user's module).

The source of a chain is a model trained here (or distilled from a trained teacher),
cached under a key of everything training depends on; checkpoints are edgescale's own
safetensors files (:mod:`edgescale.models.checkpoint`); the loss is scored on the byte
corpus through onnxruntime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgescale import __version__
from edgescale.bench.leak import causal_leak
from edgescale.bench.loss import onnx_loss
from edgescale.config import Study
from edgescale.data.corpus import Corpus, eval_spans
from edgescale.data.tokenized import tokenizer_sha256
from edgescale.guard import check_onnx_graph, check_torch_model
from edgescale.models.backend import SizePlan
from edgescale.models.checkpoint import load_model, save_model, spec_meta, spec_of
from edgescale.resources import metered
from edgescale.rundir import key_of
from edgescale.train.device import DeviceSetup, device_setup
from edgescale.train.distill import DistillConfig
from edgescale.train.trainer import EVAL_SAMPLING, train
from edgescale.train.trainer import REVISION as TRAINER_REVISION


def train_key(
    study: Study, corpus: Corpus, plan: SizePlan, seed: int, teacher: dict | None, branches: bool, setup: DeviceSetup
) -> str:
    """The cache key of one training run: everything its checkpoint depends on. The device enters
    only off its CPU defaults (``DeviceSetup.key``), resolved (never "auto"), so a CPU run keeps
    the key it had before ``training.device`` existed and a GPU run, whose losses differ, gets its own."""
    kd = study.distillation if teacher else None
    return key_of(
        "train",
        model=plan.cfg.to_dict(),
        # seeds: how many replicates, not this run's input; device, compile: in setup.key() below
        training=study.training.model_dump(exclude={"seeds", "device", "compile"}),
        batch=plan.batch_size,
        tokens=plan.tokens,
        seed=seed,
        train_sha=corpus["train"].sha256,
        val_sha=corpus["validation"].sha256,
        val_sampling=EVAL_SAMPLING,  # how the curve's validation points were taken
        teacher=teacher["sha256"] if teacher else None,
        distill=kd.model_dump(include={"alpha", "temperature"}) if kd else None,
        v=__version__,
        trainer=TRAINER_REVISION,
        **({} if branches else {"cooled_branches": False}),
        **setup.key(),
    )


def _stored(rd, path: Path) -> dict:
    rel, sha = rd.store(path)
    return {"checkpoint": str(rel), "sha256": sha}


class TorchBackend:
    """Base of :class:`~edgescale.backends.gpt.GPTBackend` and :class:`~edgescale.backends.custom.CustomBackend`."""

    takes = "torch"
    calibration = None

    def __init__(self, study: Study, corpus: Corpus) -> None:
        self.study, self.corpus = study, corpus
        # the loss's tokens: byte ids, or a tokenizer folder's (named with its tokenizer.json's hash)
        tok = corpus.tokenizer if corpus is not None else "bytes"
        self.tokenizer = tok if tok == "bytes" else f"{tok} sha256:{tokenizer_sha256(Path(tok))}"

    def source(self, rd, rep, plan: SizePlan, teacher: dict | None = None, seed: int | None = None) -> dict:
        """Train one rung (or, with ``teacher``, distil it from that trained rung); ``seed`` other
        than the study's is a replicate run, trained in its own directory under its own key."""
        s = self.study
        seed = s.seed if seed is None else seed
        kd = s.distillation if teacher else None
        # a distilled student and an equal-compute twin train without the non-final cooled branches:
        # nothing reads them (the ladder's runs feed the fit and the grid, a scratch twin its curve)
        take_branches = teacher is None and plan.cooled_branches
        setup = device_setup(s.training)  # a device this machine lacks: a UserError before anything trains
        key = train_key(s, self.corpus, plan, seed, teacher, take_branches, setup)
        rec = rd.cached(key)
        if rec:
            rep.reuse(f"train {plan.name}", rec["checkpoint"])
            return rec
        out = rd.path("train", plan.name if seed == s.seed else f"{plan.name}-seed{seed}")
        teacher_model = load_model(rd.inside(teacher["checkpoint"]))[0] if teacher else None
        what = f"train {plan.name} ({plan.acct.params_non_embedding:,} N)" + (f" ← {plan.teacher}" if kd else "")
        what += f" seed {seed}" if seed != s.seed else ""
        with metered() as use, rep.task(what, plan.tokens) as tick:
            distill = DistillConfig(alpha=kd.alpha, temperature=kd.temperature) if kd else None
            tc = s.training.model_copy(update={"batch_size": plan.batch_size}) if plan.batch_size else s.training
            res = train(
                plan.cfg,
                tc,
                self.corpus,
                plan.tokens,
                seed,
                out,
                key,
                tick,
                teacher_model,
                distill,
                cooled_branches=take_branches,
                setup=setup,
            )
        model, _ = load_model(res.checkpoint)
        check_torch_model(model, f"{plan.name} ({res.checkpoint})")
        rel, sha = rd.store(res.checkpoint)
        # the non-final cooled branches, content-keyed too; not verified with the record (a lost one
        # costs its degradation-grid point, never a retrain of the size)
        branches = [{"tokens": b["tokens"], "fraction": b["fraction"], **_stored(rd, b["path"])} for b in res.branches]
        rec = {
            "checkpoint": str(rel),
            "sha256": sha,
            "tokens": res.tokens,
            "steps": res.steps,
            "curve": res.curve,
            "seconds": res.seconds,
            "resources": use.to_dict(),
            "teacher": plan.teacher,
            "seed": seed,
            "hparams": res.hparams,
            "branches": branches,
        }
        return rd.record(key, rec, {str(rel): sha})

    def load(self, path: Path):
        return load_model(path)[0]

    def save(self, model, path: Path, meta: dict) -> Path:
        return save_model(model, path, {**spec_meta(spec_of(model)), **meta})

    def step_input(self, sha256: str) -> str:
        return sha256  # a trained model's hash already covers its corpus and shape

    @contextlib.contextmanager
    def running_step(self) -> Iterator[None]:
        yield  # torch's thread pool stays as training left it

    def score(self, path: Path, split: str, protocol, strict: bool) -> dict:
        # Strict for the exported float graph; ONNX-stage steps (quantization) may move
        # logits slightly through per-call activation scales (see edgescale.guard).
        length = min(24, self.study.block_size)
        influence = check_onnx_graph(path, strict=strict, length=length)
        e = protocol
        # byte tokens: the segments in bytes are the spans in tokens
        spans = eval_spans(self.corpus[split], e.max_bytes, e.segments, e.sampling)
        res = onnx_loss(path, self.corpus[split], e.context_length, e.stride, e.max_bytes, e.batch_size, spans)
        # a graph with dynamic activation scales: what later tokens do to its loss (edgescale.bench.leak)
        scoring = (e.context_length, e.stride, e.max_bytes, e.batch_size, self.study.seed)
        sp = self.corpus[split]
        token_bytes = None if sp.byte_ends is None else np.diff(sp.byte_ends, prepend=0)  # a tokenizer's tokens
        leak = None if strict else causal_leak(path, sp.tokens, *scoring, token_bytes=token_bytes)
        rec = {**res.to_dict(), "batch_size": e.batch_size, "future_influence": influence, "causal_leak": leak}
        return rec | {"windows": res.windows}  # per-window NLL: the pipeline saves it beside the record
