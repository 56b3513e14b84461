"""The step registry: op name → (config model, function, kind taken, kind given).

A step is a plain function ``fn(model, cfg, ctx) -> model`` that never mutates its
input. Torch-stage steps take and give a :class:`~edgescale.models.gpt.GPT`; ONNX-stage
steps take and give the path of an ONNX file. A recipe is compiled into a
:class:`Chain` whose kinds line up, with ``export.onnx`` inserted where the chain
moves from torch to ONNX.

Example::

    class MyConfig(StepConfig):
        scale: float = Field(1.0, description="...")

    @register("quantize.mine", MyConfig, takes="onnx", gives="onnx")
    def mine(path: Path, cfg: MyConfig, ctx: StepContext) -> Path: ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgescale.errors import UserError

Kind = Literal["torch", "onnx"]
EXPORT_OP = "export.onnx"


class StepConfig(BaseModel):
    """Base of every step config: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StepContext:
    """What a step may use; nothing else is global."""

    work_dir: Path  # a fresh folder owned by this step's run
    seed: int = 0
    calibration: Any = None  # train-split token windows, for steps that calibrate
    log: Callable[[str], None] = print
    parent: Any = None  # the trained (unpruned) torch model this chain started from
    parent_tokens: int = 0  # tokens the parent was trained on
    corpus: Any = None  # the study's corpus (train split for recovery and calibration)
    # What the step reports about its result (achieved sparsity, parameter count, ...):
    # the one mutable part, owned by this step's run and stored in its cache record.
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepDef:
    op: str
    config: type[StepConfig]
    fn: Callable[[Any, Any, StepContext], Any]
    takes: Kind
    gives: Kind
    summary: str


REGISTRY: dict[str, StepDef] = {}


def register(op: str, config: type[StepConfig], *, takes: Kind, gives: Kind):
    def deco(fn):
        if op in REGISTRY:
            raise RuntimeError(f"step {op!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        REGISTRY[op] = StepDef(op, config, fn, takes, gives, summary)
        return fn

    return deco


def registry() -> dict[str, StepDef]:
    """All registered steps; importing the stage packages is what registers them."""
    import edgescale.compress  # noqa: F401
    import edgescale.export.steps  # noqa: F401

    return REGISTRY


@dataclass(frozen=True)
class Step:
    op: str
    config: StepConfig
    inserted: bool = False  # True for the export step the loader added

    @property
    def definition(self) -> StepDef:
        return registry()[self.op]

    def key(self, input_hash: str, version: str) -> str:
        """Lineage key: hashes (op, config, input, edgescale version), as Olive's cache does."""
        blob = json.dumps(
            {"op": self.op, "config": self.config.model_dump(mode="json"), "input": input_hash, "v": version},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Chain:
    name: str
    steps: tuple[Step, ...]
    source: str = ""
    description: str = ""
    target: Any = None  # the recipe's target (config.RecipeTarget): runtime and execution provider

    def describe(self) -> str:
        return " → ".join(s.op + (" (inserted)" if s.inserted else "") for s in self.steps)


def build_step(op: str, params: dict[str, Any], file: Path | str, where: str) -> Step:
    steps = registry()
    if op not in steps:
        raise UserError(f"unknown op {op!r}; allowed: {', '.join(sorted(steps))}", file=file, field=f"{where}.op")
    sd = steps[op]
    try:
        cfg = sd.config.model_validate(params)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field for {op}; allowed: {', '.join(sorted(sd.config.model_fields)) or '(none)'}"
        raise UserError(msg, file=file, field=f"{where}.{loc}" if loc else where) from None
    return Step(op, cfg)


def compile_chain(recipe, file: Path | str) -> Chain:
    """Validate a recipe's steps and kinds; insert ``export.onnx`` at the torch→ONNX move."""
    kind: Kind = "torch"
    out: list[Step] = []
    last_onnx: str | None = None
    for i, spec in enumerate(recipe.steps):
        step = build_step(spec.op, spec.params(), file, f"steps.{i}")
        sd = step.definition
        if sd.takes != kind:
            if kind == "torch" and sd.takes == "onnx":
                out.append(Step(EXPORT_OP, registry()[EXPORT_OP].config(), inserted=True))
                kind = "onnx"
                last_onnx = EXPORT_OP
            else:
                raise UserError(
                    f"{spec.op} is a torch-stage step but comes after the ONNX-stage step "
                    f"{last_onnx}; put torch-stage steps (prune.*, distill.*) before ONNX-stage ones",
                    file=file,
                    field=f"steps.{i}.op",
                )
        out.append(step)
        kind = sd.gives
        if kind == "onnx":
            last_onnx = spec.op
    if kind == "torch":
        out.append(Step(EXPORT_OP, registry()[EXPORT_OP].config(), inserted=True))
    chain = Chain(recipe.name, tuple(out), str(file), recipe.description, recipe.target)
    from edgescale.compress.rules import check_chain  # step orders and settings beyond kinds

    check_chain(chain, file)
    return chain
