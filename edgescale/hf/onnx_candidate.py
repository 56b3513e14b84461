"""An ONNX causal-LM file as one candidate of a study's ``models:`` (``{onnx: FILE, tokenizer: ...}``).

The file is copied into the run as its source artifact and takes ONNX-stage steps only
(``quantize.*``, ``optimize.*``): a recipe with a torch-stage step (pruning, recovery) is
refused before any work, naming the candidate and the step. ``export.onnx`` is the file as
given. Its counts come from the graph itself: parameters from the initializers (the tables
read by a ``Gather`` are the embedding), the KV cache from the ``past_key_values`` inputs'
shapes, FLOPs per token as 2 per weight plus attention over the context. The loss is
scored in the candidate's own tokens (the tokenizer beside the file, a folder the study
names, or bytes) on the same text bytes as every other candidate.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale import __version__
from edgescale.compress.registry import EXPORT_OP, Chain
from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256
from edgescale.hf.backend import pretrained_record, score_in_tokens
from edgescale.hf.tokens import check_causal_lm, resolve_tokenizer, tokenize_corpus
from edgescale.models.backend import Shipped, SizePlan, StepFn
from edgescale.models.shape import ModelAccounting
from edgescale.resources import metered
from edgescale.rundir import key_of


@dataclass(frozen=True)
class OnnxSpec:
    """What a plan carries for an ONNX candidate (``SizePlan.cfg``)."""

    path: Path
    sha256: str
    vocab_size: int
    block_size: int
    tokenizer: str

    def to_dict(self) -> dict:
        return {
            "onnx": str(self.path),
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer,
        }


def graph_accounting(path: Path, context: int) -> ModelAccounting:
    """Parameter, KV-cache and FLOP counts of an ONNX causal LM, read from its graph (no weights loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    sizes = {t.name: int(np.prod(t.dims)) for t in g.initializer if len(t.dims) >= 2}
    for node in g.node:  # 4-bit weights: MatMulNBits holds K x N logical weights in packed blocks
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: a.i for a in node.attribute}
            sizes[node.input[1]] = attrs.get("K", 0) * attrs.get("N", 0)
    gathered = {n.input[0] for n in g.node if n.op_type == "Gather"}
    emb = sum(v for k, v in sizes.items() if k in gathered)
    total = sum(sizes.values())
    kv = [i for i in g.input if i.name.startswith("past_key_values.")]
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in kv]
    kv_elems = sum(d[1] * d[3] for d in dims if len(d) == 4)  # heads x head_dim, keys and values
    attention = 2 * context * kv_elems  # per layer, K and V each once: 2 FLOPs per multiply-accumulate
    return ModelAccounting(
        params_total=total,
        params_embedding=emb,
        params_non_embedding=total - emb,
        flops_per_token_kaplan=float(2 * (total - emb) + attention),
        flops_per_token_exact=float(2 * (total - emb) + attention),
        decode_context=context,
        weight_bytes_fp32=4 * total,
        kv_bytes_per_token_fp32=4 * kv_elems,
    )


def _onnx_stage_only(chains: list[Chain], name: str, study_path: Path, field: str) -> None:
    for chain in chains:
        torch_steps = [s.op for s in chain.steps if s.definition.takes == "torch" and s.op != EXPORT_OP]
        if torch_steps:
            raise UserError(
                f"candidate {name} is an ONNX file, which takes ONNX-stage steps only; recipe {chain.name} has "
                f"{', '.join(torch_steps)} (needs the model in torch): drop the recipe or give the candidate as a "
                "Hugging Face folder",
                file=study_path,
                field=field,
            )


def _link_or_copy(src: Path, dst: Path) -> Path:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)
    return dst


def _as_given(model: Path, cfg, ctx) -> Path:
    """``export.onnx`` of a file that is already ONNX: the file itself."""
    return _link_or_copy(model, ctx.work_dir / "model.onnx")


