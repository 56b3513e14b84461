"""A user's own ONNX causal LM: measure it (``edgescale bench``) and compress it (``edgescale quantize``).

The file must have the causal-LM signature edgescale and optimum share (``input_ids`` →
``logits``, with ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.*`` /
``present.{i}.*`` for a KV cache); :class:`edgescale.bench.ort_model.OrtCausalLM`
detects it and refuses anything else with one message naming the file. The loss is
measured on a study's validation split (the built-in default study unless one is given),
in the model's own tokens when a tokenizer is given (``--tokenizer DIR``, or found beside
the file, as optimum's exports leave it), else in bytes; either way in bits per byte.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from edgescale.atomic import atomic_path
from edgescale.bench.loss import score
from edgescale.bench.measure import MeasureSpec, measure_variants
from edgescale.chain import ChainStart, ScratchStore, run_chain
from edgescale.compress.recipe import load_recipe
from edgescale.compress.registry import EXPORT_OP
from edgescale.compress.rules import needs_calibration
from edgescale.data.corpus import eval_spans, load_corpus
from edgescale.errors import UserError
from edgescale.export.canonical import file_sha256
from edgescale.hf.tokens import (
    TokenizedCorpus,
    check_causal_lm,
    resolve_tokenizer,
    to_bits_per_byte,
    tokenize_split,
)
from edgescale.inputs import load_study
from edgescale.progress import Reporter


def _vocab(lm) -> int:
    v = lm.session.get_outputs()[0].shape[-1]
    if not isinstance(v, int):
        raise UserError("the logits output has no fixed vocabulary size (last dimension)", file=lm.path)
    return v


def bench(
    model: Path,
    study: Path | None = None,
    tokenizer: str | None = None,
    *,
    prompt_len: int = 64,
    decode_context: int = 128,
    repeats: int = 30,
    threads: int = 2,
    max_tokens: int | None = None,
    loss: bool = True,
    max_context: int | None = None,
) -> dict:
    """Prefill and decode latency on this host and held-out loss (bits per byte) of an ONNX causal LM."""
    lm = check_causal_lm(model)
    vocab = _vocab(lm)
    spec = MeasureSpec(prompt_len=prompt_len, decode_context=decode_context, repeats=repeats, threads=threads)
    report = measure_variants({"model": Path(model)}, spec)
    v = report.variants["model"]
    out = {
        "model": str(model),
        "signature": {
            "n_layer": lm.sig.n_layer,
            "kv_heads": list(lm.sig.layer_heads) if lm.sig.has_cache else None,
            "kv_cache": lm.sig.has_cache,
            "vocab_size": vocab,
        },
        "latency": {
            "latency_source": "measured",
            "prefill_ms_p50": v.prefill_ms_p50,
            "prefill_ms_p90": v.prefill_ms_p90,
            "decode_ms_p50": v.decode_ms_p50,
            "decode_ms_p90": v.decode_ms_p90,
            "decode_tokens_per_s": v.decode_tokens_per_s,
            "decode": v.decode,
            **spec.model_dump(include={"prompt_len", "decode_context", "repeats", "threads"}),
        },
        "machine": report.machine,
    }
    if loss:
        out["loss"] = _loss(lm, vocab, study, tokenizer, max_tokens, max_context)
    return out


def _loss(
    lm, vocab: int, study: Path | None, tokenizer: str | None, max_tokens: int | None, max_context: int | None = None
) -> dict:
    st, path = load_study(study)
    tok, described = resolve_tokenizer(lm.path, tokenizer)
    if tok is None and vocab < 256:
        raise UserError(f"byte ids need >= 256 logits; this model has {vocab}: give --tokenizer DIR", file=lm.path)
    corpus = load_corpus(st.corpus, path.parent)
    split, ends = tokenize_split(corpus["validation"], tok, vocab)
    e = st.evaluation
    if max_context and e.context_length > max_context:  # windows no longer than the model's position table
        e = e.model_copy(update={"context_length": max_context, "stride": min(e.stride, max_context)})
    tc = TokenizedCorpus(corpus, {"validation": ends}, described)
    # the study's segments, in text bytes; --max-tokens: the first tokens instead
    spans = None if max_tokens else eval_spans(split, e.max_bytes, e.segments, e.sampling, ends)
    res = score(lm.logits, split, e.context_length, e.stride, max_tokens or 0, e.batch_size, spans)
    res = to_bits_per_byte(res, tc, "validation")
    return {
        **{k: getattr(res, k) for k in ("bits_per_byte", "se_bpb", "nats_per_token", "tokens", "bytes")},
        "split": "validation",
        "split_sha256": corpus["validation"].sha256,
        "tokenizer": described,
        "study": str(path),
        "context_length": e.context_length,
        "stride": e.stride,
    }


class OnnxFileBackend:
    """An existing ONNX causal LM as a chain's source: ONNX-stage steps only, nothing cached or trained."""

    name = "onnx"
    takes = "onnx"
    corpus = None

    def __init__(self, calibration=None) -> None:
        self.calibration = calibration  # the train split in the model's tokens, for steps that calibrate

    def implementation(self, step):
        if step.definition.takes == "torch":  # refused before any work (check_onnx_stage); kept as a guard
            raise UserError(f"{step.op} needs the model in torch; an ONNX file takes ONNX-stage steps only")
        return step.definition.implementation()

    def step_input(self, sha256: str) -> str:
        return sha256

    @contextlib.contextmanager
    def running_step(self) -> Iterator[None]:
        yield

    def load(self, path: Path):
        raise UserError("an ONNX file has no torch model to load", file=path)

    def save(self, model, path: Path, meta: dict) -> Path:
        raise UserError("an ONNX file has no torch model to save", file=path)


