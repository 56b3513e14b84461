"""The step registry: op name → (config model, function, kinds, facts, implementations per backend).

A step is a plain function ``fn(model, cfg, ctx) -> model`` that never mutates its
input. Torch-stage steps take and give a :class:`~edgescale.models.gpt.GPT`; ONNX-stage
steps take and give the path of an ONNX file. A recipe is compiled into a
:class:`Chain` whose kinds line up, with ``export.onnx`` inserted where the chain
moves from torch to ONNX.

Each step declares its :class:`StepFacts` where it registers: what it writes into the
graph, what it does to the weights' storage, whether it calibrates. The recipe rules
(:mod:`edgescale.compress.rules`) and the device check
(:mod:`edgescale.compress.feasibility`) read only these facts, never op names, so a
new technique is one module.

A step's registered function serves edgescale's own torch models (:data:`DEFAULT_BACKEND`)
or, for ONNX-stage steps, any ONNX file. Another model backend adds its version of a
torch-stage op with :func:`implement`; :meth:`StepDef.implementation` finds it.

Example::

    class MyConfig(StepConfig):
        scale: float = Field(1.0, description="...")

    @register("quantize.mine", MyConfig, takes="onnx", gives="onnx",
              facts=StepFacts(writes=frozenset({"com.microsoft:MatMulNBits"}), weight_bytes=0.5))
    def mine(path: Path, cfg: MyConfig, ctx: StepContext) -> Path: ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgescale.errors import UserError

Kind = Literal["torch", "onnx"]
EXPORT_OP = "export.onnx"
RECOVER_OP = "distill.recover"  # the step that retrains a compressed model (edgescale.train.recover)


class StepConfig(BaseModel):
    """Base of every step config: unknown fields are errors, values are immutable, floats finite
    (a recipe's ``.inf`` or ``.nan`` is refused at validate, not met mid-run)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    target: Any = None  # the recipe's target (config.RecipeTarget): the ISA ``auto`` settings resolve for
    # What the step reports about its result (achieved sparsity, parameter count, ...):
    # the one mutable part, owned by this step's run and stored in its cache record.
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FloatInputs:
    """The float types the ops a step writes accept, and why no other (quoted in the refusal)."""

    types: frozenset[str]
    why: str


@dataclass(frozen=True)
class StepFacts:
    """What a step does to the graph, as the recipe rules and the device check need to know it.

    A field may be a function of the step's config (``lambda cfg: ...``) where the answer
    depends on it; :meth:`of` evaluates them for one config. The defaults describe a step
    that writes no new op and keeps float32 weights (``distill.recover``, ``prune.heads``).
    """

    # Op types (``domain:Op``, bare in the default domain) the step puts in the graph whose
    # kernels an execution provider may lack: the device check looks each one up.
    writes: frozenset[str] | Callable[[Any], frozenset[str]] = frozenset()
    # Bytes per weight-MatMul parameter once stored (1 for int8, ~0.6 for int4); None when
    # the step leaves the weights' precision alone. A second weight quantizer is refused.
    weight_bytes: float | Callable[[Any], float] | None = None
    calibrates: bool | Callable[[Any], bool] = False  # fixes scales from train-split windows
    int8_activations: bool = False  # int8 activations: fast only with int8 dot-product instructions
    # The zero pattern it leaves in the weights ("unstructured", "2:4", ...): None for dense.
    sparsity: str | Callable[[Any], str] | None = None
    float_type: str | None = None  # the float type it converts storage and arithmetic to ("float16")
    float_inputs: FloatInputs | None = None  # None: its ops take any float type
    changes_shape: bool = False  # removes heads, channels or blocks: a smaller model than its input

    def of(self, cfg: Any) -> StepFacts:
        """These facts for one config: every function field evaluated."""
        return replace(self, **{f.name: v(cfg) for f in fields(self) if callable(v := getattr(self, f.name))})

    def describe(self, cfg: Any) -> dict[str, Any]:
        """The facts for ``cfg`` that differ from the defaults, as JSON values (``edgescale recipes --ops``)."""
        resolved, default = self.of(cfg), StepFacts()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(resolved, f.name)
            if value != getattr(default, f.name):
                out[f.name] = sorted(value) if isinstance(value, frozenset) else value
        if resolved.float_inputs is not None:
            out["float_inputs"] = sorted(resolved.float_inputs.types)
        return out


# The backend whose models a step's registered function takes: edgescale's own torch
# models. ONNX-stage steps take a file, so theirs serves every backend.
DEFAULT_BACKEND = "gpt"
BACKEND_LABELS = {DEFAULT_BACKEND: "edgescale's GPT models", "hf": "Hugging Face models", "custom": "your own modules"}


def backend_label(backend: str) -> str:
    return BACKEND_LABELS.get(backend, f"{backend!r} models")


@dataclass(frozen=True)
class StepDef:
    op: str
    config: type[StepConfig]
    fn: Callable[[Any, Any, StepContext], Any]  # the implementation for DEFAULT_BACKEND (or any ONNX file)
    takes: Kind
    gives: Kind
    summary: str
    facts: StepFacts
    others: Mapping[str, Callable[[Any, Any, StepContext], Any]] = field(default_factory=dict)  # backend -> fn

    def backends(self) -> tuple[str, ...]:
        """The backends with an implementation, the default first."""
        return (DEFAULT_BACKEND, *sorted(self.others))

    def implementation(self, backend: str = DEFAULT_BACKEND) -> Callable[[Any, Any, StepContext], Any]:
        """This op's function for models of ``backend``; a UserError naming the backends that have one."""
        if self.takes == "onnx" or backend == DEFAULT_BACKEND:
            return self.fn
        if backend in self.others:
            return self.others[backend]
        have = ", ".join(backend_label(b) for b in self.backends())
        allowed = ", ".join(op for op, sd in sorted(REGISTRY.items()) if sd.takes == "torch" and backend in sd.others)
        raise UserError(
            f"{self.op} is not available for {backend_label(backend)} (only for {have}); torch-stage steps for "
            f"{backend_label(backend)}: {allowed or 'none'} (and every ONNX-stage step)",
            field="op",
        )


REGISTRY: dict[str, StepDef] = {}


def register(op: str, config: type[StepConfig], *, takes: Kind, gives: Kind, facts: StepFacts):
    """Register ``fn`` as the step ``op``: its config model, the kinds it takes and gives, and its facts."""

    def deco(fn):
        if op in REGISTRY:
            raise RuntimeError(f"step {op!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        REGISTRY[op] = StepDef(op, config, fn, takes, gives, summary, facts)
        return fn

    return deco


def implement(op: str, *, backend: str):
    """Register ``fn`` as the torch-stage step ``op`` (same config, same facts) for models of ``backend``.

    Example::

        @implement("prune.heads", backend="hf")
        def prune_heads_hf(model, cfg: HeadsConfig, ctx: StepContext): ...
    """

    def deco(fn):
        sd = REGISTRY.get(op)
        if sd is None:
            raise RuntimeError(f"implement({op!r}) before the step is registered: import its module first")
        if sd.takes == "onnx":
            raise RuntimeError(f"{op} is an ONNX-stage step: its one function takes a file from any backend")
        if backend in sd.backends():
            raise RuntimeError(f"step {op!r} implemented twice for backend {backend!r}")
        REGISTRY[op] = replace(sd, others={**sd.others, backend: fn})
        return fn

    return deco


def registry() -> dict[str, StepDef]:
    """The registered steps. Importing a technique module is what registers it; the registry
    never imports its registrants (they import it). :mod:`edgescale.compress.recipe`, which
    compiles recipes, imports every technique, so whoever compiles a chain sees them all."""
    return REGISTRY


@dataclass(frozen=True)
class Step:
    op: str
    config: StepConfig
    inserted: bool = False  # True for the export step the loader added

    @property
    def definition(self) -> StepDef:
        return registry()[self.op]

    @property
    def facts(self) -> StepFacts:
        """The step's declared facts for this config."""
        return self.definition.facts.of(self.config)

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
