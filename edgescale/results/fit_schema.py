"""The run's study-level answers in ``results.json``: the scaling fit (the law, its points, the
plan) and distillation's KD-versus-scratch pairs with their seed intervals. Split from
:mod:`edgescale.results.schema`, which re-exports every class here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgescale.results.base import Number, PlanForTarget, Strict


class FallsWithSize(Strict):
    at_own_budget: bool | None
    at_equal_tokens: bool | None
    equal_tokens: int


class ScalingPoint(Strict):
    size: str
    N: int | float
    D: int | float
    bits_per_byte: float


class Law(Strict):
    """The fitted L(N, D) = E + A/N^α + B/D^β in bits per byte (``Fit.to_dict`` with E, A, B and their
    intervals converted from nats); fields in the order :func:`edgescale.scaling.study.fit_study` writes them."""

    law: str | None = None
    E: Number
    A: Number
    B: Number
    alpha: Number
    beta: Number
    a: Number | None = None
    b: Number | None = None
    ci: dict[str, list[Number | None]] = Field(default_factory=dict, description="95% interval per constant")
    n_points: int | None = None
    objective: Number | None = None  # the Huber objective at the optimum
    rmse_log: Number | None = None
    r2_log: Number | None = None
    unidentified: dict[str, str] = Field(default_factory=dict, description="constant → why the fit cannot pin it")
    warnings: list[str] = Field(default_factory=list)
    n_convention: str | None = None
    boot_n: int | None = None  # bootstrap refits drawn
    boot_dropped: int | None = None  # of them, left out of the intervals (blown up, or N or D constant)
    boot_unit: str | None = None  # what was resampled: "point", or "run" (whole trajectories, a cluster bootstrap)
    form: str | None = Field(
        None, description="the law fitted, e.g. 'L = E + A/N^α + B/D^β, α = β, E ≤ min observed loss'"
    )
    unit: str | None = None


class Scaling(Strict):
    """The law fitted to the ladder's cooled checkpoints (:func:`edgescale.scaling.study.fit_study`)."""

    points: list[ScalingPoint] = Field(default_factory=list)
    n_convention: str | None = None
    unit: str | None = None
    status: Literal["fitted", "not_fitted"]
    reason: str | None = None
    law: Law | None = None
    bootstrap: dict[str, Any] | None = None
    reduced: Law | None = Field(
        None, description="the reduced form refitted when the full form is not identified (edgescale.scaling.identify)"
    )
    train_tokens_available: int | None = Field(
        None, description="unique training tokens (the train split): plans are capped by them under an epoch rule"
    )
    plan_for_target: PlanForTarget | None = None


class DistillationDelta(Strict):
    """distilled − scratch in bits per byte over seeds (negative: distillation helps)."""

    twin: Literal["equal_tokens", "equal_compute"]
    split: str
    mean: float
    lo: float | None = Field(description="95% Welch interval: mean − t·SE (None with one seed a side)")
    hi: float | None
    se: float | None
    df: float | None
    n_distilled: int
    n_scratch: int


class DistillationPair(Strict):
    student: str
    scratch: str
    teacher: str
    tokens: int
    val_bpb_distilled: float = Field(description="the exported seed-0 variant, through onnxruntime")
    val_bpb_scratch: float
    test_bpb_distilled: float
    test_bpb_scratch: float
    seeds: list[int] | None = Field(None, description="the seeds of every arm below")
    scorer: str | None = Field(None, description="how the seed losses below were scored")
    equal_compute_tokens: int | None = Field(None, description="the equal-compute scratch twin's tokens")
    equal_compute_note: str | None = Field(None, description="set when max_epochs capped the equal-compute twin")
    seed_bpb: dict[str, dict[str, list[float]]] | None = Field(
        None, description="arm (distilled, equal_tokens, equal_compute) -> split -> bits per byte per seed"
    )
    deltas: list[DistillationDelta] = Field(default_factory=list)


class Distillation(Strict):
    alpha: float
    temperature: float
    teacher: str
    teacher_val_bpb: float
    pairs: list[DistillationPair]
