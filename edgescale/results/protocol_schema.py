"""How a run's numbers were taken: the evaluation protocol (splits, windows, sampling) and the
timing measurement (its A/A control and the machine's load). Split out of
:mod:`edgescale.results.schema`, which re-exports every class here, so every import stays."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgescale.results.base import Speedup, Strict


class Resources(Strict):
    """Wall time and peak RSS of one stage (:mod:`edgescale.resources`), as the run that did the work measured them."""

    wall_s: float
    peak_rss_bytes: int | None = None
    peak_rss_scope: Literal["stage", "process"] = Field("stage", description="stage: reset at its start")


class SampledSplit(Strict):
    """Which text of one split a loss scores (in bytes: every candidate scores the same)."""

    segments: int = Field(description="byte segments scored")
    bytes: int = Field(description="text bytes scored, all segments together (a byte-level model's targets)")
    works: list[str] = Field(description="the works of the split a segment reads from")


class Sampling(Strict):
    """How evaluation text is chosen (edgescale.data.corpus.eval_segments)."""

    scheme: str = Field(description="'spread': segments over every work in proportion to size; 'head': first bytes")
    segments: int | None = Field(None, description="spread: segments asked for per split (at least one per work)")
    splits: dict[str, SampledSplit] = Field(default_factory=dict)


class Protocol(Strict):
    split: str | None = None
    final_split: str | None = None
    context_length: int = Field(description="the evaluation window (each model's own tokens)")
    stride: int
    max_tokens: int | None = Field(None, description="before max_bytes: the cap in tokens (bytes, for byte tokens)")
    max_bytes: int | None = Field(None, description="text bytes scored per split, the same span for every candidate")
    batch_size: int | None = None
    split_sha256: str
    test_split_sha256: str | None = None
    unit: str
    tokenizer: str | None = Field(None, description="the tokens every loss was scored in; None when candidates differ")
    runtime: str | None = None
    sampling: Sampling | None = Field(None, description="which text is scored; None in runs before it was recorded")

    @model_validator(mode="after")
    def _cap_in_bytes(self) -> Protocol:
        """A run capped in tokens of bytes capped the same text bytes (its max_tokens); any other
        tokenizer's token cap covers an unknown byte span (max_bytes stays None: not comparable)."""
        if self.max_bytes is None and self.max_tokens is not None and self.tokenizer in (None, "bytes"):
            object.__setattr__(self, "max_bytes", self.max_tokens)
        return self


class AAControl(Strict):
    """The A/A control: the baseline against a second session of its own file, timed interleaved
    with the variants. What "no difference" measures as on this machine."""

    variant: str = Field(description="the variant whose file was timed twice")
    prefill: Speedup
    decode: Speedup
    noise_floor: dict[Literal["prefill", "decode"], float] = Field(
        description="phase → a speed-up whose interval reaches into [1/(1 + floor), 1 + floor] is a tie: "
        "the A/A interval's bound farthest from 1, as a relative departure"
    )


class MachineLoad(Strict):
    """Runnable tasks beside the worker, counted during the measurement (:func:`edgescale.bench.load.machine_load`),
    and the 1-minute load averages around it as context (they lag by a minute)."""

    other_runnable_mean: float | None = Field(
        None, description="mean runnable tasks beside the worker and the sampler during the measurement"
    )
    other_runnable_max: int | None = None
    runnable_samples: int | None = Field(None, description="counts taken (absent: judged from load averages)")
    load_avg_1min_start: float
    load_avg_1min_end: float
    own_share_end: float = Field(description="the worker's own upper-bound share of the end reading")
    limit: float = Field(
        description="logical_cpus - threads + 0.5: loaded when other_runnable_mean exceeds it (the cores "
        "the worker leaves free, and half a task for a daemon waking)"
    )
    logical_cpus: int
    threads: int
    wall_s: float


class Measurement(Strict):
    prompt_len: int
    decode_context: int
    repeats: int | None = None
    warmup: int | None = None
    threads: int | None = None
    ort_version: str | None = None
    resources: Resources | None = Field(None, description="the interleaved measurement of every variant")
    aa: AAControl | None = Field(None, description="the A/A control (absent: measured without one)")
    loaded: bool | None = Field(
        None,
        description="other work competed for the worker's cores: runnable tasks beside it, counted during the "
        "measurement, above load.limit (None: could not be counted; older files: judged from load averages)",
    )
    load: MachineLoad | None = None
    processes: int | None = Field(
        None, description="worker processes the repeats were split over; intervals are two-level over them"
    )
