"""The typed, versioned schema of ``results.json``.

One model per section: the variants (loss, cost, latency measured on the host or predicted
for a device, the shape they ship with), the ladder sizes, the evaluation protocol, the
measurement settings, the scaling fit and the derived analysis (:class:`~edgescale.results.analysis_schema.Analysis`:
frontiers, degradation laws, picks, compare, routes). Sections written by edgescale itself
forbid unknown keys, so a typo'd key fails validation instead of reading as missing.

Key order and presence follow the written file: :func:`edgescale.results.io.dump` writes only
the fields that were set, so reading and writing a file gives the same bytes.

Version history: 1 (or no ``schema_version``) used ``target_bpb`` for the loss target,
``cost.flops_context`` next to ``cost.decode_context`` and ``d_model`` for the planned width;
2 names them ``loss_target_bpb``, ``decode_context`` and ``n_embd`` (:mod:`edgescale.results.migrate`).
``failed_variants`` (optional, version 2) was added compatibly: files without it read as before.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgescale.results.analysis_schema import Analysis
from edgescale.results.base import PlanForTarget as PlanForTarget
from edgescale.results.base import Speedup, Strict
from edgescale.results.fit_schema import Distillation as Distillation
from edgescale.results.fit_schema import DistillationDelta as DistillationDelta
from edgescale.results.fit_schema import DistillationPair as DistillationPair
from edgescale.results.fit_schema import FallsWithSize as FallsWithSize
from edgescale.results.fit_schema import Law as Law
from edgescale.results.fit_schema import Scaling as Scaling
from edgescale.results.fit_schema import ScalingPoint as ScalingPoint
from edgescale.results.profile_schema import DecodeLimit, HostProfile
from edgescale.results.protocol_schema import AAControl as AAControl
from edgescale.results.protocol_schema import MachineLoad as MachineLoad
from edgescale.results.protocol_schema import Measurement as Measurement
from edgescale.results.protocol_schema import Protocol as Protocol
from edgescale.results.protocol_schema import Resources as Resources
from edgescale.results.protocol_schema import SampledSplit as SampledSplit
from edgescale.results.protocol_schema import Sampling as Sampling

SCHEMA_VERSION = 2


class CausalLeak(Strict):
    """What later tokens in a window do to a graph's loss through dynamic activation scales
    (:class:`edgescale.bench.leak.LeakResult`): windowed minus strictly causal NLL at sampled positions."""

    positions: int
    seed: int
    bytes: int
    windowed_nats_per_token: float
    causal_nats_per_token: float
    windowed_bits_per_byte: float
    causal_bits_per_byte: float
    leak_nats_per_token: float = Field(description="windowed - causal; negative: the reported loss is too low")
    leak_nats_ci95: list[float]
    leak_bits_per_byte: float
    leak_bits_per_byte_ci95: list[float]
    max_abs_logit_diff: float
    significant: bool = Field(description="the 95% interval excludes 0")
    flagged: bool = Field(description="significant and more than 1% of the causal loss")


class LossSplit(Strict):
    bits_per_byte: float = Field(description="held-out loss in bits per byte of text")
    nats_per_token: float | None = Field(None, description="the same loss in nats per token")
    tokens: int | None = Field(None, description="tokens scored")
    bytes: int | None = Field(None, description="text bytes those tokens cover (the same span for every candidate)")
    context_bytes: float | None = Field(None, description="text bytes one evaluation window spans, on average")
    causal_leak: CausalLeak | None = Field(None, description="graphs with dynamic activation scales only")
    se_bpb: float | None = Field(None, description="standard error of bits_per_byte, clustered by scoring window")
    nll_file: str | None = Field(
        None, description="per-window NLL sidecar (.npz, relative to the run directory; edgescale.results.nll)"
    )


class Cost(Strict):
    weight_bytes: int | float = Field(description="weight bytes one decode step streams")
    kv_bytes_per_token: int | None = Field(None, description="fp32 KV-cache bytes per token of context")
    decode_context: int = Field(description="the context a decode step is costed at")
    kv_bytes_at_context: int | float = Field(description="KV-cache bytes at decode_context")
    bytes_per_decoded_token: int | float = Field(description="weights + KV at decode_context")
    flops_per_token: float = Field(description="FLOPs per decoded token (attention at decode_context)")
    kv_precision: str | None = Field(None, description="element type of the KV cache")
    peak_memory_bytes: int | float | None = Field(None, description="estimated batch-1 session memory")
    peak_memory_source: str | None = Field(None, description="how peak_memory_bytes was estimated")


_SPEEDUP_KEY = re.compile(r"^(prefill|decode)_speedup_vs_[\w.-]+$")


class HostLatency(BaseModel):
    """Latency measured on this machine; ``{prefill,decode}_speedup_vs_<recipe>`` against the baseline."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["measured"] | None = None
    latency_source: Literal["measured"]
    prefill_ms_p50: float | None = None
    prefill_ms_p90: float | None = None
    decode_ms_p50: float | None = None
    decode_ms_p90: float | None = None
    decode: str | None = None
    kv_buffer: Literal["shared", "concat"] | None = Field(
        None,
        description="how the timed decode step bound the KV cache: shared (past and present one preallocated "
        "buffer, written in place; graphs whose attention reads the past length from the mask) or concat",
    )
    prompt_len: int | None = None
    decode_context: int | None = None
    threads: int | None = None
    processes: int | None = Field(None, description="worker processes the samples came from")
    decode_ms_p50_by_process: list[float] | None = Field(None, description="the decode p50 of each worker process")
    prefill_ms_p50_by_process: list[float] | None = None
    noise_floor: dict[Literal["prefill", "decode"], float] | None = Field(
        None, description="the measurement's A/A noise floor (measurement.aa), beside the numbers it judges"
    )
    profile: HostProfile | None = Field(None, description="where one prefill and one decode step spend their time")
    decode_limit: DecodeLimit | None = Field(None, description="the decode step's bytes against the bandwidth limit")

    @model_validator(mode="after")
    def _only_speedups(self) -> HostLatency:
        extra = self.__pydantic_extra__ or {}
        for key, value in extra.items():
            if not _SPEEDUP_KEY.match(key):
                raise ValueError(f"unknown host latency field {key!r}")
            extra[key] = Speedup.model_validate(value)  # typed once, here: readers get Speedup objects
        return self

    def speedup(self, phase: str, baseline: str) -> Speedup | None:
        """The ``{phase}_speedup_vs_{baseline}`` interval, None where it was not measured."""
        return (self.__pydantic_extra__ or {}).get(f"{phase}_speedup_vs_{baseline}")

    def speedups(self, phase: str) -> dict[str, Speedup]:
        """Baseline recipe → this phase's speed-up against it (at most one in a run's results)."""
        prefix = f"{phase}_speedup_vs_"
        return {k.removeprefix(prefix): v for k, v in (self.__pydantic_extra__ or {}).items() if k.startswith(prefix)}


