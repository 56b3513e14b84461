"""What fails one variant and not the study (split out of :mod:`edgescale.pipeline`, which
re-exports every name here): which exceptions count, the record a failure leaves in
``results.json``, and :func:`attempt`, which runs one stage of one variant under that rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgescale.chain import StepFailed
from edgescale.errors import EnvironmentFailure, UserError
from edgescale.results.schema import FailedVariant

T = TypeVar("T")


class NumericsError(Exception):
    """A variant's numbers are not numbers: a non-finite held-out loss (NaN or inf logits)."""


# What fails one variant and not the study: the guard (CausalityError) or a step refusing
# this model (UserError), numerics, and runtime failures of torch (RuntimeError), of the
# latency worker (MeasurementError) and of onnxruntime (its own classes, matched by module
# below). Anything else (TypeError, KeyError, ...) is a bug in edgescale and stops the run
# with its traceback; BaseException (KeyboardInterrupt, SystemExit) and MemoryError too.
VARIANT_FAILURES: tuple[type[Exception], ...] = (UserError, RuntimeError, FloatingPointError, NumericsError)


def is_variant_failure(e: BaseException) -> bool:
    """True for an exception that fails only the variant it came from (see VARIANT_FAILURES)."""
    ort = type(e).__module__.startswith("onnxruntime.")  # onnxruntime's pybind errors derive from Exception only
    machine = isinstance(e, MemoryError | EnvironmentFailure)  # a full disk, a link out: every variant's, the run's
    return isinstance(e, Exception) and not machine and (isinstance(e, VARIANT_FAILURES) or ort)


@dataclass(frozen=True)
class VariantFailure:
    """Why one variant has no results: the stage (a chain step's op, ``loss`` or ``measure``),
    the exception's type and its message."""

    variant_id: str
    stage: str
    error_type: str
    reason: str

    @classmethod
    def of(cls, vid: str, stage: str, e: Exception) -> VariantFailure:
        if isinstance(e, StepFailed):
            stage, e = e.op, e.cause
        return cls(vid, stage, type(e).__name__, str(e).strip() or type(e).__name__)

    def message(self) -> str:
        return f"{self.variant_id} failed at {self.stage} ({self.error_type}): {self.reason}; left out of the analysis"

    def record(self) -> FailedVariant:
        """Its entry in ``results.json``'s ``failed_variants``."""
        size, recipe = self.variant_id.split("/")
        return FailedVariant(
            variant_id=self.variant_id,
            size=size,
            recipe=recipe,
            status="failed",
            failed_stage=self.stage,
            error_type=self.error_type,
            reason=self.reason,
        )


def attempt(vid: str, stage: str, fn: Callable[..., T], *args: Any) -> T | VariantFailure:
    """``fn(*args)``, or the :class:`VariantFailure` it raised (see :func:`is_variant_failure`;
    any other exception propagates). Nothing is cached for a failure: a rerun retries it."""
    try:
        return fn(*args)
    except Exception as e:
        cause = e.cause if isinstance(e, StepFailed) else e
        if is_variant_failure(cause):
            return VariantFailure.of(vid, stage, e)
        if cause is e:
            raise
        raise cause from None  # a bug in a step: its own traceback, not a flag
