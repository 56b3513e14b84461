"""The recipe schema: a recipe's steps and the target its artifact is built for (pydantic, ``extra="forbid"``).

Split out of :mod:`edgescale.config` (over ~400 lines), which re-exports every name, so
``from edgescale.config import Recipe`` keeps working. Compiling a recipe into a chain is
:mod:`edgescale.compress.recipe`'s job.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgescale.config_models import Name, Strict


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


# CPU features a recipe target may name (the names device profiles use): what ``auto`` quantization settings read.
IsaFeature = Literal[
    "neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"
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
    isa: list[IsaFeature] | None = Field(
        None,
        min_length=1,
        description="CPU features the artifact is built for: `auto` quantization settings resolve for them "
        "(unset: the device's, else this host's)",
    )
    device: str | None = Field(
        None, description="a device profile whose cpu.isa `auto` quantization settings resolve for (unset: this host)"
    )

    @model_validator(mode="after")
    def _one_isa_source(self) -> RecipeTarget:
        if self.isa is not None and self.device is not None:
            raise ValueError("give target.isa or target.device, not both (both name the CPU `auto` resolves for)")
        return self


class Recipe(Strict):
    schema_version: Literal[1] = 1
    name: Name = Field(description="recipe name, used in variant ids")
    description: str = Field("", description="what the recipe does and why")
    target: RecipeTarget = Field(
        default_factory=RecipeTarget, description="runtime and execution provider the recipe targets"
    )
    steps: list[StepSpec] = Field(default_factory=list, description="ordered steps")