class PredictedLatency(Strict):
    """Latency predicted for a device profile (:func:`edgescale.bench.graph_predict.predict_on_device`)."""

    kind: Literal["predicted"] | None = None
    latency_source: Literal["predicted"]
    model: str | None = None
    decode_ms: float
    decode_ms_low: float | None = None
    decode_ms_high: float | None = None
    interval: str | None = None
    anchors: int | None = Field(None, description="published anchors on the device (calibration + validation)")
    nearest_anchor: str | None = Field(None, description="the nearest anchor: model, Δ decades of params, Δ bits")
    extrapolated: bool | None = Field(None, description="outside every anchor's params or bits range, or no anchors")
    prefill_ms: float | None = None
    prefill_ms_low: float | None = None
    prefill_ms_high: float | None = None
    decode_tokens_per_s: float | None = None
    energy_mj_per_token: float | None = None
    energy_note: str | None = None
    components_ms: dict[str, float] | None = None
    decode_context: int | None = None
    prompt_len: int | None = None
    assumed: list[str] | None = None


Latency = HostLatency | PredictedLatency


class Step(Strict):
    op: str
    metrics: dict[str, Any] = Field(default_factory=dict, description="what the step reported")


class Shape(Strict):
    n_layer: int | None
    n_head: int | None
    n_embd: int | None
    model: str = Field(description="gpt, or the factory of a user's module")
    layer_heads: list[int] | None = None
    layer_ffn: list[int] | None = None
    config: dict[str, Any] | None = Field(None, description="a Hugging Face model's config")