def _onnx_stage(chain):
    """The recipe's ONNX-stage steps, or a UserError naming its torch-stage steps (or saying there is none)."""
    torch_steps = [s.op for s in chain.steps if s.definition.takes == "torch" and s.op != EXPORT_OP]
    if torch_steps:
        raise UserError(
            f"recipe {chain.name} has torch-stage steps ({', '.join(torch_steps)}), which need the model in "
            "torch; quantize applies ONNX-stage steps only (quantize.*, optimize.*)",
            field="--recipe",
        )
    steps = tuple(s for s in chain.steps if s.definition.takes == "onnx")
    if not steps:
        raise UserError(f"recipe {chain.name} has no ONNX-stage steps: nothing to apply", field="--recipe")
    return replace(chain, steps=steps)


def quantize(
    model: Path, recipe: str, out: Path | None = None, study: Path | None = None, tokenizer: str | None = None
) -> tuple[Path, list[dict]]:
    """Apply a recipe's ONNX-stage steps to ``model``; returns (output path, each step's metrics)."""
    lm = check_causal_lm(model)
    chain = _onnx_stage(load_recipe(recipe, Path.cwd()))
    calibration = None
    if any(needs_calibration(s) for s in chain.steps):
        calibration = _train_tokens(lm, study, tokenizer)
    out = Path(out) if out else Path(model).with_name(f"{Path(model).stem}.{chain.name}.onnx")
    with tempfile.TemporaryDirectory(prefix="edgescale-quantize-") as tmp:
        start = ChainStart(str(Path(model).resolve()), file_sha256(model))
        run = run_chain(OnnxFileBackend(calibration), chain, start, ScratchStore(Path(tmp)), Reporter(quiet=True), "")
        current = Path(run.artifact)
        check_causal_lm(current)  # the result still loads and keeps the signature
        with atomic_path(out) as dst:
            shutil.copyfile(current, dst)
    return out, [{"op": st["op"], "metrics": st["metrics"]} for st in run.steps]


def _train_tokens(lm, study: Path | None, tokenizer: str | None):
    """The study's train split in the model's tokens: calibration data for int8_static / GPTQ."""
    st, path = load_study(study)
    tok, _ = resolve_tokenizer(lm.path, tokenizer)
    split, _ = tokenize_split(load_corpus(st.corpus, path.parent)["train"], tok, _vocab(lm))
    return split.tokens.astype("int64")
