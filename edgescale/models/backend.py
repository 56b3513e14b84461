"""The model backend protocol: what the pipeline and the chain runner ask of one kind of model.

A candidate that enters compression is one of four kinds: edgescale's GPT family, a
user's module behind the adapter, a Hugging Face folder, or an existing ONNX file. Each
kind is one backend (:mod:`edgescale.backends` for the first two and the ONNX file,
:mod:`edgescale.hf.backend` for Hugging Face); :func:`edgescale.backends.backend_for`
picks it once per study, and nothing above the backends asks which kind it has.

The protocol is written down here, under the code that uses it, as plain types: the
backends themselves need export, scoring and training, so they live above those layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgescale.models.shape import ModelAccounting

StepFn = Callable[[Any, Any, Any], Any]  # fn(model, cfg, ctx) -> model, as registered steps are


class ModelSpec(Protocol):
    """A model's description: what a plan carries and a checkpoint records (GPTConfig, CustomSpec, HFSpec)."""

    vocab_size: int
    block_size: int

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class SizePlan:
    """One candidate entering compression: its spec, counts and training budget."""

    name: str
    cfg: ModelSpec
    acct: ModelAccounting
    tokens: int
    capped_by: str  # which rule set the token count
    teacher: str | None = None  # set for a distilled student: the size that taught it
    batch_size: int | None = None  # set by batch_rule: critical
    shape: dict = field(default_factory=dict, kw_only=True)  # results' ``shape`` of the size
    # WSD: also take the non-final cooled branches (the fit's and the degradation grid's points, a scratch
    # twin's loss at fewer tokens); False for a run nothing reads them from (an equal-compute twin)
    cooled_branches: bool = field(default=True, kw_only=True)


@dataclass(frozen=True)
class Shipped:
    """The model a chain exports, counted after every torch-stage step (pruning) at the decode context.

    ``record()`` gives the three keys every chain record carries, whatever the backend:
    ``accounting`` (asdict of :class:`ModelAccounting`), ``widest_activation`` (int, or None
    where the module is opaque) and ``shape`` (the dict results report as the variant's shape);
    plus ``spec``, the exported shape a scratch twin would train (None: no twin).
    """

    accounting: ModelAccounting
    widest_activation: int | None
    shape: dict
    spec: dict | None = None

    def record(self) -> dict:
        return {
            "accounting": asdict(self.accounting),
            "widest_activation": self.widest_activation,
            "shape": self.shape,
            "spec": self.spec,
        }


class ModelBackend(Protocol):
    """One kind of model behind the pipeline (see the module docstring)."""

    name: str
    takes: str  # the kind a chain starts from: "torch" (a checkpoint) or "onnx" (a graph file)
    corpus: Any  # the study's corpus in the tokens this model reads (calibration, recovery, loss)
    calibration: Any  # token windows given ready-made (an ONNX file's), else None
    tokenizer: str  # the tokens its loss is scored in: "bytes", or the tokenizer's class and content hash

    def plans(self, tokens_for: Callable[[int], tuple[int, str]]) -> list[SizePlan]:
        """The candidates; ``tokens_for(N)`` is the study's training budget for N total parameters."""
        ...

    def plan(self, name: str, spec: ModelSpec, tokens: int, capped_by: str) -> SizePlan:
        """A plan for a shape this backend made (a scratch twin's)."""
        ...

    def source(self, rd, rep, plan: SizePlan, teacher: dict | None = None, seed: int | None = None) -> dict:
        """The chain's starting checkpoint as a cached run artifact (trained, or copied in); ``seed``
        (trained backends only) asks for a replicate run of the same plan."""
        ...

    def load(self, path: Path) -> Any: ...

    def save(self, model: Any, path: Path, meta: dict) -> Path: ...

    def implementation(self, step) -> StepFn:
        """The function that runs a torch-stage ``step`` (``export.onnx`` included) on this model."""
        ...

    def step_input(self, sha256: str) -> str:
        """A step's cache-key input: the artifact hash plus any context the result depends on."""
        ...

    def running_step(self) -> Iterator[None]:
        """A context manager around one step (thread settings)."""
        ...

    def account(self, checkpoint: Path, context: int) -> Shipped:
        """Counts of the model in ``checkpoint`` at ``context``."""
        ...

    def pruned_spec(self, plan: SizePlan, record: dict) -> ModelSpec | None:
        """The shape a chain shipped when it differs from the plan's (its scratch twin's), else None."""
        ...

    def score(self, path: Path, split: str, protocol, strict: bool) -> dict:
        """Held-out loss of an ONNX file on ``split`` (bits per byte), with the causality check."""
        ...