class Finding(Strict):
    """A feasibility finding (:class:`edgescale.compress.feasibility.Finding`)."""

    level: Literal["warn", "refuse"]
    device: str
    check: str
    step: str
    reason: str


class ScratchTwin(Strict):
    """A structurally pruned variant's shape trained from scratch on the same tokens."""

    size: str
    shape: dict[str, Any] | None = None
    train_tokens: int
    onnx_path: str | None = None
    onnx_sha256: str | None = None
    loss: dict[str, LossSplit]

    def bpb(self, split: str = "validation") -> float | None:
        s = self.loss.get(split)
        return None if s is None else s.bits_per_byte

    def se(self, split: str = "validation") -> float | None:
        """The standard error of :meth:`bpb`; None where it was not recorded (older runs)."""
        s = self.loss.get(split)
        return None if s is None else s.se_bpb


class Variant(Strict):
    variant_id: str
    size: str
    recipe: str
    onnx_path: str
    onnx_sha256: str
    file_bytes: int
    shape: Shape | None = None
    params_non_embedding: int
    params_total: int
    train_tokens: int
    steps: list[Step] = Field(default_factory=list)
    feasibility: list[Finding] = Field(default_factory=list)
    scratch_twin: ScratchTwin | None = None
    loss: dict[str, LossSplit]
    cost: Cost
    latency: dict[str, HostLatency | PredictedLatency] = Field(default_factory=dict)
    causality: dict[str, float | None] | None = None
    tokenizer: str | None = Field(None, description="the tokens this variant's loss was scored in")
    resources: dict[str, Resources] | None = Field(
        None, description="per stage (source, each step's op, loss:<split>): wall time and peak RSS"
    )
    flags: list[str] = Field(default_factory=list)
    on_frontier: bool | None = None

    def bpb(self, split: str = "validation") -> float | None:
        """Bits per byte on ``split``; None where the split was not scored."""
        s = self.loss.get(split)
        return None if s is None else s.bits_per_byte

    def se(self, split: str = "validation") -> float | None:
        """The standard error of :meth:`bpb`; None where it was not recorded (older runs)."""
        s = self.loss.get(split)
        return None if s is None else s.se_bpb


class FailedVariant(Strict):
    """A variant that failed a check or a step (edgescale.pipeline.is_variant_failure): kept out of
    latency, the frontiers, picks, compare, degradation and routes; the next run retries it."""

    variant_id: str
    size: str
    recipe: str
    status: Literal["failed"] = "failed"
    failed_stage: str = Field(description="the chain step's op, scratch twin, loss or measure")
    error_type: str = Field(description="the exception's type, e.g. CausalityError, NumericsError, RuntimeError")
    reason: str = Field(description="the exception's message")


class GridLoss(Strict):
    """One model of a degradation-grid point, scored on validation by the variants' scorer."""

    bits_per_byte: float
    se_bpb: float | None = Field(None, description="standard error, clustered by scoring window")
    nll_file: str | None = Field(None, description="per-window NLL sidecar (relative to the run directory)")
    artifact: str | None = Field(None, description="the scored ONNX file (relative to the run directory)")


