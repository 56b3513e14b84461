"""Pieces of the ``results.json`` schema that both the measured sections (:mod:`.schema`) and the
derived analysis (:mod:`.analysis_schema`) use: the strict base model, the number type that
round-trips, a speed-up interval and a training plan; and :func:`clean`, which makes computed
data strict JSON before it is typed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

Number = int | float  # as written: an int stays an int, so a file reads and writes back byte for byte


def clean(x: Any) -> Any:
    """``x`` with tuples as lists, numpy scalars as Python numbers and NaN/inf as None (typed
    models pass through as they are: they were cleaned when they were built)."""
    if isinstance(x, Mapping):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):  # numpy scalar
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class Strict(BaseModel):
    """Unknown keys fail (a typo'd key must not read as missing); values are not reassigned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def data(self) -> dict[str, Any]:
        """The plain JSON data, exactly as written (fields that were never set left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class Speedup(Strict):
    """A paired-bootstrap speed-up (baseline / variant) with its 95% interval."""

    speedup: float
    low: float
    high: float
    within_noise: bool
    slower: bool


class PlannedShape(Strict):
    n_layer: int
    n_embd: int
    n_head: int
    params_non_embedding: int | None = None
    params_total: int | None = None


class PlanForTarget(Strict):
    """A planned model (``edgescale.scaling.plan.Plan.to_dict``), in the order written: the
    cheapest model reaching the study's target in ``scaling.plan_for_target`` (with the bpb
    fields :func:`edgescale.scaling.study.fit_study` adds) and the plan of a pick's option."""

    status: str
    objective: str | None = None
    law: str | None = None
    n_params: Number | None = None
    n_tokens: Number | None = None
    compute_flops: Number | None = None
    predicted_loss: Number | None = None
    tokens_per_param: Number | None = None
    shape: PlannedShape | None = None
    cost: dict[str, Any] | None = None
    inference_tokens: Number | None = None
    lifetime_flops: Number | None = None
    checks: dict[str, Any] | None = None
    reason: str | None = None
    notes: list[str] | None = None
    predicted_loss_bpb: Number | None = None
    reliable: bool | None = None
    caveat: str | None = None
    loss_target_bpb: Number | None = None
    unidentified: list[str] | None = None  # status "unidentified": the constants the data cannot pin
    identify_with: dict[str, Any] | None = None  # status "unidentified": the sizes and token budgets to add
    form: str | None = None  # the law's form (a reduced one says so)
    unique_tokens: Number | None = None  # the training data that exists; None: unknown, D uncapped
    epochs: Number | None = None  # D / unique_tokens
    effective_tokens: Number | None = None  # D' under data_rule (repeats discounted)
    unique_tokens_needed: Number | None = None  # status "data_limited": unique tokens for D within 4 epochs
    data_rule: str | None = None  # the epoch rule, with its source