class OnnxCandidateBackend:
    name = "onnx"
    takes = "onnx"

    def __init__(self, study, study_path: Path, corpus, chains: list[Chain], entry, field: str) -> None:
        """Check the file, its tokenizer and every recipe; count the graph; read the corpus in its tokens."""
        raw = Path(entry.onnx)
        path = (raw if raw.is_absolute() else study_path.parent / raw).resolve()
        self.study, self.entry, self.label = study, entry, entry.label
        lm = check_causal_lm(path)
        vocab = lm.session.get_outputs()[0].shape[-1]
        if not isinstance(vocab, int):
            raise UserError("the logits output has no fixed vocabulary size", file=path, field=field)
        choice = None if entry.tokenizer == "auto" else entry.tokenizer
        if choice not in (None, "bytes") and not Path(choice).is_absolute():
            choice = str(study_path.parent / choice)
        tok, described = resolve_tokenizer(path, choice)
        if tok is None and vocab < 256:
            raise UserError(f"byte ids need >= 256 logits; this model has {vocab}: give a tokenizer", file=path)
        del lm  # the session holds the weights; scoring opens its own
        self.corpus = tokenize_corpus(corpus, tok, vocab)
        self.calibration = self.corpus["train"].tokens.astype("int64")  # for steps that calibrate
        self.tokenizer = described if tok is None else f"{type(tok).__name__} sha256:{_tokenizer_hash(tok)}"
        _onnx_stage_only(chains, self.label, study_path, field)
        self.spec = OnnxSpec(path, artifact_sha256(path), vocab, entry.block_size, self.tokenizer)
        self._acct = graph_accounting(path, study.evaluation.context_length)

    def _shape(self) -> dict:
        return {"n_layer": None, "n_head": None, "n_embd": None, "model": f"onnx:{self.spec.path.name}"}

    def plans(self, tokens_for: Callable[[int], tuple[int, str]]) -> list[SizePlan]:
        why = "pretrained ONNX file (not trained here)"
        return [SizePlan(self.label, self.spec, self._acct, self.entry.train_tokens or 0, why, shape=self._shape())]

    def plan(self, name: str, spec, tokens: int, capped_by: str) -> SizePlan:
        raise NotImplementedError("an ONNX candidate has no scratch twin (pruned_spec is always None)")

    def source(self, rd, rep, plan: SizePlan, teacher: dict | None = None) -> dict:
        """The file as a run artifact, hashed like everything else."""
        key = key_of("onnx-source", sha=self.spec.sha256, v=__version__)
        rec = rd.cached(key)
        if rec:
            rep.reuse(f"source {plan.name}", rec["checkpoint"])
            return rec
        work = rd.work_dir(key)
        with metered() as use, rep.status(f"{plan.name}: copying {self.spec.path}"):
            copy = _link_or_copy(self.spec.path, work / "model.onnx")
        rel, sha = rd.store(copy)
        rep.done(f"source {plan.name}", f"{rel} (ONNX file, tokenizer {self.tokenizer.split(' ')[0]})")
        return rd.record(key, pretrained_record(rel, sha, plan, use, self.spec.to_dict()), {str(rel): sha})

    def load(self, path: Path):
        raise UserError("an ONNX file has no torch model to load", file=path)

    def save(self, model, path: Path, meta: dict) -> Path:
        raise UserError("an ONNX file has no torch model to save", file=path)

    def implementation(self, step) -> StepFn:
        if step.op == EXPORT_OP:
            return _as_given
        return step.definition.implementation()

    def step_input(self, sha256: str) -> str:
        # calibrating steps read the train split in this candidate's tokens
        return f"{sha256}:{key_of('onnx-context', tokenizer=self.tokenizer, train=self.corpus['train'].sha256)}"

    @contextlib.contextmanager
    def running_step(self) -> Iterator[None]:
        yield

    def account(self, checkpoint: Path, context: int) -> Shipped:
        return Shipped(graph_accounting(checkpoint, context), None, self._shape())

    def pruned_spec(self, plan: SizePlan, record: dict) -> None:
        return None

    def score(self, path: Path, split: str, protocol, strict: bool) -> dict:
        """Scored in the candidate's own tokens, reported in bits per byte."""
        return score_in_tokens(path, self.corpus, split, protocol, strict, self.study.seed, self.spec.block_size)


def _tokenizer_hash(tok) -> str:
    """A content hash of a tokenizer: its full serialisation (vocabulary, merges, normaliser)."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()