class DegradationGridPoint(Strict):
    """δ = recipe − baseline on validation at one cooled branch of one seed of a ladder size
    (edgescale.degradation_grid); a failed point keeps its stage and reason, and no δ."""

    size: str
    seed: int
    tokens: int = Field(description="the branch's pre-training tokens (D)")
    fraction: float = Field(description="share of the size's token budget (1.0: the run's final model)")
    params_total: int
    recipe: str
    baseline: str
    base: GridLoss | None = None
    variant: GridLoss | None = None
    delta_bpb: float | None = Field(None, description="variant − base, validation bits per byte")
    se_bpb: float | None = Field(None, description="standard error of delta_bpb (paired over windows if se_paired)")
    se_paired: bool | None = None
    within_noise: bool | None = Field(None, description="|δ| < 1.96·se_bpb")
    reused: bool = Field(False, description="the exported run's final model: the variants' own losses")
    status: Literal["ok", "failed"] = "ok"
    failed_stage: str | None = Field(None, description="branch, the chain step's op, or loss")
    error_type: str | None = None
    reason: str | None = None


class CurvePoint(Strict):
    step: int | None = None
    tokens: int
    lr: float | None = None
    train_bpb: float | None = Field(None, description="training cross-entropy in bits (also for a KD run)")
    train_objective: float | None = Field(None, description="a KD run's training objective, in bits")
    val_bpb: float
    cooled: bool = False
    in_fit: bool | None = Field(
        None, description="a point of the scaling fit (cooled, scored on cooled_eval_tokens); periodic points are not"
    )
    eval_tokens: int | None = Field(None, description="validation tokens scored for val_bpb (spread over its works)")
    warmup_steps: int | None = None
    cooldown_steps: int | None = Field(None, description="decay steps of this branch (WSD), 0 for a periodic point")


class TrainHparams(Strict):
    """The optimisation settings one size trained with (:func:`edgescale.train.trainer.hparams`)."""

    lr_rule: str
    lr_source: str
    peak_lr_hidden: float
    peak_lr_embedding: float
    beta2: float
    batch_size: int = Field(description="sequences per optimizer step")
    warmup_steps: int


class SeedRun(Strict):
    """Another seed of a ladder size: its curve (cooled points enter the fit as a run of their own)."""

    seed: int
    train_tokens: int
    train_seconds: float | None = None
    curve: list[CurvePoint] = Field(default_factory=list)


class Size(Strict):
    size: str
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    model: str | None = None
    layer_heads: list[int] | None = None
    layer_ffn: list[int] | None = None
    params_non_embedding: int | None = None
    params_total: int
    train_tokens: int
    tokens_rule: str | None = None
    train_seconds: float | None = None
    curve: list[CurvePoint] = Field(default_factory=list)
    val_bpb_at_equal_tokens: float | None = None
    distilled_from: str | None = None
    equal_tokens: int | None = None
    seed: int | None = Field(None, description="the seed of the run above (the exported one)")
    hparams: TrainHparams | None = None
    seed_runs: list[SeedRun] = Field(default_factory=list, description="training.seeds > 1: the other seeds")


class Results(Strict):
    """A finished run's ``results.json``."""

    study: str
    schema_version: Literal[2] = SCHEMA_VERSION
    loss_target_bpb: float | None = None
    protocol: Protocol
    measurement: Measurement
    machine: dict[str, Any] = Field(default_factory=dict, description="the host that measured")
    sizes: list[Size]
    variants: list[Variant]
    loss_falls_with_size: FallsWithSize | None = None
    scaling: Scaling
    distillation: Distillation | None = None
    failed_variants: list[FailedVariant] = Field(
        default_factory=list, description="variants with no results, and why (written only when there are any)"
    )
    degradation_grid: list[DegradationGridPoint] | None = Field(
        None, description="each recipe's δ at every cooled branch and seed of the ladder sizes (optional)"
    )
    analysis: Analysis | None = Field(
        None, description="frontiers, degradation, picks, compare, routes (edgescale.report.analysis.analyse)"
    )

    def devices(self) -> list[str]:
        """Every device some variant has latency for, in first-seen order."""
        return list(dict.fromkeys(d for v in self.variants for d in v.latency))
