"""The base of every study schema, the numeric bounds, and the schemas of the models a study compares:
your own module (``model:``), a local Hugging Face model (``hf_model:``), the candidates of ``models:``
and distillation's teacher and students.

Split out of :mod:`edgescale.config`, which re-exports every name here. Numbers are checked at the
door (``edgescale validate`` runs the same code as ``run``): every float finite (``allow_inf_nan=False``
on :class:`Strict`), every integer an integer (``StrictInt``: ``true``, ``"1"`` and ``1.0`` are
refused), and each count bounded where a larger value would only exhaust memory or time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]

# A vocabulary of 2^20 is four times the largest in common use (Gemma's 262,144); an output layer
# beyond it is a typo that would only allocate.
MAX_VOCAB = 1 << 20
# 10^15 tokens: well beyond any published pretraining run (Llama 3: 1.5·10^13).
MAX_TRAIN_TOKENS = 10**15

# Bounds at the door (why each is where it is): a value past them would only crash a run late,
# exhaust memory or run for years. 5e8 non-embedding parameters: days of CPU training per size,
# and the largest count the shape planner (edgescale.models.shape) fits in SizeConfig's limits.
MAX_PARAMS_NON_EMBEDDING = 5e8
MAX_TOKENS = 10**12  # a trillion training tokens: far beyond a CPU study, and int arithmetic stays exact
MAX_EVAL_TOKENS = 10**8  # every scored token costs a forward pass; a validation split is far smaller
MAX_CONTEXT = 32_768  # the largest block size any model schema allows
# Tokens in one training micro-batch (batch_size x block_size): its float32 logits alone take
# 2^20 x vocab x 4 bytes (1 GiB for bytes); more is an out-of-memory, not a study.
MAX_BATCH_TOKENS = 1 << 20


class Strict(BaseModel):
    """Unknown keys refused, values immutable, and no NaN or infinity in any float (YAML's ``.inf``
    and ``.nan`` would otherwise pass every ``gt``/``le`` bound that compares false, and crash a run)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CustomModelConfig(Strict):
    factory: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="'package.module:function' returning an nn.Module"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")
    name: Name = Field("custom", description="label of this model in variant ids")
    input: Literal["ids", "embeddings"] = Field("ids", description="token ids, or float features (embeddings added)")
    embed_dim: StrictInt | None = Field(None, ge=1, le=65_536, description="feature width when input is embeddings")
    layout: Literal["batch_first", "seq_first"] = Field("batch_first", description="(B, T, C) or (T, B, C)")
    causal: Literal["builtin", "mask_arg"] = Field("builtin", description="module masks itself, or takes a mask")
    mask_kwarg: str = Field("mask", description="name of the mask argument when causal is mask_arg")
    vocab_size: StrictInt = Field(
        ge=2, le=MAX_VOCAB, description="the module's output size (>= the corpus vocabulary; at most 2^20)"
    )
    block_size: StrictInt = Field(128, ge=8, le=4096, description="training context length (tokens)")

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
    block_size: StrictInt = Field(128, ge=8, le=32768, description="context for evaluation, measurement and recovery")
    train_tokens: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_TRAIN_TOKENS,
        description="tokens the checkpoint was trained on, if known (caps distill.recover's budget)",
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
    block_size: StrictInt = Field(128, ge=8, le=32768, description="context for evaluation, measurement and recovery")
    train_tokens: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_TRAIN_TOKENS,
        description="tokens the checkpoint was trained on, if known (scaling fit, recovery budgets)",
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
    temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature (at most 100)")
    seeds: StrictInt = Field(
        1, ge=1, le=16, description="seeds per student and per scratch twin (seed 0 is the ladder's, and is exported)"
    )
    equal_compute: StrictBool = Field(
        True, description="also train each student's equal-compute scratch twin (the KD run's FLOPs, teacher included)"
    )
